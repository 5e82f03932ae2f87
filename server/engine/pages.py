"""The weights file's pages given back once the model has run (Linux; elsewhere nothing happens).

OpenVINO maps the IR's weights file. The CPU plugin lays compressed weights out for its kernels at a compiled
model's first inference, reading the whole file, then reads only a few MB of it again (the rest is its own copy);
the model cache's hash reads the whole file too. Those pages stayed resident beside the plugin's copy: the weights
counted twice in the server's RSS (135 MB on the default model, 1.1 GB on a 1.1B INT8 one). A read-only file
mapping's pages dropped with MADV_DONTNEED come back from the page cache at their next read, so no value changes.
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

MADV_DONTNEED = 4


def release_file_pages(path: str | Path, maps: str = "/proc/self/maps") -> int:
    """Drop this process's resident pages of its read-only mappings of `path`; the bytes of mappings advised."""
    target = os.path.realpath(path)
    try:
        lines = Path(maps).read_text().splitlines()
    except OSError:  # no procfs: not Linux
        return 0
    regions = []
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5] == target and "w" not in fields[1]:
            start, end = (int(x, 16) for x in fields[0].split("-"))
            regions.append((start, end - start))
    if not regions:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return sum(size for start, size in regions if libc.madvise(start, size, MADV_DONTNEED) == 0)
