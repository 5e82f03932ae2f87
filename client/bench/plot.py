"""The serving benchmark's plot: TTFT, TPOT and throughput against concurrency, the server beside the baselines."""
from __future__ import annotations

from pathlib import Path

from client.bench.load import LevelResult


def plot(path: str | Path, server: list[LevelResult], baselines: dict[str, list[LevelResult]], title: str) -> None:
    """TTFT, TPOT and throughput against concurrency; baselines dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("TTFT p50 (ms)", lambda r: r.ttft_ms.p50), ("TPOT p50 (ms/token)", lambda r: r.tpot_ms.p50),
              ("output tokens/s", lambda r: r.output_tokens_per_s)]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    series = [("server", server, "-", "o")] + [(name, res, "--", "s") for name, res in baselines.items()]
    for ax, (label, value) in zip(axes, panels):
        for name, results, style, marker in series:
            xs = [r.concurrency for r in results if value(r) is not None]
            ys = [value(r) for r in results if value(r) is not None]
            ax.plot(xs, ys, linestyle=style, marker=marker, label=name)
        if label.startswith("TTFT"):  # the spread: p90 as a band over p50
            xs = [r.concurrency for r in server if r.ttft_ms.p90 is not None]
            ax.fill_between(xs, [r.ttft_ms.p50 for r in server if r.ttft_ms.p90 is not None],
                            [r.ttft_ms.p90 for r in server if r.ttft_ms.p90 is not None], alpha=0.2,
                            label="server p50-p90")
        ax.set_xscale("log", base=2)
        levels = sorted({r.concurrency for _, res, _, _ in series for r in res})
        ax.set_xticks(levels, [str(x) for x in levels])
        ax.set_xlabel("concurrent streams (baselines: batch size)")
        ax.set_title(label)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
