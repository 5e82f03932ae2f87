"""Drop from the image's environment what PyPI's CUDA build of torch brings but a CPU / Intel GPU server never
loads: triton (GPU kernel compiler, optional to torch) and every CUDA library that `import torch` does not map.

torch's own libraries link a few CUDA libraries (cudart, cublas, ...), so those stay and torch imports as
before; the rest (cuDNN's engine libraries, cusolverMg, nvrtc's alternates, profilers, headers, static
libraries) is only ever opened on a CUDA device. Run inside the environment: `python slim_venv.py`.
With a CPU-only torch there is nothing to drop. make docker-test proves the server still loads and answers.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

SITE = Path(sysconfig.get_paths()["purelib"])


def size_mb(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink()) >> 20


def mapped_after_import() -> set[str]:
    """Files mapped by a fresh interpreter once torch is imported (its link-time closure)."""
    code = "import torch, sys; sys.stdout.write(open('/proc/self/maps').read())"
    maps = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {str(Path(line.split()[-1]).resolve()) for line in maps.splitlines() if line.count("/") > 1}


def main() -> int:
    before = size_mb(SITE)
    if shutil.which("pip") and (SITE / "triton").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "uninstall", "--yes", "--quiet", "triton"], check=True)
    nvidia = SITE / "nvidia"
    if nvidia.is_dir():
        keep = mapped_after_import()
        for f in sorted(nvidia.rglob("*")):
            if f.is_file() and f.suffix != ".py" and str(f.resolve()) not in keep:
                f.unlink()
        kept = [f.name for f in nvidia.rglob("*.so*") if f.is_file()]
        print(f"slim_venv: kept {len(kept)} CUDA libraries torch links: {' '.join(sorted(kept))}")
    # Prove torch still imports without what was dropped.
    subprocess.run([sys.executable, "-c", "import torch; torch.ones(2) + 1"], check=True)
    print(f"slim_venv: site-packages {before} MB -> {size_mb(SITE)} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
