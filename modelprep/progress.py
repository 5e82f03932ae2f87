"""A step-by-step progress bar for long, few-step jobs (conversion, compression)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def steps(title: str, names: list[str], enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """Yields `step(name)`: marks the previous step done and shows the new one with elapsed time."""
    from tqdm import tqdm

    bar = tqdm(total=len(names), desc=title, unit="step", disable=not enabled,
               bar_format="{desc} |{bar:20}| {n_fmt}/{total_fmt} steps [{elapsed}]")
    started = [False]
    t0 = time.monotonic()

    def step(name: str) -> None:
        if started[0]:
            bar.update(1)
        started[0] = True
        bar.set_description(f"{title}: {name}")

    try:
        yield step
        bar.update(1)
        bar.set_description(f"{title}: done in {time.monotonic() - t0:.0f}s")
    finally:
        bar.close()
