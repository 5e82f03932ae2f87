"""The weights file's pages given back: a read-only mapping's resident pages dropped, its contents unchanged."""
from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys

from server.engine.pages import release_file_pages

PAGE = mmap.PAGESIZE


def resident_kb(path) -> int:
    """This process's resident kB of its mappings of `path` (/proc/self/smaps)."""
    target, total, inside = os.path.realpath(path), 0, False
    for line in open("/proc/self/smaps"):
        fields = line.split()
        if not fields[0].endswith(":"):
            inside = len(fields) == 6 and fields[5] == target
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


def test_a_read_only_mapping_loses_its_resident_pages_not_its_contents(tmp_path):
    path = tmp_path / "openvino_model.bin"
    data = os.urandom(256 * PAGE)
    path.write_bytes(data)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
        assert sum(mapped[i] for i in range(0, len(data), PAGE)) >= 0  # every page read: resident
        assert resident_kb(path) >= 256 * PAGE // 1024
        assert release_file_pages(path) >= len(data)
        assert resident_kb(path) < 16 * PAGE // 1024
        assert mapped[:] == data  # read back from the page cache


def test_a_writable_mapping_is_left_alone(tmp_path):
    path = tmp_path / "openvino_model.bin"
    path.write_bytes(bytes(64 * PAGE))
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mapped:
        mapped[:PAGE] = b"x" * PAGE  # a private change a drop would lose
        assert release_file_pages(path) == 0
        assert mapped[:PAGE] == b"x" * PAGE


def test_no_mapping_no_work(tmp_path):
    assert release_file_pages(tmp_path / "openvino_model.bin") == 0


SERVE = """
import json, os, sys
from client.bench.rss import breakdown_mb
from server.engine.engine import Engine
from server.engine.model import LoadedModel
from server.engine.types import GenerationRequest, GivenParams
engine = Engine(LoadedModel.load(sys.argv[1], "CPU", {"CACHE_DIR": sys.argv[2]}, graphs=2))
long = GenerationRequest(prompts=(" ".join(["word"] * 300),), params=GivenParams(max_new_tokens=4), raw=True)
short = GenerationRequest(prompts=("Paris is", "Rome is"), params=GivenParams(max_new_tokens=4), raw=True)
assert all(c.text for c in engine.generate(long) + engine.generate(short))
print(json.dumps(breakdown_mb(os.getpid())))
"""


def test_a_serving_engine_holds_its_weights_once(int8_model_dir, tmp_path):
    """The CPU plugin reads the whole mapped weights file once, to lay the weights out for its kernels (the model
    cache's hash reads it too): after answering long and short prompts on both compiled copies, the file is not
    resident again beside the plugin's copy (a fresh process, so nothing else of it is mapped); twice, for a cache
    miss then a hit. What the plugin reads in place at every step stays resident (on the default model 5 to 69 MB
    of its 135, with the machine's page cache): so under three quarters, where the whole file stayed before."""
    size_mb = (int8_model_dir / "openvino_model.bin").stat().st_size / 1e6
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", SERVE, str(int8_model_dir), str(tmp_path / "cache")],
                             capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
        resident = json.loads(out.stdout.strip().splitlines()[-1])
        assert resident["weights_file"] < 0.75 * size_mb, resident
