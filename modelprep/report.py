"""Human-readable sizes and the size table `compress_model.py` prints."""
from __future__ import annotations

from pathlib import Path

from modelprep.store import dir_size


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def size_table(source: Path, outputs: list[Path]) -> str:
    """Weights (openvino_model.bin) and whole-directory sizes, with the weights ratio to the source."""
    base = (source / "openvino_model.bin").stat().st_size
    rows = [("directory", "weights", "ratio", "total")]
    for path in [source, *outputs]:
        weights = (path / "openvino_model.bin").stat().st_size
        rows.append((str(path), human(weights), f"{weights / base:.2f}", human(dir_size(path))))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        f"{r[0]:<{widths[0]}}  {r[1]:>{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]:>{widths[3]}}" for r in rows
    )


def fidelity_report(outputs: list[Path]) -> tuple[str, list[str]]:
    """The fidelity table of the directories' manifests, and the warnings their users need."""
    from modelprep.fidelity import F32, Fidelity, table
    from modelprep.store import read_manifest

    checked, warnings = [], []
    for path in outputs:
        manifest = read_manifest(path)
        if not manifest.fidelity:
            warnings.append(f"{path.name} was not checked against FP32: run it at INFERENCE_PRECISION_HINT f32 "
                            "to be safe, or rebuild it with the check (--force)")
            continue
        result = Fidelity.from_manifest(manifest.fidelity)
        checked.append((path.name, result))
        if manifest.inference_precision == F32:
            warnings.append(
                f"{path.name} needs f32 inference precision on this CPU (at its default {result.cpu_default} it fails "
                "the check above). Our server applies it from modelprep.json; other consumers must set it themselves, "
                "OpenVINO ignores a hint stored in the IR: OVModelForCausalLM.from_pretrained(dir, "
                "ov_config={'INFERENCE_PRECISION_HINT': 'f32'}), openvino_genai.LLMPipeline(dir, 'CPU', "
                "INFERENCE_PRECISION_HINT='f32')")
    if any(result.cpu_default == F32 for _, result in checked):
        warnings.append("this CPU runs f32 by default, so no lower inference precision was checked: on a CPU with "
                        "bf16 (AVX512_BF16, AMX), set INFERENCE_PRECISION_HINT f32 or rerun the check there (--force)")
    return (table(checked) if checked else ""), warnings
