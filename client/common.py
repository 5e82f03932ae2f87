"""What both clients and the benchmark share: flags, the channel, the request, per-prompt figures, the report.

Timings come from `time.perf_counter()` on the client (a monotonic clock); token counts from the
server's usage fields.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
from dataclasses import asdict, dataclass, field

import grpc

from proto import llm_pb2, llm_pb2_grpc

DEFAULT_URL = "localhost:9000"
CONNECT_SECONDS = 5.0  # how long to wait for the server's port before calling it unreachable


class ClientError(Exception):
    """Ends a client with one line on stderr and exit code 1."""


# ---------------------------------------------------------------- flags and the request

def add_connection_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", default=DEFAULT_URL, help=f"server address host:port (default {DEFAULT_URL})")
    p.add_argument("--api-key", help="sent as 'authorization: Bearer KEY' when the server wants one")
    p.add_argument("--timeout", type=float, default=None, help="deadline of each call, in seconds (default: none)")


def add_generation_flags(p: argparse.ArgumentParser) -> None:
    """The generation parameters; unset flags stay unset so the servable's defaults apply."""
    p.add_argument("--system-prompt", help="system message put before each prompt")
    p.add_argument("--max-new-tokens", type=int, help="at most this many new tokens per prompt")
    p.add_argument("--min-new-tokens", type=int, help="at least this many new tokens per prompt")
    p.add_argument("--temperature", type=float, help="sampling temperature (0: greedy)")
    p.add_argument("--top-p", type=float, help="nucleus sampling: keep tokens up to this probability mass")
    p.add_argument("--top-k", type=int, help="keep only the k most likely tokens")
    p.add_argument("--repetition-penalty", type=float, help="penalty for tokens already present (1: none)")
    p.add_argument("--seed", type=int, help="random seed for sampling (sets sampling on)")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable); not included in the text")


def client_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    add_connection_flags(p)
    p.add_argument("-p", "--prompt", action="append", required=True, dest="prompts",
                   help="a prompt (repeatable); all prompts go in one call, as one batch")
    add_generation_flags(p)
    p.add_argument("--json", action="store_true", help="print a machine-readable report (JSON) instead of text")
    return p


OPTIONAL_FIELDS = ("system_prompt", "max_new_tokens", "min_new_tokens", "temperature", "top_p", "top_k",
                   "repetition_penalty", "seed")


def build_request(args: argparse.Namespace, prompts: list[str] | None = None) -> llm_pb2.GenerateRequest:
    fields = {name: getattr(args, name) for name in OPTIONAL_FIELDS if getattr(args, name, None) is not None}
    return llm_pb2.GenerateRequest(prompts=prompts if prompts is not None else args.prompts,
                                   stop=getattr(args, "stop", []), **fields)


# ---------------------------------------------------------------- the channel and errors

@dataclass
class Connection:
    url: str
    channel: grpc.Channel
    stub: llm_pb2_grpc.LLMServiceStub
    metadata: tuple[tuple[str, str], ...]

    def close(self) -> None:
        self.channel.close()


def connect(url: str, api_key: str | None = None, wait: float = CONNECT_SECONDS) -> Connection:
    """A ready channel to `url`, or ClientError naming it (at the first failed attempt, or after `wait` s)."""
    channel = grpc.insecure_channel(url)
    settled = threading.Event()
    states: list[grpc.ChannelConnectivity] = []

    def watch(state: grpc.ChannelConnectivity) -> None:
        states.append(state)
        if state in (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE):
            settled.set()

    channel.subscribe(watch, try_to_connect=True)
    settled.wait(wait)
    channel.unsubscribe(watch)
    if grpc.ChannelConnectivity.READY not in states:
        channel.close()
        why = "connection failed" if settled.is_set() else f"no connection within {wait:g} s"
        raise ClientError(f"cannot reach the server at {url} ({why})")
    metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
    return Connection(url, channel, llm_pb2_grpc.LLMServiceStub(channel), metadata)


def describe_rpc_error(error: grpc.RpcError, url: str, timeout: float | None) -> str:
    """The one line a user sees for a failed call: the server's own message where there is one."""
    code = error.code()
    details = error.details() or ""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"no complete answer from {url} within --timeout {timeout:g} s" if timeout else f"deadline exceeded ({details})"
    if code == grpc.StatusCode.UNAVAILABLE and ("connect" in details.lower() or "socket" in details.lower()):
        return f"lost the connection to the server at {url} ({details})"
    if code == grpc.StatusCode.CANCELLED:
        return f"the call was cancelled ({details})"
    return f"the server refused the request: {code.name}: {details}"


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


# ---------------------------------------------------------------- figures

FINISH = {v.number: v.name for v in llm_pb2.FinishReason.DESCRIPTOR.values}


@dataclass
class PromptResult:
    """One prompt of the call, as the client saw it. Times in ms from sending the call."""

    index: int
    prompt: str
    text: str = ""
    finish_reason: str | None = None  # None: the call ended before this prompt's final message
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    server_ttft_ms: float | None = None
    server_total_ms: float | None = None
    first_response_ms: float | None = None  # stream only: first message carrying text
    total_ms: float | None = None  # the prompt's last message
    arrivals_ms: list[float] = field(default_factory=list)  # stream only: every message's arrival
    text_responses: int = 0  # stream only: messages carrying text (each holds at least one token)

    @property
    def tokens(self) -> int | None:
        """The server's count; for a prompt cut off before its final message, its text responses (a lower bound)."""
        if self.completion_tokens is not None:
            return self.completion_tokens
        return self.text_responses or None

    def finish(self, msg, at_ms: float) -> None:
        """Take the usage fields of a Completion or of a final stream message."""
        self.finish_reason = FINISH.get(msg.finish_reason, str(msg.finish_reason))
        self.prompt_tokens = msg.prompt_tokens
        self.completion_tokens = msg.completion_tokens
        self.server_ttft_ms = msg.ttft_ms
        self.server_total_ms = msg.total_ms
        self.total_ms = at_ms


@dataclass
class Figures:
    """What the report prints for one prompt, or for the whole call."""

    tokens: int | None
    tokens_estimated: bool  # counted from text responses: the call ended before the server's count
    total_ms: float | None
    tokens_per_second: float | None
    time_per_token_ms: float | None
    responses: int | None = None
    first_response_ms: float | None = None
    average_response_ms: float | None = None


def prompt_figures(r: PromptResult, streamed: bool) -> Figures:
    """Per-token latency is the decode time over the tokens after the first: (total - first) / (tokens - 1).

    The first token's time is the client's first response for a stream, and the server's ttft_ms for a
    unary call (a unary client never sees the first token arrive).
    """
    first = r.first_response_ms if streamed else r.server_ttft_ms
    tpot = None
    if r.tokens and r.tokens > 1 and r.total_ms is not None and first is not None:
        tpot = max(r.total_ms - first, 0.0) / (r.tokens - 1)
    fig = Figures(tokens=r.tokens, tokens_estimated=r.completion_tokens is None and r.tokens is not None,
                  total_ms=r.total_ms, time_per_token_ms=tpot,
                  tokens_per_second=1000.0 / tpot if tpot else None)
    if streamed:
        gaps = [b - a for a, b in zip(r.arrivals_ms, r.arrivals_ms[1:])]
        fig.responses = len(r.arrivals_ms)
        fig.first_response_ms = r.first_response_ms
        fig.average_response_ms = sum(gaps) / len(gaps) if gaps else None
    return fig


def aggregate_figures(results: list[PromptResult], wall_ms: float, streamed: bool) -> Figures:
    """The whole call: all tokens over the call's wall time; per-token latency is the prompts' mean."""
    tokens = sum(r.tokens or 0 for r in results)
    per_prompt = [prompt_figures(r, streamed) for r in results]
    tpots = [f.time_per_token_ms for f in per_prompt if f.time_per_token_ms is not None]
    fig = Figures(tokens=tokens, tokens_estimated=any(f.tokens_estimated for f in per_prompt), total_ms=wall_ms, tokens_per_second=tokens / wall_ms * 1000 if wall_ms > 0 else None,
                  time_per_token_ms=sum(tpots) / len(tpots) if tpots else None)
    if streamed:
        firsts = [r.first_response_ms for r in results if r.first_response_ms is not None]
        gaps = [f.average_response_ms for f in per_prompt if f.average_response_ms is not None]
        fig.responses = sum(f.responses or 0 for f in per_prompt)
        fig.first_response_ms = min(firsts) if firsts else None
        fig.average_response_ms = sum(gaps) / len(gaps) if gaps else None
    return fig


# ---------------------------------------------------------------- output

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


def print_report(results: list[PromptResult], wall_ms: float, streamed: bool, out=sys.stdout) -> None:
    """Figures after the text: per prompt, and in aggregate when there are several."""
    if len(results) == 1:
        print("\n".join(report_lines(prompt_figures(results[0], streamed), streamed)), file=out)
        return
    for r in results:
        note = "" if r.finish_reason else " (unfinished)"
        print(f"-- Prompt {r.index}{note}: " + "; ".join(report_lines(prompt_figures(r, streamed), streamed)), file=out)
    print("-- All prompts (tokens/s: all tokens over the call's time; time per token: mean of the prompts):", file=out)
    print("\n".join(report_lines(aggregate_figures(results, wall_ms, streamed), streamed)), file=out)


def json_report(url: str, results: list[PromptResult], wall_ms: float, streamed: bool, interrupted: bool = False) -> str:
    prompts = []
    for r in results:
        entry = asdict(r)
        entry.pop("arrivals_ms")
        entry["figures"] = asdict(prompt_figures(r, streamed))
        prompts.append(entry)
    report = {"url": url, "rpc": "GenerateStream" if streamed else "Generate", "interrupted": interrupted,
              "prompts": prompts, "aggregate": asdict(aggregate_figures(results, wall_ms, streamed))}
    return json.dumps(report, indent=2)
