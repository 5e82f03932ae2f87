"""The two jobs behind the CLIs: download (get + convert) and compress, each into a complete directory."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from modelprep import hub_errors, registry, store
from modelprep.errors import ModelPrepError
from modelprep.progress import steps
from modelprep.registry import Int4Params, ModelSpec


def _preflight(spec: ModelSpec, trust_remote_code: bool) -> None:
    """Fail in one sentence, before any long step, if the hub model cannot be fetched."""
    from huggingface_hub.utils import logging as hub_logging
    from transformers import AutoConfig

    hub_logging.set_verbosity_error()  # no "Retrying in 1s" lines: the one-sentence error says it all
    try:
        AutoConfig.from_pretrained(spec.hub_id, trust_remote_code=trust_remote_code)
    except Exception as exc:
        explained = hub_errors.explain(exc, spec.hub_id)
        if explained:
            raise explained from None
        if "trust_remote_code" in str(exc):
            raise ModelPrepError(f"{spec.hub_id} needs its own code: rerun with --trust-remote-code if you trust it") from None
        raise ModelPrepError(f"cannot load the configuration of {spec.hub_id}: {str(exc).splitlines()[0]}") from None


def download(
    model: str = registry.DEFAULT_MODEL,
    models_dir: str | Path = "models",
    *,
    force: bool = False,
    trust_remote_code: bool = False,
    progress: bool = True,
    source: str | Path | None = None,
) -> Path:
    """Get `model` (registry name, hub id or local dir; its files from the local directory `source` if given)
    and write its FP32 OpenVINO directory; return it.

    Other precisions are compressed from this directory (see `ensure_model`), so there is one
    compression code path and the FP32 reference stays available for comparisons.
    """
    spec = registry.resolve(model, source)
    target = store.model_dir(spec.name, "fp32", models_dir)
    if store.is_complete(target) and not force:
        return target
    if spec.source == "hub":
        _preflight(spec, trust_remote_code)
    if spec.source != "gguf":
        from modelprep.export import check_exportable

        check_exportable(spec.hub_id, trust_remote_code)

    manifest = store.Manifest(name=spec.name, precision="fp32", source=spec.hub_id, stop=list(spec.stop))
    names = (["de-quantize GGUF"] if spec.source == "gguf" else []) + ["export to OpenVINO IR", "OpenVINO tokenizer"]
    started = time.monotonic()
    with store.atomic_dir(target, manifest) as tmp, steps(spec.name, names, progress) as step:
        source = spec.hub_id
        if spec.source == "gguf":
            from modelprep import smollm2_gguf

            step("de-quantize GGUF")
            gguf = smollm2_gguf.locate_gguf()
            manifest.source = str(gguf)
            source = str(smollm2_gguf.write_checkpoint(tmp / ".hf-checkpoint", gguf))
        step("export to OpenVINO IR")
        _export(spec, source, tmp, trust_remote_code)
        shutil.rmtree(tmp / ".hf-checkpoint", ignore_errors=True)
        step("OpenVINO tokenizer")
        from modelprep.export import finish_tokenizer

        finish_tokenizer(tmp, spec.template)
        manifest.seconds = round(time.monotonic() - started, 1)
    return target


def _export(spec: ModelSpec, source: str, out_dir: Path, trust_remote_code: bool) -> None:
    from modelprep.export import export_ir

    try:
        export_ir(source, out_dir, trust_remote_code)
    except ModelPrepError:
        raise
    except Exception as exc:
        explained = hub_errors.explain(exc, spec.hub_id)
        if explained:
            raise explained from None
        raise


def default_int4(name: str) -> Int4Params:
    spec = registry.MODELS.get(name)
    return spec.int4 if spec else Int4Params()


def compress(
    source_dir: str | Path,
    precision: str,
    *,
    int4: Int4Params | None = None,
    force: bool = False,
    progress: bool = True,
    check: bool = True,
    min_agreement: float | None = None,
    tune: bool = False,
) -> Path:
    """Write the `precision` sibling of a complete FP32 directory (e.g. NAME_INT8_compressed_weights).

    With `check`, the new directory is compared with FP32 before it is published (modelprep/fidelity.py):
    its manifest records the inference precision it needs, and one that is poor even at f32 is refused
    (ModelPrepError) with nothing written. With `tune`, the OpenVINO options fastest on this CPU that still pass
    that check are measured and recorded as the manifest's `runtime` (modelprep/tune.py; INT8 and INT4 only).
    """
    from modelprep import fidelity
    from modelprep.compress import compress_ir

    source_dir = Path(source_dir)
    if not store.is_complete(source_dir):
        raise ModelPrepError(
            f"{source_dir} is not a complete model: run `python download_model.py --model {source_dir.name}` first"
        )
    source = store.read_manifest(source_dir)
    target = store.model_dir(source.name, precision, source_dir.parent)
    if store.is_complete(target) and not force:
        return target
    int4 = int4 or default_int4(source.name)
    manifest = store.Manifest(name=source.name, precision=precision, source=str(source_dir), stop=source.stop)
    tune = tune and precision in TUNED
    names = ["compress"] + (["check against FP32"] if check else []) + (["runtime options"] if tune else [])
    started = time.monotonic()
    with store.atomic_dir(target, manifest) as tmp, steps(f"{source.name} -> {precision}", names, progress) as step:
        step(f"NNCF {precision}")
        manifest.compression = compress_ir(source_dir, tmp, precision, int4)
        if check:
            step("check against FP32")
            bar = fidelity.MIN_AGREEMENT[precision] if min_agreement is None else min_agreement
            result = fidelity.check(tmp, fidelity.reference(source_dir), bar)
            if result.refused:
                raise fidelity.refusal(target.name, result)
            manifest.fidelity = result.to_manifest()
            manifest.inference_precision = result.required_precision
        if tune:
            step("runtime options")
            manifest.runtime = measure_runtime(tmp, manifest, source_dir if check else None, min_agreement)
        manifest.seconds = round(time.monotonic() - started, 1)
    return target


TUNED = ("int8", "int4")  # compressed weights: what the CPU plugin's activation quantization applies to


def measure_runtime(model_dir: Path, manifest: store.Manifest, fp32_dir: Path | None,
                    min_agreement: float | None = None) -> dict:
    """The manifest's `runtime` for a compressed directory: its fastest OpenVINO options on this CPU among those
    that pass the fidelity check against `fp32_dir` (None: speed only, unchecked)."""
    from modelprep import fidelity, tune

    bar = fidelity.MIN_AGREEMENT[manifest.precision] if min_agreement is None else min_agreement
    reference = fidelity.reference(fp32_dir) if fp32_dir is not None else None
    group = manifest.compression.get("group_size") if manifest.precision == "int4" else None
    return tune.tune(Path(model_dir), weight_group=group, reference=reference, min_agreement=bar).to_manifest()


def retune(model_dir: str | Path, *, check: bool = True, min_agreement: float | None = None) -> store.Manifest:
    """Measure a complete compressed directory's runtime options again (on this CPU) and rewrite its manifest."""
    model_dir = Path(model_dir)
    manifest = store.read_manifest(model_dir)
    if manifest.precision not in TUNED:
        return manifest
    fp32_dir = Path(manifest.source) if check else None
    if fp32_dir is not None and not store.is_complete(fp32_dir):
        raise ModelPrepError(f"{model_dir.name} was compressed from {fp32_dir}, which is gone: rerun with --no-check "
                             "to measure speed only")
    return store.update_manifest(model_dir, runtime=measure_runtime(model_dir, manifest, fp32_dir, min_agreement))


def ensure_model(
    name: str = "smollm2-135m-instruct",
    precision: str = "fp32",
    models_dir: str | Path = "models",
    *,
    force: bool = False,
    trust_remote_code: bool = False,
    progress: bool = False,
    source: str | Path | None = None,
) -> Path:
    """A complete model directory for (name, precision), downloading and/or compressing it if missing.

    Other precisions are compressed from the FP32 directory (kept beside them), exactly as
    `compress_model.py` does; `force` rebuilds only the requested precision.
    """
    target = store.model_dir(registry.resolve(name).name, precision, models_dir)
    if store.is_complete(target) and not force:
        return target
    fp32 = download(name, models_dir, force=force and precision == "fp32",
                    trust_remote_code=trust_remote_code, progress=progress, source=source)
    if precision == "fp32":
        return fp32
    return compress(fp32, precision, force=force, progress=progress)
