"""What a client prints: the question headers, the figures as text, or a JSON report."""
from __future__ import annotations

import json
import sys
from dataclasses import asdict

from client.figures import Figures, PromptResult, aggregate_figures, prompt_figures


def header(prompts: list[str], index: int) -> str:
    """The OpenVINO Model Server demo's layout: 'Question:' for one prompt, a '====' block per prompt otherwise."""
    if len(prompts) == 1:
        return f"Question:\n{prompts[0]}\n"
    return f"==== Prompt: {prompts[index]} ===="


def _num(value: float | None, unit: str = "", digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}{unit}"


def report_lines(fig: Figures, streamed: bool) -> list[str]:
    if fig.tokens is None:
        tokens = "n/a (nothing arrived)"
    elif fig.tokens_estimated:
        tokens = f"~{fig.tokens} (counted from the text responses: the call ended before the server's count)"
    else:
        tokens = str(fig.tokens)
    lines = [
        f"Number of tokens: {tokens}",
        f"Generated tokens per second: {_num(fig.tokens_per_second)}",
        f"Time per generated token: {_num(fig.time_per_token_ms, ' ms')}",
        f"Total time: {_num(fig.total_ms, ' ms')}",
    ]
    if streamed:
        lines += [
            f"Number of responses: {fig.responses}",
            f"First response time: {_num(fig.first_response_ms, ' ms')}",
            f"Average response time: {_num(fig.average_response_ms, ' ms')}",
        ]
    return lines


def print_report(results: list[PromptResult], wall_ms: float, streamed: bool, out=sys.stdout,
                 tokens: int | None = None) -> None:
    """Figures after the text: per prompt, and in aggregate when there are several (`tokens`: the server's
    count for the whole call, where it gives only that)."""
    if len(results) == 1:
        print("\n".join(report_lines(prompt_figures(results[0], streamed), streamed)), file=out)
        return
    for r in results:
        note = "" if r.finish_reason else " (unfinished)"
        print(f"-- Prompt {r.index}{note}: " + "; ".join(report_lines(prompt_figures(r, streamed), streamed)), file=out)
    print("-- All prompts (tokens/s: all tokens over the call's time; time per token: mean of the prompts):", file=out)
    print("\n".join(report_lines(aggregate_figures(results, wall_ms, streamed, tokens), streamed)), file=out)


def json_report(url: str, results: list[PromptResult], wall_ms: float, streamed: bool, interrupted: bool = False,
                rpc: str | None = None, tokens: int | None = None) -> str:
    prompts = []
    for r in results:
        entry = asdict(r)
        entry.pop("arrivals_ms")
        entry["figures"] = asdict(prompt_figures(r, streamed))
        prompts.append(entry)
    report = {"url": url, "rpc": rpc or ("GenerateStream" if streamed else "Generate"), "interrupted": interrupted,
              "prompts": prompts, "aggregate": asdict(aggregate_figures(results, wall_ms, streamed, tokens))}
    return json.dumps(report, indent=2)
