"""One servable against variants of itself: servers that differ only in some `ov_config` options (or servable keys,
dotted: `kv_cache.prefix_caching:false`), loaded alike and in
turns (A B C, A B C, ... at each level), each variant's figure the median of its per-round ratios to the first
server, so the drift of a shared machine touches them alike.

    python -m client.bench.variants --serve MODEL_DIR --servable servable_unary/config.json \\
        --variant kv_u8=KV_CACHE_PRECISION:u8 --variant bf16=INFERENCE_PRECISION_HINT:bf16 --levels 8,16

The last line: NAME_vs_base_LEVEL=RATIO (output tokens/s of the variant over the servable as it is) per variant and
level.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from client.bench import load
from client.bench.rounds import alternate, median
from client.connection import fail
from client.launcher import LaunchedServer, ServerFailed


@dataclass
class Variant:
    name: str
    options: dict[str, str]  # ov_config options over the servable's; a dotted key: SECTION.KEY of the servable

    def servable(self, base: dict) -> dict:
        """The base servable with this variant's options over it."""
        out = {**base, "ov_config": dict(base.get("ov_config", {}))}
        for key, value in self.options.items():
            section, dot, name = key.partition(".")
            if dot:  # a servable key: its value as JSON (false, 8, "text")
                out[section] = {**out.get(section, {}), name: _json(value)}
            else:
                out["ov_config"][key] = value
        return out


def _json(value: str):
    try:
        return json.loads(value)
    except ValueError:
        return value


def parse_variant(text: str) -> Variant:
    """NAME=KEY:VALUE[,KEY:VALUE...]"""
    name, sep, rest = text.partition("=")
    pairs = [p.partition(":") for p in rest.split(",")] if sep else []
    if not name.strip() or not pairs or any(not k.strip() or not c or not v.strip() for k, c, v in pairs):
        raise ValueError(f"expected NAME=KEY:VALUE[,KEY:VALUE...], got {text!r}")
    return Variant(name.strip(), {k.strip(): v.strip() for k, _, v in pairs})


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--serve", metavar="MODEL_DIR", required=True, help="the model every server runs")
    p.add_argument("--servable", default="servable_unary/config.json", help="the base servable (default %(default)s)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=KEY:VALUE[,KEY:VALUE]",
                   help="a server whose ov_config has these options over the servable's (a dotted KEY: a servable "
                        "key, e.g. kv_cache.prefix_caching:false); repeatable")
    p.add_argument("--levels", default="8,16", help="concurrency levels, comma-separated (default 8,16)")
    p.add_argument("--rounds", type=int, default=4, help="rounds per level; a round sends each stream one request "
                                                         "to each server in turn (default 4)")
    load.add_workload_flags(p)
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parser(prog).parse_args(argv)
    try:
        variants = [Variant("base", {})] + [parse_variant(v) for v in args.variant]
        levels = sorted({int(x) for x in args.levels.split(",") if x.strip()})
        if not levels or min(levels) < 1 or args.rounds < 1:
            raise ValueError("--levels and --rounds: positive integers")
        servable = json.loads(Path(args.servable).read_text())
        prompts = load.load_prompts(Path(args.prompts))
    except (OSError, ValueError) as exc:
        return fail(str(exc))
    if len(variants) < 2:
        return fail("give at least one --variant")
    workdir = Path(tempfile.mkdtemp(prefix="bench-variants-"))
    try:
        with ExitStack() as stack:
            servers = start(stack, variants, servable, args.serve, workdir)
            numerics = {v.name: _numerics(s.log()) for v, s in zip(variants, servers)}
            figures = measure(servers, variants, levels, args.rounds, prompts, args.max_new_tokens)
    except ServerFailed as exc:
        return fail(exc.summary)
    report(variants, levels, figures, numerics)
    if args.json:
        Path(args.json).write_text(json.dumps({"servable": args.servable, "model": args.serve, "numerics": numerics,
                                               "variants": {v.name: v.options for v in variants},
                                               "figures": figures}, indent=1))
    return 0


def start(stack: ExitStack, variants: list[Variant], servable: dict, model: str, workdir: Path,
          http: bool = False) -> list[LaunchedServer]:
    """A server per variant, each with its servable and log in `workdir` (and its HTTP API if `http`), stopped when
    `stack` closes."""
    servers = []
    for v in variants:
        config = workdir / f"{v.name}.json"
        config.write_text(json.dumps(v.servable(servable)))
        print(f"starting {v.name} ({v.options or 'the servable as it is'}; log {workdir / v.name}.log)",
              file=sys.stderr, flush=True)
        servers.append(stack.enter_context(LaunchedServer(["--config_path", config, "--model", model],
                                                          workdir / f"{v.name}.log", http=http)))
    return servers


def measure(servers, variants, levels, rounds, prompts, tokens, requests: int = 0) -> dict:
    """Per variant and level: tokens/s per round, and the median of per-round ratios to the base server.
    `requests` per round and server (0: one per stream), rounded up to a multiple of the level."""
    def step(server, name):
        def run(level: int, r: int) -> dict:
            cfg = load.LoadConfig(url=server.address, prompts=prompts, tokens=tokens, levels=[level],
                                  requests=load.requests_at(level, requests or level),
                                  warmup=1 if r == 0 else 0, timeout=600)
            return {name: load.run_protocols([cfg], progress=lambda line: None)[0][0]}
        return run

    results = alternate(levels, rounds, [step(s, v.name) for s, v in zip(servers, variants)],
                        progress=lambda line: print(line, file=sys.stderr, flush=True))
    figures: dict = {v.name: {} for v in variants}
    for level in levels:
        per_round = [[got[v.name].output_tokens_per_s for v in variants] for got in results[level]]
        for i, v in enumerate(variants):
            figures[v.name][level] = {
                "tokens_per_s": median(row[i] for row in per_round),
                "vs_base": median(row[i] / row[0] if row[0] else None for row in per_round),
                "rounds": [row[i] for row in per_round],
            }
    return figures


def report(variants, levels, figures, numerics) -> None:
    print(f"{'variant':<12} {'numerics':<72} " + " ".join(f"{f'tok/s@{n}':>9} {f'vs base@{n}':>10}" for n in levels))
    for v in variants:
        cells = " ".join(f"{figures[v.name][n]['tokens_per_s']:>9.0f} {figures[v.name][n]['vs_base']:>10.3f}"
                         for n in levels)
        print(f"{v.name:<12} {numerics[v.name]:<72} {cells}")
    print(" ".join(f"{v.name}_vs_base_{n}={figures[v.name][n]['vs_base']:.3f}" for v in variants[1:] for n in levels),
          flush=True)


def _numerics(log: str) -> str:
    """What the server's start-up log says it runs with."""
    for line in log.splitlines():
        if "numerics: " in line:
            return line.split("numerics: ", 1)[1].split(";")[0].split(" (")[0]
    return "?"


if __name__ == "__main__":
    sys.exit(main(prog="python -m client.bench.variants"))
