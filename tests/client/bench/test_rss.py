"""Where a process's resident memory is (/proc/PID/smaps grouped): read from this process and from a made-up map."""
from __future__ import annotations

import os

import psutil

from client.bench.rss import RssSampler, breakdown_mb

SMAPS = """\
7f0000000000-7f0000100000 r--s 00000000 fd:01 123 /models/m_INT8_compressed_weights/openvino_model.bin
Size:               1024 kB
Rss:                1000 kB
7f0000100000-7f0000200000 r-xp 00000000 fd:01 124 /venv/lib/libopenvino.so.2500
Rss:                 200 kB
7f0000200000-7f0000300000 rw-p 00000000 00:00 0
Rss:                3000 kB
7f0000300000-7f0000400000 rw-p 00000000 00:00 0 [heap]
Rss:                  50 kB
7f0000400000-7f0000500000 r--p 00000000 fd:01 125 /usr/lib/locale/C.utf8/LC_CTYPE
Rss:                   4 kB
"""


def test_the_groups_of_a_map():
    assert breakdown_mb(0, SMAPS) == {"weights_file": 1.024, "libraries": 0.2048, "other_files": 0.004096,
                                      "anonymous": 3.1232}


def test_the_groups_add_up_to_this_process_s_rss():
    got = breakdown_mb(os.getpid())
    rss = psutil.Process().memory_info().rss / 1e6
    # No weights_file check: a test worker may have loaded a model in this process before (pytest -n 2 --dist loadfile).
    assert got["libraries"] > 0 and got["anonymous"] > 0
    assert abs(sum(got.values()) - rss) < 0.1 * rss


def test_the_peak_and_the_low_of_a_window():
    sampler = RssSampler(os.getpid())  # not started: its samples made up
    sampler.samples = [(1.0, 500_000_000), (2.0, 700_000_000), (3.0, 600_000_000), (4.0, 900_000_000)]
    assert (sampler.peak_mb(1.5, 3.5), sampler.low_mb(1.5, 3.5)) == (700.0, 600.0)
    assert sampler.peak_mb(5.0, 6.0) is None and sampler.low_mb(5.0, 6.0) is None
