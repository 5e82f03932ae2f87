"""The resident set size of another process (the server), sampled on a thread; peaks over time windows."""
from __future__ import annotations

import threading
import time

import psutil


class RssSampler:
    """Samples `pid`'s RSS every `interval` s while the `with` block runs (a peak shorter than that may be missed)."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.process = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []  # (time.perf_counter(), bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.perf_counter(), self.process.memory_info().rss))
            except psutil.Error:  # the process is gone
                return
            self._stop.wait(self.interval)

    def peak_mb(self, start: float, end: float) -> float | None:
        """The highest sample between two time.perf_counter() readings, in MB (10^6 bytes)."""
        inside = self._between(start, end)
        return max(inside) / 1e6 if inside else None

    def low_mb(self, start: float, end: float) -> float | None:
        """The lowest sample between two time.perf_counter() readings, in MB."""
        inside = self._between(start, end)
        return min(inside) / 1e6 if inside else None

    def _between(self, start: float, end: float) -> list[int]:
        return [rss for t, rss in self.samples if start <= t <= end]


def breakdown_mb(pid: int, smaps: str | None = None) -> dict[str, float]:
    """Where a process's resident memory is, from /proc/PID/smaps, in MB: the model's weights file mapped
    (openvino_model*.bin), shared libraries (*.so*), other files, and anonymous memory (heap, stacks, what the
    allocators hold)."""
    text = smaps if smaps is not None else open(f"/proc/{pid}/smaps").read()
    totals = {"weights_file": 0, "libraries": 0, "other_files": 0, "anonymous": 0}
    kind = "anonymous"
    for line in text.splitlines():
        first = line.split(maxsplit=6)
        if not first:
            continue
        if not first[0].endswith(":"):  # a mapping's header: address perms offset dev inode [path]
            path = first[5] if len(first) > 5 else ""
            name = path.rsplit("/", 1)[-1]
            kind = ("anonymous" if not path.startswith("/") else
                    "weights_file" if name.startswith("openvino_model") and name.endswith(".bin") else
                    "libraries" if ".so" in name else "other_files")
        elif first[0] == "Rss:":
            totals[kind] += int(first[1])
    return {k: v * 1024 / 1e6 for k, v in totals.items()}
