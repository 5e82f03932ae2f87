"""Which numerics the model runs with: the OpenVINO options we add to the servable's, and what the compiled model
reports back.

On CPUs with bf16 (AVX512_BF16, AMX) OpenVINO's CPU plugin computes in bf16 by default, and INT8 weights at bf16
answer garbage on such CPUs; f32 measured no slower for these models. So CPUs run at f32 unless the servable
asks otherwise. Batch-invariant mode also turns dynamic quantization of activations off: with it on, a
sequence's numbers depend on its batch-mates (late greedy tokens may differ from a solo run).

Between our defaults and the servable's come the options `compress_model.py` measured fastest for the directory
(its manifest's `runtime`, modelprep/tune.py), applied only on the kind of CPU they were measured on.
"""
from __future__ import annotations

from dataclasses import dataclass, field

HINT = "INFERENCE_PRECISION_HINT"
DYNAMIC_QUANTIZATION = "DYNAMIC_QUANTIZATION_GROUP_SIZE"
KV_CACHE = "KV_CACHE_PRECISION"
# The same prompt gives the same greedy text whatever runs beside it.
BATCH_INVARIANT = {HINT: "f32", DYNAMIC_QUANTIZATION: "0"}


# Where an option came from, lowest first.
DEFAULT, MANIFEST, SERVABLE, BATCH_MODE = "default", "manifest", "servable", "batch-invariant"
SHOWN = (HINT, DYNAMIC_QUANTIZATION)  # always named in the numerics log line, with their source


@dataclass(frozen=True)
class Options:
    values: dict  # what to compile with
    sources: dict = field(default_factory=dict)  # option -> DEFAULT, MANIFEST, SERVABLE or BATCH_MODE


def resolve(device: str, ov_config: dict, batch_invariant: bool = False, required: str | None = None,
            tuned: dict | None = None) -> Options:
    """The options to compile with, lowest first: f32 on CPUs, then the model directory's manifest (the precision
    it requires and the `tuned` runtime options, both found on a CPU, so for CPUs), then the servable's own
    `ov_config`, then batch-invariant mode."""
    cpu = device.upper().startswith("CPU")
    values, sources = ({HINT: "f32"}, {HINT: DEFAULT}) if cpu else ({}, {})
    layers = [(MANIFEST, {**(tuned or {}), **({HINT: required} if required else {})} if cpu else {}),
              (SERVABLE, ov_config), (BATCH_MODE, BATCH_INVARIANT if batch_invariant else {})]
    for source, options in layers:
        values.update(options)
        sources.update(dict.fromkeys(options, source))
    return Options(values, sources)


def runtime_options(device: str, ov_config: dict, batch_invariant: bool = False,
                    required: str | None = None, tuned: dict | None = None) -> dict:
    """resolve()'s values."""
    return resolve(device, ov_config, batch_invariant, required, tuned).values


def manifest_runtime(runtime: dict, device: str) -> tuple[dict, str]:
    """The manifest's measured runtime options to apply on this device, and a few words on what became of them."""
    if not runtime or not runtime.get("options"):
        if not runtime:
            return {}, ""
        return {}, f"the plugin's defaults: {runtime['note']}" if runtime.get("note") else \
            "measured: the plugin's defaults were fastest"
    if not device.upper().startswith("CPU"):
        return {}, f"the manifest's runtime options were measured on a CPU: not applied on {device}"
    from modelprep.tune import cpu_kind, same_kind

    here, there = cpu_kind(), runtime.get("cpu", {})
    if same_kind(here, there):
        return dict(runtime["options"]), "the manifest's runtime options, measured on this kind of CPU"
    return {}, (f"the manifest's runtime options were measured on another kind of CPU ({_kind(there)}; this is "
                f"{_kind(here)}): not applied, the plugin's defaults instead; `compress_model.py --retune` measures "
                "them here")


def _kind(cpu: dict) -> str:
    return f"{cpu.get('name', '?')} [{' '.join(cpu.get('isa', []))}]"


def sources_text(options: Options, compiled_values: dict) -> str:
    """`NAME=value (source)` for each option we set or always show, with the value the compiled model reports."""
    names = [*SHOWN, *(k for k in options.values if k not in SHOWN and k != "CACHE_DIR")]
    shown = []
    for name in names:
        value = compiled_values.get(name, options.values.get(name))
        if value is None:
            continue
        shown.append(f"{name}={value} ({options.sources.get(name, DEFAULT)})")
    return ", ".join(shown)


@dataclass(frozen=True)
class Numerics:
    """What the compiled model really runs with (not what was asked)."""

    inference: str  # f32, bf16, f16
    kv_cache: str  # the cache tensors' element type: f16, bf16, u8, u4...
    dynamic_quantization: int  # group size; 0: off

    def __str__(self) -> str:
        group = "per token" if self.dynamic_quantization >= 2**63 else f"group {self.dynamic_quantization}"
        dq = f"on ({group})" if self.dynamic_quantization else "off"
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
