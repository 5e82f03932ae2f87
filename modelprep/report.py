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
