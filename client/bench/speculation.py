"""What prompt-lookup speculation buys: the servable without it and with it, loaded alike and in turns.

    python -m client.bench.speculation --serve MODEL_DIR --servable servable_stream/config.json --rounds 3

Three workloads, each as variants.py measures (A B A B, the median of per-round ratios, greedy, forced length,
every prompt of the workload once per round and server):
grounded prompts at one stream (each carries a passage of about 200-260 tokens and asks to rewrite, correct or
extract from it: grounded.txt), open questions at one stream (prompts.txt), and both mixed at 8 streams. The last
line: spec_speedup_grounded_1= spec_speedup_chat_1= spec_speedup_8= (output tok/s with speculation / without).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from client.bench import load
from client.bench.variants import Variant, measure, start
from client.connection import fail
from client.launcher import ServerFailed

GROUNDED = Path(__file__).with_name("grounded.txt")


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--serve", metavar="MODEL_DIR", required=True, help="the model both servers run")
    p.add_argument("--servable", default="servable_stream/config.json", help="the base servable (default %(default)s)")
    p.add_argument("--max-tokens", type=int, default=4, help="speculation.max_tokens of the server with it (default 4)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per workload (default 3)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="new tokens per request, forced (default 128)")
    p.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parser(prog).parse_args(argv)
    try:
        if args.rounds < 1 or args.max_tokens < 1:
            raise ValueError("--rounds and --max-tokens: positive integers")
        servable = json.loads(Path(args.servable).read_text())
        grounded, chat = load.load_prompts(GROUNDED), load.load_prompts(load.PROMPTS_FILE)
    except (OSError, ValueError) as exc:
        return fail(str(exc))
    variants = [Variant("off", {"speculation.max_tokens": "0"}),
                Variant("on", {"speculation.max_tokens": str(args.max_tokens)})]
    mixed = [p for pair in zip(grounded, chat) for p in pair]
    workloads = {"grounded_1": (grounded, 1), "chat_1": (chat, 1), "8": (mixed, 8)}
    workdir = Path(tempfile.mkdtemp(prefix="bench-speculation-"))
    figures = {}
    try:
        with ExitStack() as stack:
            servers = start(stack, variants, servable, args.serve, workdir)
            engines = {v.name: _engine_line(s.log()) for v, s in zip(variants, servers)}
            for name, (prompts, level) in workloads.items():
                print(f"workload {name}", file=sys.stderr, flush=True)
                got = measure(servers, variants, [level], args.rounds, prompts, args.max_new_tokens, len(prompts))
                figures[name] = {v.name: got[v.name][level] for v in variants}
    except ServerFailed as exc:
        return fail(exc.summary)
    for name, got in figures.items():
        print(f"{name}: off {got['off']['tokens_per_s']:.1f} tok/s, on {got['on']['tokens_per_s']:.1f} tok/s")
    if args.json:
        Path(args.json).write_text(json.dumps({"servable": args.servable, "model": args.serve, "engines": engines,
                                               "max_tokens": args.max_tokens, "figures": figures}, indent=1))
    print(" ".join(f"spec_speedup_{name}={got['on']['vs_base']:.3f}" for name, got in figures.items()), flush=True)
    return 0


def _engine_line(log: str) -> str:
    """What each server's start-up log says of its engine (its KV cache, prefix caching, speculation)."""
    return next((line.split("paged engine: ", 1)[1] for line in log.splitlines() if "paged engine: " in line), "?")


if __name__ == "__main__":
    sys.exit(main(prog="python -m client.bench.speculation"))
