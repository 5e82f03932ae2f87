"""The numerics the model runs with: our defaults, then the model directory's manifest (its required precision and
measured runtime options), under the servable's options, batch-invariant mode over them, and OpenVINO's refusals
as one line."""
import shutil

import openvino as ov
import pytest

from modelprep.store import update_manifest
from server.engine.errors import one_line
from server.engine.precision import BATCH_INVARIANT, resolve, runtime_options


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


def test_the_manifest_runtime_comes_between_our_defaults_and_the_servable():
    tuned = {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "128"}
    options = resolve("CPU", {}, tuned=tuned, required="f32")
    assert options.values == {"INFERENCE_PRECISION_HINT": "f32", **tuned}
    assert options.sources == {"INFERENCE_PRECISION_HINT": "manifest", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "manifest"}
    options = resolve("CPU", {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "64"}, tuned=tuned)
    assert options.values["DYNAMIC_QUANTIZATION_GROUP_SIZE"] == "64"
    assert options.sources == {"INFERENCE_PRECISION_HINT": "default", "DYNAMIC_QUANTIZATION_GROUP_SIZE": "servable"}
    options = resolve("CPU", {"DYNAMIC_QUANTIZATION_GROUP_SIZE": "64"}, batch_invariant=True, tuned=tuned)
    assert options.values == BATCH_INVARIANT and set(options.sources.values()) == {"batch-invariant"}
    assert resolve("GPU", {}, tuned=tuned).values == {}  # measured on a CPU



def test_a_manifest_that_kept_the_defaults_says_why():
    from server.engine.precision import manifest_runtime

    assert manifest_runtime({}, "CPU") == ({}, "")
    assert manifest_runtime({"options": {}, "cpu": {}}, "CPU") == ({}, "measured: the plugin's defaults were fastest")
    busy = {"options": {}, "cpu": {}, "note": "the machine was too busy to tell the candidates apart"}
    assert manifest_runtime(busy, "CPU") == ({}, "the plugin's defaults: the machine was too busy to tell the "
                                                 "candidates apart")

def _with_runtime(model_dir, tmp_path, options: dict, cpu: dict):
    """A copy of `model_dir` whose manifest records these runtime options as measured on `cpu`."""
    copy = tmp_path / model_dir.name
    shutil.copytree(model_dir, copy)
    update_manifest(copy, runtime={"options": options, "cpu": cpu, "openvino": "", "rounds": 1, "seconds": 0,
                                   "candidates": []})
    return copy


def _group(model) -> int:
    """The activation quantization group the compiled model reports (what it really runs with)."""
    return int(model.paged[0].get_property("DYNAMIC_QUANTIZATION_GROUP_SIZE"))


def test_a_manifest_runtime_reaches_the_compiled_model_under_the_servable_and_batch_invariant_mode(
        int8_model_dir, tmp_path):
    from modelprep.tune import cpu_kind
    from server.engine.model import LoadedModel

    default = int(ov.Core().get_property("CPU", "DYNAMIC_QUANTIZATION_GROUP_SIZE"))
    measured = "128" if default != 128 else "64"
    model_dir = _with_runtime(int8_model_dir, tmp_path, {"DYNAMIC_QUANTIZATION_GROUP_SIZE": measured}, cpu_kind())

    model = LoadedModel.load(model_dir, "CPU", {}, graphs=1)
    assert _group(model) == int(measured)
    assert f"DYNAMIC_QUANTIZATION_GROUP_SIZE={measured} (manifest)" in model.info.options
    assert "INFERENCE_PRECISION_HINT=f32 (manifest)" in model.info.options  # the INT8 model needs f32 here
    assert "measured on this kind of CPU" in model.info.runtime_note

    servable = "32" if measured != "32" else "64"
    model = LoadedModel.load(model_dir, "CPU", {"DYNAMIC_QUANTIZATION_GROUP_SIZE": servable}, graphs=1)
    assert _group(model) == int(servable)
    assert f"DYNAMIC_QUANTIZATION_GROUP_SIZE={servable} (servable)" in model.info.options

    model = LoadedModel.load(model_dir, "CPU", {"DYNAMIC_QUANTIZATION_GROUP_SIZE": servable}, batch_invariant=True,
                             graphs=1)
    assert _group(model) == 0 and "DYNAMIC_QUANTIZATION_GROUP_SIZE=0 (batch-invariant)" in model.info.options


def test_a_runtime_measured_on_another_kind_of_cpu_is_not_applied(int8_model_dir, tmp_path):
    from server.engine.model import LoadedModel

    default = int(ov.Core().get_property("CPU", "DYNAMIC_QUANTIZATION_GROUP_SIZE"))
    other = {"name": "Some Other CPU", "isa": ["avx2"]}
    model_dir = _with_runtime(int8_model_dir, tmp_path, {"DYNAMIC_QUANTIZATION_GROUP_SIZE": str(default * 2)}, other)
    model = LoadedModel.load(model_dir, "CPU", {}, graphs=1)
    assert _group(model) == default
    assert f"DYNAMIC_QUANTIZATION_GROUP_SIZE={default} (default)" in model.info.options
    assert "another kind of CPU (Some Other CPU [avx2]" in model.info.runtime_note
    assert "not applied" in model.info.runtime_note and "--retune" in model.info.runtime_note
