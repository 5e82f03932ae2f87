"""The numerics the model runs with: our defaults under the servable's options, batch-invariant mode over them,
and OpenVINO's refusals as one line."""
import openvino as ov
import pytest

from server.engine.errors import one_line
from server.engine.precision import BATCH_INVARIANT, runtime_options


def test_cpus_run_at_f32_unless_the_servable_says_otherwise():
    assert runtime_options("CPU", {}) == {"INFERENCE_PRECISION_HINT": "f32"}
    assert runtime_options("CPU", {"INFERENCE_PRECISION_HINT": "bf16"})["INFERENCE_PRECISION_HINT"] == "bf16"
    assert runtime_options("GPU", {"NUM_STREAMS": "1"}) == {"NUM_STREAMS": "1"}  # a GPU keeps its own default


def test_the_manifest_precision_comes_under_the_servable():
    assert runtime_options("CPU", {}, required="bf16") == {"INFERENCE_PRECISION_HINT": "bf16"}
    assert runtime_options("GPU", {}, required="f32") == {}  # compress_model.py checked it on a CPU
    assert runtime_options("CPU", {"INFERENCE_PRECISION_HINT": "bf16"}, required="f32")["INFERENCE_PRECISION_HINT"] == "bf16"


def test_batch_invariant_mode_wins_over_everything():
    options = runtime_options("CPU", {"INFERENCE_PRECISION_HINT": "bf16", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "64",
                                      "KV_CACHE_PRECISION": "u8"}, batch_invariant=True, required="bf16")
    assert options == {**BATCH_INVARIANT, "KV_CACHE_PRECISION": "u8"}


def test_an_option_openvino_refuses_becomes_its_one_sentence():
    x = ov.opset8.parameter([1, 4], ov.Type.f32)
    with pytest.raises(Exception) as caught:
        ov.Core().compile_model(ov.Model([ov.opset8.relu(x)], [x]), "CPU", {"INFERENCE_PRECISION_HINT": "int3"})
    assert str(caught.value).count("\n") > 1  # OpenVINO's own message: a stack of source locations
    line = one_line(caught.value)
    assert "\n" not in line and "int3" in line and "INFERENCE_PRECISION_HINT" in line and "Exception from" not in line
