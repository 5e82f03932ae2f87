"""Multi-turn chat, the load prefix caching is for: N concurrent conversations of T turns sharing a long system
prompt, each turn sending the whole history with the previous answers as returned; first-token time per turn,
on the servable (prefix caching on), the same with it off, and openvino-genai's ContinuousBatchingPipeline with
its prefix caching, in turns round after round.

    python -m client.bench.chat --serve MODEL_DIR --servable servable_stream/config.json \\
        --conversations 8 --turns 4 --tokens 64 --rounds 3 --json bench-prefix.json

Each round puts a fresh nonce at the start of the system prompt, so no round reuses another's cache while the
conversations of one round share it. Every answer has exactly `tokens` tokens, greedy, so the engines' histories
have the same lengths.

Both engines are timed alike: a turn's clock starts before its history is rendered and stops at its first token,
and it waits behind the step in flight. Ours is the gRPC client's clock (transport and the server's rendering
included); genai runs in process as a server drives it (genai_cb.GenAICB.chat: a stepping thread, one thread per
conversation), its clock stopping when the step that brought the first token returns. The server's own
first-token time (its final message's ttft_ms, from the call's arrival in the engine) is kept beside ours.

The last line: prefix_ttft_ratio (p50 first-token time on turns >= 2, on / off), prefix_hit_rate (cached / prompt
tokens on turns >= 2, on), vs_genai_prefix (genai's p50 / ours by the client's clock, turns >= 2) and
vs_genai_prefix_server (the same over the server's own clock), each the median of its per-round values.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

from client.bench import load
from client.bench.load import ChatTurn, percentile
from client.bench.rounds import median
from client.connection import fail
from client.launcher import LaunchedServer, ServerFailed
from proto import llm_pb2, llm_pb2_grpc

SYSTEM_PROMPT_FILE = Path(__file__).with_name("system_prompt.txt")


def user_turns(prompts: list[str], conversations: int, turns: int) -> list[list[str]]:
    """Conversation c's turn t asks prompts[(c + 5t) % len]: the conversations differ from their first turn."""
    return [[prompts[(c + 5 * t) % len(prompts)] for t in range(turns)] for c in range(conversations)]


def history(questions: list[str], answers: list[str]) -> tuple[tuple[str, str], ...]:
    """(role, content) pairs: each question, then its answer where there is one."""
    pairs = []
    for i, q in enumerate(questions):
        pairs.append(("user", q))
        if i < len(answers):
            pairs.append(("assistant", answers[i]))
    return tuple(pairs)


def server_chat(address: str, system: str, questions: list[list[str]], tokens: int) -> list[ChatTurn]:
    """Every conversation on its own thread, closed loop: turn t+1 goes when turn t's answer is complete."""
    with grpc.insecure_channel(address) as channel:
        stub = llm_pb2_grpc.LLMServiceStub(channel)

        def conversation(c: int) -> list[ChatTurn]:
            answers: list[str] = []
            done = []
            for t in range(len(questions[c])):
                start, first, pieces, final = time.perf_counter(), None, [], None
                messages = [llm_pb2.Message(role=r, content=m) for r, m in history(questions[c][:t + 1], answers)]
                request = llm_pb2.GenerateRequest(conversations=[llm_pb2.Conversation(messages=messages)],
                                                  system_prompt=system, max_new_tokens=tokens, min_new_tokens=tokens,
                                                  do_sample=False)
                for m in stub.GenerateStream(request, timeout=600):
                    first = first or time.perf_counter()
                    pieces.append(m.text)
                    final = m if m.finish_reason else final
                answers.append("".join(pieces))
                done.append(ChatTurn(c, t + 1, (first - start) * 1000, final.prompt_tokens, final.cached_tokens,
                                     answers[-1], final.ttft_ms))
            return done

        with ThreadPoolExecutor(len(questions)) as pool:
            return [turn for turns in pool.map(conversation, range(len(questions))) for turn in turns]


@dataclass
class Round:
    system: str
    turns: dict[str, list[ChatTurn]]  # per engine


def measure(run: dict, questions, tokens: int, rounds: int, progress) -> list[Round]:
    """`rounds` rounds of every engine in turn (on, off, genai), each round with a fresh system prompt."""
    system = SYSTEM_PROMPT_FILE.read_text().strip()
    for chat in run.values():  # warm-up: first compilations and allocations stay out of the figures
        chat(f"[warm-up {uuid.uuid4().hex[:8]}] {system}", [questions[0][:1]], 4)
    results = []
    for r in range(rounds):
        fresh = f"[session {uuid.uuid4().hex[:8]}] {system}"
        results.append(Round(fresh, {name: chat(fresh, questions, tokens) for name, chat in run.items()}))
        progress(f"round {r + 1}/{rounds}: " + ", ".join(
            f"{name} p50 first token on turns >= 2: {p50_later(turns):.0f} ms" for name, turns in results[-1].turns.items()))
    return results


def p50_later(turns: list[ChatTurn], server: bool = False) -> float | None:
    """p50 first-token time on turns >= 2, by the client's clock or (`server`) the server's own; None if the
    engine has no such clock."""
    times = [t.server_ttft_ms if server else t.ttft_ms for t in turns if t.turn >= 2]
    return percentile(times, 50) if times and None not in times else None


def vs_genai(results: list[Round], server: bool = False) -> float | None:
    """genai's p50 first-token time on turns >= 2 over ours (caching on; ours by the client's clock or the
    server's), the median of the per-round ratios; None without genai."""
    return median(p50_later(r.turns["genai"]) / p50_later(r.turns["on"], server)
                  for r in results if "genai" in r.turns and p50_later(r.turns["on"], server))


def hit_rate(turns: list[ChatTurn]) -> float | None:
    prompt = sum(t.prompt_tokens for t in turns)
    return sum(t.cached_tokens or 0 for t in turns) / prompt if prompt else None


def reachable_rate(r: Round, questions: list[list[str]], tokenizer) -> float | None:
    """Cached tokens over what the cache could hold on turns >= 2: the tokens each prompt shares with the
    previous turn's prompt followed by its answer's tokens, less the answer's last one (never computed), and
    never the prompt's last token. Below 1: the template re-rendered the history differently from what was
    generated, or blocks were evicted."""
    from server.engine.model import render
    from server.engine.types import Message

    def ids(c: int, n: int, answers: list[str]) -> list[int]:
        messages = tuple(Message(*m) for m in history(questions[c][:n], answers[:n - 1]))
        return tokenizer(render(tokenizer, messages, r.system), add_special_tokens=False)["input_ids"]

    answers = {}
    for t in sorted(r.turns["on"], key=lambda t: (t.conversation, t.turn)):
        answers.setdefault(t.conversation, []).append(t.answer)
    cached = reachable = 0
    for t in r.turns["on"]:
        if t.turn < 2:
            continue
        mine = answers[t.conversation]
        seen = ids(t.conversation, t.turn - 1, mine) + tokenizer(mine[t.turn - 2], add_special_tokens=False)["input_ids"]
        now = ids(t.conversation, t.turn, mine)
        shared = next((i for i, (a, b) in enumerate(zip(seen, now)) if a != b), min(len(seen), len(now)))
        reachable += min(shared, len(seen) - 1, len(now) - 1)
        cached += t.cached_tokens or 0
    return cached / reachable if reachable else None


def figures(results: list[Round]) -> dict:
    names = list(results[0].turns)
    turns = max(t.turn for t in results[0].turns["on"])

    def at(name: str, n: int) -> list[ChatTurn]:
        return [t for r in results for t in r.turns[name] if t.turn == n]

    return {
        "prefix_ttft_ratio": median(p50_later(r.turns["on"]) / p50_later(r.turns["off"]) for r in results),
        "prefix_hit_rate": median(hit_rate([t for t in r.turns["on"] if t.turn >= 2]) for r in results),
        "vs_genai_prefix": vs_genai(results),
        "vs_genai_prefix_server": vs_genai(results, server=True),
        "turn1_hit_rate": median(hit_rate([t for t in r.turns["on"] if t.turn == 1]) for r in results),
        # Pooled over the rounds, per engine and turn.
        "p50_ttft_ms_per_turn": {name: {n: percentile([t.ttft_ms for t in at(name, n)], 50)
                                        for n in range(1, turns + 1)} for name in names},
        "p50_server_ttft_ms_per_turn": {name: {n: percentile([t.server_ttft_ms for t in at(name, n)], 50)
                                               for n in range(1, turns + 1)}
                                        for name in names if all(t.server_ttft_ms is not None for t in at(name, 1))},
        "prompt_tokens_per_turn": {name: {n: sum(t.prompt_tokens for t in at(name, n)) / len(at(name, n))
                                          for n in range(1, turns + 1)} for name in names},
    }


def report(got: dict) -> None:
    columns = {f"{name} p50 ms": per_turn for name, per_turn in got["p50_ttft_ms_per_turn"].items()}
    columns.update({f"{name} server ms": per_turn for name, per_turn in got["p50_server_ttft_ms_per_turn"].items()})
    print(f"{'turn':>4} {'prompt tokens':>13} " + " ".join(f"{title:>15}" for title in columns))
    for n, tokens in got["prompt_tokens_per_turn"]["on"].items():
        print(f"{n:>4} {tokens:>13.0f} " + " ".join(f"{per_turn[n]:>15.1f}" for per_turn in columns.values()))
    print(f"turn-1 hit rate (the shared system prompt): {got['turn1_hit_rate']:.3f}; "
          f"hits of what the history could give: {_show(got['prefix_hit_of_reachable'])}")
    print(f"prefix_ttft_ratio={got['prefix_ttft_ratio']:.3f} prefix_hit_rate={got['prefix_hit_rate']:.3f} "
          f"vs_genai_prefix={_show(got['vs_genai_prefix'])} "
          f"vs_genai_prefix_server={_show(got['vs_genai_prefix_server'])}", flush=True)


def _show(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--serve", metavar="MODEL_DIR", required=True, help="the model the servers and genai run")
    p.add_argument("--servable", default="servable_stream/config.json", help="the servable (default %(default)s)")
    p.add_argument("--conversations", type=int, default=8, help="concurrent conversations (default 8)")
    p.add_argument("--turns", type=int, default=4, help="turns per conversation (default 4)")
    p.add_argument("--tokens", type=int, default=64, help="new tokens per answer, forced (default 64)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of every engine in turn (default 3)")
    p.add_argument("--no-genai", action="store_true", help="our server only, caching on and off")
    p.add_argument("--prompts", default=str(load.PROMPTS_FILE), help="user turns, one per line")
    p.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parser(prog).parse_args(argv)
    if min(args.conversations, args.turns, args.tokens, args.rounds) < 1:
        return fail("--conversations, --turns, --tokens and --rounds: positive integers")
    if args.turns < 2:
        return fail("--turns: at least 2 (the figures are over turns >= 2)")
    try:
        servable = json.loads(Path(args.servable).read_text())
        prompts = load.load_prompts(Path(args.prompts))
    except (OSError, ValueError) as exc:
        return fail(str(exc))
    questions = user_turns(prompts, args.conversations, args.turns)
    workdir = Path(tempfile.mkdtemp(prefix="bench-chat-"))
    try:
        with ExitStack() as stack:
            run = {}
            for name, caching in (("on", True), ("off", False)):
                config = workdir / f"{name}.json"
                config.write_text(json.dumps({**servable, "kv_cache": {**servable.get("kv_cache", {}),
                                                                       "prefix_caching": caching}}))
                print(f"starting the server, prefix caching {name} (log {workdir / name}.log)", file=sys.stderr,
                      flush=True)
                server = stack.enter_context(LaunchedServer(["--config_path", config, "--model", args.serve],
                                                            workdir / f"{name}.log"))
                run[name] = lambda system, q, n, address=server.address: server_chat(address, system, q, n)
                if name == "on":
                    block_size = int(re.search(r"blocks x (\d+) tokens", server.log()).group(1))
            if not args.no_genai:
                from client.bench.genai_cb import GenAICB

                cb = GenAICB.for_servable(args.serve, servable, prefix_caching=True)
                run["genai"] = lambda system, q, n: cb.chat(system, q, n, history)
            results = measure(run, questions, args.tokens, args.rounds,
                              lambda line: print(line, file=sys.stderr, flush=True))
    except ServerFailed as exc:
        return fail(exc.summary)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.serve)
    got = figures(results)
    got["prefix_hit_of_reachable"] = median(reachable_rate(r, questions, tokenizer) for r in results)
    report(got)
    if args.json:
        Path(args.json).write_text(json.dumps({"servable": args.servable, "model": args.serve,
                                               "conversations": args.conversations, "turns": args.turns,
                                               "tokens": args.tokens, "block_size": block_size, "figures": got,
                                               "rounds": [{k: [asdict(t) for t in v] for k, v in r.turns.items()}
                                                          for r in results]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m client.bench.chat"))
