"""Model directories on disk: names, manifests, completeness and atomic creation (nothing about converting).

A directory counts as complete only if its manifest (`modelprep.json`) exists and every file it
lists has the recorded size. The manifest is written last, inside a temporary sibling directory that
is renamed into place at the end, so an interrupted run never leaves a directory that looks complete.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Iterator

from modelprep.errors import ModelPrepError

PRECISIONS = ("fp32", "fp16", "int8", "int4")
SUFFIXES = {"fp32": "", "fp16": "_FP16", "int8": "_INT8_compressed_weights", "int4": "_INT4_compressed_weights"}
MANIFEST = "modelprep.json"
# What the server, optimum-intel and openvino-genai need to load a directory on its own.
REQUIRED = (
    "openvino_model.xml",
    "openvino_model.bin",
    "config.json",
    "generation_config.json",
    "tokenizer_config.json",
    "openvino_tokenizer.xml",
    "openvino_tokenizer.bin",
    "openvino_detokenizer.xml",
    "openvino_detokenizer.bin",
)


@dataclass
class Manifest:
    name: str
    precision: str
    source: str  # hub id, local directory, GGUF file, or the directory it was compressed from
    stop: list[str] = field(default_factory=list)
    compression: dict = field(default_factory=dict)  # NNCF / export parameters actually used
    seconds: float = 0.0  # time to build this directory
    # The CPU inference precision this directory needs ("f32"), or None when the CPU's default is fine (or it
    # was not checked). OpenVINO ignores a hint stored in the IR, so loaders must apply it themselves.
    inference_precision: str | None = None
    fidelity: dict = field(default_factory=dict)  # the check against FP32 (modelprep/fidelity.py); {}: not checked
    # The OpenVINO options measured fastest here that still pass the fidelity check, the figures and the CPU
    # (modelprep/tune.py); the server applies them on that kind of CPU under the servable's ov_config. {}: not measured.
    runtime: dict = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)  # relative path -> size in bytes


def model_dir(name: str, precision: str = "fp32", models_dir: str | Path = "models") -> Path:
    if precision not in SUFFIXES:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return Path(models_dir) / f"{name}{SUFFIXES[precision]}"


def read_manifest(path: str | Path) -> Manifest:
    """The manifest; keys this version does not know (written by a newer one) are ignored."""
    data = json.loads((Path(path) / MANIFEST).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{MANIFEST} is not a JSON object")
    known = {f.name for f in fields(Manifest)}
    return Manifest(**{k: v for k, v in data.items() if k in known})


def is_complete(path: str | Path) -> bool:
    path = Path(path)
    try:
        manifest = read_manifest(path)
    except (OSError, ValueError, TypeError):
        return False
    if not set(REQUIRED) <= set(manifest.files):
        return False
    for rel, size in manifest.files.items():
        try:
            if (path / rel).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def dir_size(path: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _write_manifest(path: Path, manifest: Manifest) -> None:
    manifest.files = {
        str(p.relative_to(path)): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()
    }
    missing = [f for f in REQUIRED if f not in manifest.files]
    if missing:
        raise ModelPrepError(f"conversion of {manifest.name} produced no {', '.join(missing)}")
    partial = path / (MANIFEST + ".partial")
    partial.write_text(json.dumps(asdict(manifest), indent=2) + "\n")
    os.replace(partial, path / MANIFEST)


def update_manifest(path: str | Path, **changes) -> Manifest:
    """Change fields of a complete directory's manifest in place (atomically; its file list stays as it is)."""
    path = Path(path)
    data = json.loads((path / MANIFEST).read_text())
    data.update(changes)
    partial = path / (MANIFEST + ".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path / MANIFEST)
    return read_manifest(path)


def _clean_stale(target: Path) -> None:
    """Remove temporary siblings left by killed runs (their process no longer exists)."""
    for stale in target.parent.glob(f".{target.name}.partial-*"):
        try:
            pid = int(stale.name.rsplit("-", 2)[-2])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(stale, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            pass


@contextmanager
def atomic_dir(target: Path, manifest: Manifest) -> Iterator[Path]:
    """Yield a temporary directory beside `target`; on success write the manifest and rename it in."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _clean_stale(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-{os.getpid()}-", dir=target.parent))
    except OSError as exc:
        reason = "not a directory" if target.parent.exists() and not target.parent.is_dir() else exc.strerror
        raise ModelPrepError(f"cannot write to output directory {target.parent}: {reason or exc}") from None
    try:
        yield tmp
        _write_manifest(tmp, manifest)
        tmp.chmod(0o755)  # mkdtemp makes it 0700; the directory may be mounted into a container
        if target.exists():
            # --force or a stale incomplete directory: move it aside, then swap.
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rename(target, old / "x")
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
