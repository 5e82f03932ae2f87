"""`make peers`: the llama.cpp peer of the serving benchmark (llamacpp.py runs it), built once: its server and the
default model as a Q8_0 GGUF.

    python -m client.bench.peers [--dir peers]

Builds, each step skipped when its output exists (a second run does nothing), offline but for PyPI:
1. llama-cpp-python's source distribution (pinned, LLAMA_CPP_PYTHON) from PyPI; its vendored llama.cpp tree;
2. `llama-server` and `llama-quantize` from that tree (CMake, static, only those two targets, 2 jobs);
3. the default model as llama.cpp reads it: the embedded GGUF de-quantized to a Hugging Face checkpoint (the same
   one download_model.py exports to OpenVINO IR), converted to an f32 GGUF by the tree's own convert_hf_to_gguf.py
   (its vendored gguf-py, not the venv's), re-quantized to Q8_0 by llama-quantize: an INT8-like peer.
Every tool's output goes to DIR/build.log; a failing step prints one line naming it and exits 1.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from client.bench.llamacpp import MODEL_NAME, PEERS_DIR, LlamaCpp
from client.connection import fail

LLAMA_CPP_PYTHON = "0.3.36"  # the source distribution docs/benchmarks.md's llama.cpp figures were measured with
TARGETS = ("llama-server", "llama-quantize")


class BuildFailed(RuntimeError):
    """A step failed: one line."""


def build(peer: LlamaCpp, python: str = sys.executable) -> list[str]:
    """Every missing output made; returns what was done (empty when all was there)."""
    peer.root.mkdir(parents=True, exist_ok=True)
    done = []
    tree = source_tree(peer)
    tools = peer.server.is_file() and peer.quantize.is_file()
    if not (tools and peer.gguf.is_file()) and not (tree / "CMakeLists.txt").is_file():  # both need the tree
        _unpack(peer, python)
        done.append(f"unpacked llama-cpp-python {LLAMA_CPP_PYTHON}")
    if not tools:
        _compile(peer, tree)
        done.append(f"built {', '.join(TARGETS)}")
    if not peer.gguf.is_file():
        _convert(peer, python)
        done.append(f"made {peer.gguf}")
    return done


def source_tree(peer: LlamaCpp) -> Path:
    """The llama.cpp tree `build` unpacks (its converter and gguf-py)."""
    return peer.root / "src" / f"llama_cpp_python-{LLAMA_CPP_PYTHON}" / "vendor" / "llama.cpp"


def _run(peer: LlamaCpp, step: str, cmd: list[str], **kwargs) -> None:
    with open(peer.log, "a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        try:
            result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, **kwargs)
        except OSError as exc:
            raise BuildFailed(f"{step}: {exc}") from None
    if result.returncode != 0:
        raise BuildFailed(f"{step} failed (exit {result.returncode}; see {peer.log})")


def _unpack(peer: LlamaCpp, python: str) -> None:
    downloads = peer.root / "downloads"
    sdist = downloads / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if not sdist.is_file():
        _run(peer, f"pip download llama-cpp-python=={LLAMA_CPP_PYTHON}",
             [python, "-m", "pip", "download", "--no-binary", "llama-cpp-python", "--no-deps", "--dest", str(downloads),
              f"llama-cpp-python=={LLAMA_CPP_PYTHON}"])
    if not sdist.is_file():
        raise BuildFailed(f"pip download did not give {sdist.name} (see {peer.log})")
    src = peer.root / "src"
    shutil.rmtree(src / sdist.name.removesuffix(".tar.gz"), ignore_errors=True)
    with tarfile.open(sdist) as tar:
        tar.extractall(src, filter="data")


def _compile(peer: LlamaCpp, tree: Path) -> None:
    build_dir = peer.root / "build"
    # Static: the two programs stand alone in DIR/bin. GGML_NATIVE (default on): tuned for this CPU, as ours is.
    _run(peer, "cmake configure", ["cmake", "-S", str(tree), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                                   "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_CURL=OFF", "-DBUILD_SHARED_LIBS=OFF",
                                   "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"])
    _run(peer, "cmake build", ["nice", "-n", "10", "cmake", "--build", str(build_dir), "--target", *TARGETS,
                               "-j", "2"])
    (peer.root / "bin").mkdir(exist_ok=True)
    for name in TARGETS:
        built = build_dir / "bin" / name
        if not built.is_file():
            raise BuildFailed(f"cmake build made no {built}")
        shutil.copy2(built, peer.root / "bin" / name)


def _convert(peer: LlamaCpp, python: str) -> None:
    work = peer.root / "convert"
    checkpoint, f32 = work / "hf", work / f"{MODEL_NAME}-f32.gguf"
    if not (checkpoint / "tokenizer.json").is_file():  # written last
        _run(peer, "de-quantizing the embedded GGUF to a checkpoint",
             [python, "-c", "import sys; from pathlib import Path; from modelprep.smollm2_gguf import "
                            "write_checkpoint; write_checkpoint(Path(sys.argv[1]))", str(checkpoint)],
             env={**os.environ, "HF_HUB_OFFLINE": "1"})
    to_gguf(peer, checkpoint, f32, "f32", python)
    quantize(peer, f32, peer.gguf, "Q8_0")
    shutil.rmtree(work)


def to_gguf(peer: LlamaCpp, checkpoint: Path, out: Path, outtype: str, python: str = sys.executable) -> None:
    """A Hugging Face checkpoint as a GGUF, by the tree's own convert_hf_to_gguf.py (its vendored gguf-py, not the
    venv's)."""
    tree = source_tree(peer)
    env = {**os.environ, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(tree / "gguf-py"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    _run(peer, "convert_hf_to_gguf.py", [python, str(tree / "convert_hf_to_gguf.py"), str(checkpoint),
                                         "--outtype", outtype, "--outfile", str(out)], env=env)


def quantize(peer: LlamaCpp, gguf: Path, out: Path, kind: str) -> None:
    """`gguf` re-quantized to `kind` (Q8_0, Q4_0, ...) by llama-quantize; `out` appears complete or not at all."""
    partial = out.with_suffix(".partial")
    _run(peer, "llama-quantize", [str(peer.quantize), str(gguf), str(partial), kind, "2"])
    partial.rename(out)  # last: a half-written model is never taken for a built one


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m client.bench.peers", description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", default=str(PEERS_DIR), help="where the peer is built (default %(default)s)")
    args = p.parse_args(argv)
    peer = LlamaCpp(Path(args.dir))
    try:
        done = build(peer)
    except (BuildFailed, OSError) as exc:
        return fail(f"make peers: {exc}")
    except KeyboardInterrupt:
        return fail("make peers: interrupted")
    print(f"llama.cpp peer {'built' if done else 'up to date'}: {peer.server}, {peer.gguf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
