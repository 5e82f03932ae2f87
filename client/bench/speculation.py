"""What prompt-lookup speculation buys: the servable without it and with it, loaded alike and in turns.
(With it, the server also runs three compiled copies, `scheduler.graphs` 3, as docs/operations.md advises.)

    python -m client.bench.speculation --serve MODEL_DIR --servable servable_stream/config.json --rounds 3

Three workloads, each as variants.py measures (A B A B, the median of per-round ratios, greedy, forced length,
every prompt of the workload once per round and server):
grounded prompts at one stream (each carries a passage of about 200-260 tokens and asks to rewrite, correct or
extract from it: grounded.txt), open questions at one stream (prompts.txt), and both mixed at 8 streams. Then, when
`make peers` has built llama.cpp's server (llamacpp.py), the grounded prompts at one stream on it and on the server
with speculation, in turns, the same client on both (the prompts as token ids on /v1/completions, end of sequence
ignored). The last line: spec_speedup_grounded_1= spec_speedup_chat_1= spec_speedup_8= (output tok/s with
speculation / without) and vs_llamacpp_1= (with speculation / llama.cpp's, n/a when it is not built).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

from client.bench import load
from client.bench.llamacpp import (LLAMACPP, NOT_BUILT, PEERS_DIR, SERVER_HTTP, LlamaCpp, LlamaCppServer,
                                   completions, render, vs_llamacpp)
from client.bench.rounds import alternate, median
from client.bench.variants import Variant, measure, start
from client.connection import ClientError, fail
from client.launcher import ServerFailed

GROUNDED = Path(__file__).with_name("grounded.txt")


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--serve", metavar="MODEL_DIR", required=True, help="the model both servers run")
    p.add_argument("--servable", default="servable_stream/config.json", help="the base servable (default %(default)s)")
    p.add_argument("--max-tokens", type=int, default=4, help="speculation.max_tokens of the server with it (default 4)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per workload (default 3)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="new tokens per request, forced (default 128)")
    p.add_argument("--llamacpp", metavar="DIR", default=str(PEERS_DIR),
                   help="where `make peers` built llama.cpp's server (default %(default)s; skipped if not built)")
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
                Variant("on", {"speculation.max_tokens": str(args.max_tokens), "scheduler.graphs": "3"})]
    mixed = [p for pair in zip(grounded, chat) for p in pair]
    workloads = {"grounded_1": (grounded, 1), "chat_1": (chat, 1), "8": (mixed, 8)}
    workdir = Path(tempfile.mkdtemp(prefix="bench-speculation-"))
    peer = LlamaCpp(Path(args.llamacpp))
    figures, vs_peer = {}, None
    try:
        with ExitStack() as stack:
            servers = start(stack, variants, servable, args.serve, workdir, http=peer.built())
            engines = {v.name: _engine_line(s.log()) for v, s in zip(variants, servers)}
            for name, (prompts, level) in workloads.items():
                print(f"workload {name}", file=sys.stderr, flush=True)
                got = measure(servers, variants, [level], args.rounds, prompts, args.max_new_tokens, len(prompts))
                figures[name] = {v.name: got[v.name][level] for v in variants}
            if peer.built():
                vs_peer = against_llamacpp(stack, peer, servers[1].http_url, grounded, args, workdir)
            else:
                print(NOT_BUILT, file=sys.stderr, flush=True)
    except ServerFailed as exc:
        return fail(exc.summary)
    except (ClientError, load.RequestFailed) as exc:
        return fail(str(exc))
    for name, got in figures.items():
        print(f"{name}: off {got['off']['tokens_per_s']:.1f} tok/s, on {got['on']['tokens_per_s']:.1f} tok/s")
    if vs_peer:
        print(f"grounded_1 over /v1/completions: on {vs_peer['server_tokens_per_s']:.1f} tok/s, "
              f"llama.cpp {vs_peer['llamacpp_tokens_per_s']:.1f} tok/s")
    if args.json:
        Path(args.json).write_text(json.dumps({"servable": args.servable, "model": args.serve, "engines": engines,
                                               "max_tokens": args.max_tokens, "figures": figures,
                                               "llamacpp": vs_peer}, indent=1))
    ratio = vs_peer["vs_llamacpp"] if vs_peer else None
    print(" ".join(f"spec_speedup_{name}={got['on']['vs_base']:.3f}" for name, got in figures.items())
          + f" vs_llamacpp_1={'n/a' if ratio is None else f'{ratio:.3f}'}", flush=True)
    return 0


def against_llamacpp(stack: ExitStack, peer: LlamaCpp, http_url: str, prompts: list[str], args, workdir: Path) -> dict:
    """The grounded prompts at one stream, our server with speculation and llama.cpp's in turns: the same token ids
    on /v1/completions. Its figures: each one's median tok/s and the median of per-round ratios."""
    ids = render(http_url, prompts)
    log = workdir / "llamacpp.log"
    print(f"starting llama.cpp's server on {peer.gguf} (log {log})", file=sys.stderr, flush=True)
    llama = stack.enter_context(LlamaCppServer(peer, log, 1, max(map(len, ids)), args.max_new_tokens))
    workload = dict(tokens=args.max_new_tokens, requests=len(ids), warmup=1, timeout=600)
    results = alternate([1], args.rounds, [completions(SERVER_HTTP, http_url, (), ids, **workload),
                                           completions(LLAMACPP, llama.url, (), ids, **workload)],
                        progress=lambda line: print(line, file=sys.stderr, flush=True))
    per_round = results[1]
    return {"command": llama.command, "vs_llamacpp": vs_llamacpp(results)[1],
            "server_tokens_per_s": median(r[SERVER_HTTP].output_tokens_per_s for r in per_round),
            "llamacpp_tokens_per_s": median(r[LLAMACPP].output_tokens_per_s for r in per_round),
            "rounds": [{name: r[name].output_tokens_per_s for name in (SERVER_HTTP, LLAMACPP)} for r in per_round]}


def _engine_line(log: str) -> str:
    """What each server's start-up log says of its engine (its KV cache, prefix caching, speculation)."""
    return next((line.split("paged engine: ", 1)[1] for line in log.splitlines() if "paged engine: " in line), "?")


if __name__ == "__main__":
    sys.exit(main(prog="python -m client.bench.speculation"))
