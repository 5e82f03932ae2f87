"""What structured output costs: the same prompts with and without a JSON schema, on one server, in turns.

    python -m client.bench.structured --serve MODEL_DIR --levels 1,8 --rounds 3

At each level, round after round, the free level then the constrained one (rounds.py: A B A B), the same prompts
and request count, greedy, up to --max-new-tokens (min_new_tokens as the serving benchmark's; a constrained answer
ends where its JSON does). Every constrained answer is parsed and validated against the schema. The last line:
json_tpot_ratio_1= json_tpot_ratio_8= (TPOT p50 constrained / free, the median of per-round ratios)
json_valid=V/C (of the C answers whose JSON was complete, V validate) json_cut=K (answers --max-new-tokens cut).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from client.bench import load
from client.bench.rounds import alternate, median
from client.connection import ClientError, add_connection_flags, connect, fail
from client.launcher import LaunchedServer, ServerFailed

# What a JSON answer usually looks like: strings, a bounded list, a nested object, an enum. No maxLength: a bounded
# string costs llguidance about ten times as much per mask (a walk of the whole vocabulary instead of its slices).
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["topic", "summary", "facts", "meta"],
          "properties": {"topic": {"type": "string"}, "summary": {"type": "string"},
                         "facts": {"type": "array", "maxItems": 3, "items": {"type": "string"}},
                         "meta": {"type": "object", "additionalProperties": False, "required": ["difficulty"],
                                  "properties": {"difficulty": {"enum": ["easy", "medium", "hard"]}}}}}
LEVELS = (1, 8)  # the levels the last line names


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_connection_flags(p)
    p.set_defaults(timeout=600.0)
    p.add_argument("--serve", metavar="MODEL_DIR", help="start a server on this model for the run (--url is ignored)")
    p.add_argument("--servable", default="servable_stream/config.json", help="servable for --serve (default %(default)s)")
    p.add_argument("--levels", default="1,8", help="concurrency levels, comma-separated (default 1,8)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per level, free then constrained (default 3)")
    p.add_argument("--requests", type=int, default=8, help="requests per level and round, rounded up to a multiple "
                                                           "of the level (default 8)")
    load.add_workload_flags(p, "new tokens per request at most (default 128)")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parser(prog).parse_args(argv)
    try:
        levels = sorted({int(x) for x in args.levels.split(",") if x.strip()})
        if not levels or min(levels) < 1 or args.rounds < 1 or args.requests < 1:
            raise ValueError("--levels, --rounds and --requests: positive integers")
        prompts = load.load_prompts(Path(args.prompts))
    except (OSError, ValueError) as exc:
        return fail(str(exc))
    try:
        if args.serve:
            log = tempfile.NamedTemporaryFile(prefix="bench-structured-", suffix=".log", delete=False).name
            print(f"starting the server on {args.serve} (log: {log})", file=sys.stderr, flush=True)
            with LaunchedServer(["--config_path", args.servable, "--model", args.serve], log) as server:
                figures = measure(server.address, args, levels, prompts)
        else:
            connect(args.url, args.api_key).close()  # fails with one line naming the URL
            figures = measure(args.url, args, levels, prompts)
    except ServerFailed as exc:
        return fail(exc.summary)
    except ClientError as exc:
        return fail(str(exc))
    for level in levels:
        f = figures["levels"][level]
        print(f"level {level}: TPOT p50 free {_ms(f['free_tpot_ms'])}, json {_ms(f['json_tpot_ms'])}, "
              f"ratio {_num(f['tpot_ratio'])}")
    if args.json:
        Path(args.json).write_text(json.dumps({"schema": SCHEMA, "levels": levels, "rounds": args.rounds,
                                               "max_new_tokens": args.max_new_tokens, **figures}, indent=1))
    ratios = " ".join(f"json_tpot_ratio_{n}={_num(figures['levels'].get(n, {}).get('tpot_ratio'))}" for n in LEVELS)
    print(f"{ratios} json_valid={figures['valid']}/{figures['complete']} "
          f"json_cut={figures['answers'] - figures['complete']}", flush=True)
    return 0


def measure(url: str, args, levels: list[int], prompts: list[str]) -> dict:
    metadata = (("authorization", f"Bearer {args.api_key}"),) if args.api_key else ()
    schema = json.dumps(SCHEMA)
    answers: list[str] = []

    def step(name: str, json_schema: str | None):
        def run(level: int, r: int) -> dict:
            cfg = load.LoadConfig(url=url, prompts=prompts, tokens=args.max_new_tokens, levels=[level],
                                  requests=args.requests, warmup=1 if r == 0 else 0, timeout=args.timeout,
                                  metadata=metadata, json_schema=json_schema)
            result = load.run_protocols([cfg], progress=lambda line: None)[0][0]
            if result.requests == 0 and result.errors:
                raise ClientError(f"every request failed: {result.error_messages[0]}")
            if json_schema is not None:
                answers.extend(t.text for t in result.timings)
            return {name: result}
        return run

    results = alternate(levels, args.rounds, [step("free", None), step("json", schema)],
                        progress=lambda line: print(line, file=sys.stderr, flush=True))
    out = {}
    for level in levels:
        rounds = results[level]
        out[level] = {"free_tpot_ms": median(got["free"].tpot_ms.p50 for got in rounds),
                      "json_tpot_ms": median(got["json"].tpot_ms.p50 for got in rounds),
                      "tpot_ratio": median(got["json"].tpot_ms.p50 / got["free"].tpot_ms.p50
                                           if got["json"].tpot_ms.p50 and got["free"].tpot_ms.p50 else None
                                           for got in rounds),
                      "json_tokens_mean": median(sum(t.tokens for t in got["json"].timings) / len(got["json"].timings)
                                                 for got in rounds if got["json"].timings)}
    checked = [check(a) for a in answers]
    return {"levels": out, "answers": len(answers), "complete": sum(c is not None for c in checked),
            "valid": sum(c is True for c in checked)}


def check(text: str) -> bool | None:
    """None: the JSON is not complete (the grammar admits only valid JSON, so only a cut answer fails to parse);
    else whether it follows SCHEMA (jsonschema where installed, else that it is an object)."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    try:
        import jsonschema
    except ImportError:
        return isinstance(value, dict)
    return jsonschema.Draft202012Validator(SCHEMA).is_valid(value)


def _ms(v) -> str:
    return "n/a" if v is None else f"{v:.2f} ms"


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


if __name__ == "__main__":
    sys.exit(main(prog="python -m client.bench.structured"))
