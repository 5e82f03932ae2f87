"""Engines measured in turns, so the drift of a shared machine touches them alike: at each level, round after round,
every engine's level once (A B A B), and a figure comparing two engines is the median of its per-round ratios.
Used by the serving benchmark (the server against genai-cb and the raw step) and by variants.py (servers).
"""
from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import fields, replace
from typing import TypeVar

from client.bench.load import LevelResult

# A step runs its engine at (level, round index) and names what it measured: a LevelResult, or ms (the raw step).
Step = Callable[[int, int], dict[str, "LevelResult | float"]]
# level -> one dict per round: engine name -> its figure
Results = dict[int, list[dict[str, "LevelResult | float"]]]

T = TypeVar("T")


def alternate(levels: list[int], rounds: int, steps: list[Step], progress=print) -> Results:
    """At each level, `rounds` rounds of every step in order; one progress line per round."""
    results: Results = {}
    for level in levels:
        results[level] = []
        for r in range(rounds):
            got: dict = {}
            for step in steps:
                got.update(step(level, r))
            results[level].append(got)
            progress(f"level {level} round {r + 1}/{rounds}: " + ", ".join(_show(k, v) for k, v in got.items()))
    return results


def _show(name: str, figure: LevelResult | float) -> str:
    if not isinstance(figure, LevelResult):
        return f"{name} {figure:.2f} ms"
    return f"{name} {figure.output_tokens_per_s:.0f} tok/s" + (f" ({figure.errors} errors)" if figure.errors else "")


def series(results: Results, name: str) -> list[list]:
    """Per round, `name`'s figures over the levels where it ran."""
    rounds = max((len(per_round) for per_round in results.values()), default=0)
    return [[per_round[r][name] for per_round in results.values() if name in per_round[r]] for r in range(rounds)]


def median(values) -> float | None:
    """The median of the values that were measured (not None); None if none was."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def median_fields(per_round: list[T], keep: tuple[str, ...] = ()) -> T:
    """One record whose every field is the median of that field over the rounds; fields in `keep` from the first."""
    first = per_round[0]
    return replace(first, **{f.name: median(getattr(row, f.name) for row in per_round)
                             for f in fields(first) if f.name not in keep})


def pool(results: list[LevelResult]) -> LevelResult:
    """One level's rounds as one: every request's timings, the tokens over the summed wall time."""
    if len(results) == 1:
        return results[0]
    pooled = LevelResult.of(results[0].concurrency, sum(r.wall_s for r in results),
                            [t for r in results for t in r.timings])
    pooled.errors = sum(r.errors for r in results)
    pooled.error_messages = sorted({m for r in results for m in r.error_messages})[:5]
    return pooled
