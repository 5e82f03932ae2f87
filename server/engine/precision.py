"""Which numerics the model runs with: the OpenVINO options we add to the servable's, and what the compiled model
reports back.

On CPUs with bf16 (AVX512_BF16, AMX) OpenVINO's CPU plugin computes in bf16 by default, and INT8 weights at bf16
answer garbage on such CPUs; f32 measured no slower for these models. So CPUs run at f32 unless the servable
asks otherwise. Batch-invariant mode also turns dynamic quantization of activations off: with it on, a
sequence's numbers depend on its batch-mates (late greedy tokens may differ from a solo run).
"""
from __future__ import annotations

from dataclasses import dataclass

HINT = "INFERENCE_PRECISION_HINT"
DYNAMIC_QUANTIZATION = "DYNAMIC_QUANTIZATION_GROUP_SIZE"
KV_CACHE = "KV_CACHE_PRECISION"
# The same prompt gives the same greedy text whatever runs beside it.
BATCH_INVARIANT = {HINT: "f32", DYNAMIC_QUANTIZATION: "0"}


def runtime_options(device: str, ov_config: dict, batch_invariant: bool = False,
                    required: str | None = None) -> dict:
    """The options to compile with, lowest first: f32 on CPUs, then the precision the model directory's manifest
    requires (found on a CPU, so for CPUs), then the servable's own `ov_config`, then batch-invariant mode."""
    cpu = device.upper().startswith("CPU")
    options = {HINT: "f32"} if cpu else {}
    if required and cpu:
        options[HINT] = required
    options.update(ov_config)
    if batch_invariant:
        options.update(BATCH_INVARIANT)
    return options


@dataclass(frozen=True)
class Numerics:
    """What the compiled model really runs with (not what was asked)."""

    inference: str  # f32, bf16, f16
    kv_cache: str  # the cache tensors' element type: f16, bf16, u8, u4...
    dynamic_quantization: int  # group size; 0: off

    def __str__(self) -> str:
        dq = f"on (group {self.dynamic_quantization})" if self.dynamic_quantization else "off"
        return f"inference_precision={self.inference} kv_cache={self.kv_cache} dynamic_quantization={dq}"


def numerics(compiled, kv_cache: str | None = None) -> Numerics:
    """Read from a compiled model; `kv_cache`: the cache inputs' element type, when the model has them."""
    supported = {str(p) for p in compiled.get_property("SUPPORTED_PROPERTIES")}

    def read(name: str, default):
        return compiled.get_property(name) if name in supported else default

    hint = read(HINT, None)
    inference = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint or "default")
    if kv_cache is None:
        kv = read(KV_CACHE, None)
        kv_cache = kv.get_type_name() if hasattr(kv, "get_type_name") else str(kv or "none")
    return Numerics(inference, kv_cache, int(read(DYNAMIC_QUANTIZATION, 0) or 0))
