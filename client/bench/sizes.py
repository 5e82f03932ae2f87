"""`make bench-sizes`: the serving benchmark on a model of the size people serve (TinyLlama-1.1B's shape, random
weights), INT8 and INT4, against openvino-genai's continuous batching and llama.cpp (Q8_0 / Q4_0); prefill speed
against llama.cpp; the server's memory beyond its weights and KV cache under a mixed load.

    python -m client.bench.sizes [--rounds 2] [--requests 16] [--max-new-tokens 64] [--json bench-sizes.json]

Steps (run from the repository; every model made once, later runs reuse it):
1. the checkpoint (checkpoints.py) under MODELS_DIR/checkpoints/, converted by download_model.py and compressed by
   compress_model.py to INT8 and INT4 (`--no-check`: random weights have no answers to check);
   with the llama.cpp peer built (`make peers`), also by the peer's tree: convert_hf_to_gguf.py --outtype f16, then
   llama-quantize to Q8_0 and Q4_0 (under the peer's directory);
2. per precision, the serving benchmark (`python -m client.bench`, its tables printed as it goes) at 1 / 8 / 16
   streams, the server in turns with genai-cb and, over HTTP, with llama.cpp's server on the matching GGUF;
3. the INT8 server on its own: a mixed load at 16 streams (mixed.py) with its RSS sampled: rss_overhead_mb_16 = the
   peak minus the weights (openvino_model.bin) and the KV cache (the size the server logs);
4. on that server, prefill in turns with llama.cpp (Q8_0): unique ~1,300-token prompts, 1 new token, at 1 and 4
   streams (prefill.py): prefill_vs_llamacpp_N = our prompt tokens/s over llama.cpp's, median of per-round ratios.
Without the peer one line says so and its figures are n/a. The last line holds exactly KEYS.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from client.bench import checkpoints, mixed, prefill
from client.bench.llamacpp import LLAMACPP, SERVER_HTTP, LlamaCpp, LlamaCppServer
from client.bench.peers import BuildFailed, quantize, source_tree, to_gguf
from client.bench.rounds import alternate
from client.connection import ClientError, fail
from client.launcher import LaunchedServer, ServerFailed

KEYS = ("size_int8_vs_genai_1", "size_int8_vs_genai_8", "size_int8_vs_genai_16", "size_int8_vs_llamacpp_1",
        "size_int8_vs_llamacpp_16", "size_int4_vs_genai_1", "size_int4_vs_genai_16", "size_int4_vs_llamacpp_1",
        "size_int4_vs_llamacpp_16", "prefill_vs_llamacpp_1", "rss_overhead_mb_16")
NAME = "llama-1.1b-random"  # the checkpoint's directory name, so its IR's: models/NAME, NAME_INT8_compressed_weights
SHAPE = "tinyllama-1.1b"
GGUF = {"int8": "Q8_0", "int4": "Q4_0"}
SUFFIX = {"int8": "_INT8_compressed_weights", "int4": "_INT4_compressed_weights"}
LEVELS = (1, 8, 16)
PREFILL_LEVELS = (1, 4)
VOCAB = 49152  # the default model's tokenizer, which the checkpoint has
START_SECONDS = 600  # a server's start on a shared machine: 1.1B weights to load (and compile)
PARTS = ("serving", "memory", "prefill")
PEER_MISSING = "llama.cpp peer not built (make peers): the vs_llamacpp figures are n/a"


def key_line(figures: dict[str, float | None]) -> str:
    """KEYS in order, each figure or n/a; MB as integers, ratios with two decimals."""
    def show(key: str, value: float | None) -> str:
        return "n/a" if value is None else f"{value:.0f}" if key.endswith("_mb_16") else f"{value:.2f}"
    return " ".join(f"{key}={show(key, figures.get(key))}" for key in KEYS)


def serving_figures(report: dict, precision: str) -> dict[str, float | None]:
    """The figures of one `python -m client.bench --json` report, named for this precision: vs genai-cb and vs
    llama.cpp per level (None where not measured)."""
    targets = report.get("targets", {})
    peer = report.get("llamacpp", {}).get("vs_llamacpp", {})
    out = {}
    for level in LEVELS:
        out[f"size_{precision}_vs_genai_{level}"] = targets.get(f"vs_genai_{level}")
        out[f"size_{precision}_vs_llamacpp_{level}"] = peer.get(str(level))
    return out


KV_LINE = re.compile(r"KV cache of \d+ blocks x \d+ tokens, \S+ \((\d+) MB\)")


def kv_cache_mb(log: str) -> float | None:
    """The KV cache's size as the server logs it at start."""
    found = KV_LINE.search(log)
    return float(found.group(1)) if found else None


def weights_mb(model_dir: Path) -> float:
    return sum(f.stat().st_size for f in Path(model_dir).glob("openvino_model*.bin")) / 1e6


def overhead_mb(peak_mb: float | None, weights: float, kv: float | None) -> float | None:
    return None if peak_mb is None or kv is None else peak_mb - weights - kv


# ---------------------------------------------------------------- the models, made once

def _step(what: str, cmd: list[str]) -> None:
    print(f"{what}: {' '.join(map(str, cmd))}", file=sys.stderr, flush=True)
    if subprocess.run([str(c) for c in cmd]).returncode != 0:
        raise ClientError(f"{what} failed (its output is above)")


def prepare(models_dir: Path, python: str = sys.executable) -> dict[str, Path]:
    """The checkpoint and its INT8 and INT4 directories, each made unless there (each step in its own process: its
    memory back after)."""
    checkpoint = models_dir / "checkpoints" / NAME
    if not (checkpoint / "config.json").is_file():
        _step("random-weight checkpoint", [python, "-m", "client.bench.checkpoints", "--shape", SHAPE, "--out",
                                           checkpoint])
    dirs = {p: models_dir / f"{NAME}{s}" for p, s in SUFFIX.items()}
    if not all((d / "modelprep.json").is_file() for d in dirs.values()):
        if not (models_dir / NAME / "modelprep.json").is_file():
            _step("FP32 IR", [python, "download_model.py", "--model", checkpoint, "--output-dir", models_dir])
        _step("INT8 and INT4", [python, "compress_model.py", "--model", NAME, "--output-dir", models_dir,
                                "--precisions", "int8,int4", "--no-check"])
    return {"checkpoint": checkpoint, **dirs}


def peer_ready(peer: LlamaCpp) -> bool:
    """The peer's tools and converter are there (`make peers` has run)."""
    return (peer.server.is_file() and peer.quantize.is_file()
            and (source_tree(peer) / "convert_hf_to_gguf.py").is_file())


def ggufs(peer: LlamaCpp, checkpoint: Path) -> dict[str, Path]:
    """The checkpoint as llama.cpp's Q8_0 and Q4_0 files, each made unless there (through one f16 GGUF, removed
    after)."""
    out = {p: peer.root / f"{NAME}-{kind}.gguf" for p, kind in GGUF.items()}
    missing = {p: path for p, path in out.items() if not path.is_file()}
    if missing:
        f16 = peer.root / f"{NAME}-f16.gguf"
        print(f"converting {checkpoint} for llama.cpp (log: {peer.log})", file=sys.stderr, flush=True)
        if not f16.is_file():
            partial = f16.with_suffix(".partial")
            to_gguf(peer, checkpoint, partial, "f16")
            partial.rename(f16)
        for precision, path in missing.items():
            quantize(peer, f16, path, GGUF[precision])
        f16.unlink()
    return out


# ---------------------------------------------------------------- the measurements

def serving(model_dir: Path, precision: str, gguf: Path | None, args, workdir: Path) -> dict[str, float | None]:
    """The serving benchmark on one directory, its output passed through; its figures for this precision."""
    report = workdir / f"serving-{precision}.json"
    cmd = [sys.executable, "-m", "client.bench", "--serve", model_dir, "--servable", args.servable,
           "--baseline", "genai-cb", "--levels", ",".join(map(str, LEVELS)), "--requests", args.requests,
           "--max-new-tokens", args.max_new_tokens, "--rounds", args.rounds, "--llamacpp", args.llamacpp,
           "--llamacpp-model", gguf or workdir / "no-peer.gguf", "--json", report]
    print(f"\n== {NAME} {precision.upper()}: the serving benchmark", flush=True)
    _step(f"the serving benchmark on {model_dir.name}", [str(c) for c in cmd])
    return serving_figures(json.loads(report.read_text()), precision)


def memory(server: LaunchedServer, model_dir: Path, args) -> dict:
    """The mixed load at 16 streams on a server fresh from its start: its RSS before, at its peak, and past the
    middle and at the end of the load (does it keep growing?)."""
    from client.bench.rss import RssSampler, breakdown_mb

    todo = mixed.requests(args.mixed_requests, seed=0, max_tokens=args.mixed_max_tokens)
    before = breakdown_mb(server.proc.pid)
    with RssSampler(server.proc.pid, interval=0.05) as rss:
        time.sleep(0.5)
        start = time.perf_counter()
        result = mixed.run(server.http_url, todo, 16)
        end = time.perf_counter()
    after = breakdown_mb(server.proc.pid)
    loaded = rss.peak_mb(start - 0.5, start)
    peak = rss.peak_mb(start, end)
    half = start + (end - start) / 2
    weights, kv = weights_mb(model_dir), kv_cache_mb(server.log())
    figures = {"requests": result.requests, "errors": result.errors, "error_messages": result.error_messages,
               "completion_tokens": result.completion_tokens, "seconds": round(end - start, 1),
               "rss_loaded_mb": loaded, "rss_peak_mb": peak, "rss_peak_first_half_mb": rss.peak_mb(start, half),
               "rss_peak_second_half_mb": rss.peak_mb(half, end), "rss_low_second_half_mb": rss.low_mb(half, end),
               "weights_mb": weights, "kv_cache_mb": kv,
               "overhead_mb": overhead_mb(peak, weights, kv), "resident_loaded_mb": before,
               "resident_after_mb": after}
    print(f"\nmixed load at 16 streams on {model_dir.name}: {result.requests} requests ({result.errors} errors), "
          f"{result.completion_tokens} tokens in {end - start:.0f} s; RSS {_mb(loaded)} MB loaded, "
          f"{_mb(peak)} MB peak (first half {_mb(figures['rss_peak_first_half_mb'])}, second "
          f"{_mb(figures['rss_peak_second_half_mb'])}, its lowest {_mb(figures['rss_low_second_half_mb'])}) for "
          f"weights {weights:.0f} MB + KV cache {_mb(kv)} MB: {_mb(figures['overhead_mb'])} MB beyond them",
          flush=True)
    for when, parts in (("loaded", before), ("after the load", after)):
        print(f"  resident {when}: " + ", ".join(f"{k.replace('_', ' ')} {v:.0f} MB" for k, v in parts.items()),
              flush=True)
    if result.errors:
        print(f"  errors: {result.error_messages}", flush=True)
    return figures


def _mb(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.0f}"


def prefill_turns(server: LaunchedServer, gguf: Path, args, stack: contextlib.ExitStack) -> dict:
    """Prefill on our server and llama.cpp's in turns, at PREFILL_LEVELS."""
    log = tempfile.NamedTemporaryFile(prefix="bench-llamacpp-", suffix=".log", delete=False).name
    print(f"starting llama.cpp's server on {gguf} (log: {log})", file=sys.stderr, flush=True)
    llama = stack.enter_context(LlamaCppServer(LlamaCpp(Path(args.llamacpp), gguf), log, max(PREFILL_LEVELS),
                                               args.prefill_tokens + 8, 1, ready_timeout=START_SECONDS))
    indices = itertools.count()  # shared: no prompt is ever sent twice, to either server
    work = dict(length=args.prefill_tokens, requests=args.prefill_requests, vocab_size=VOCAB)
    steps = [prefill.step(SERVER_HTTP, server.http_url, (), indices, **work),
             prefill.step(LLAMACPP, llama.url, (), indices, **work)]
    results = alternate(list(PREFILL_LEVELS), args.rounds, steps,
                        progress=lambda line: print(line, file=sys.stderr, flush=True))
    ratios = prefill.vs(results, SERVER_HTTP, LLAMACPP)
    per_s = {name: {level: [prefill.prompt_tokens_per_s(got[name], args.prefill_tokens) for got in rounds]
                    for level, rounds in results.items()} for name in (SERVER_HTTP, LLAMACPP)}
    print(f"\nprefill, unique {args.prefill_tokens}-token prompts, 1 new token, over HTTP, in turns "
          f"({args.rounds} rounds of {args.prefill_requests} requests):", flush=True)
    for level in PREFILL_LEVELS:
        ours, theirs = per_s[SERVER_HTTP][level], per_s[LLAMACPP][level]
        print(f"  {level} stream{'s' if level > 1 else ''}: server {_rates(ours)} prompt tok/s, llama.cpp "
              f"{_rates(theirs)}: {_ratio(ratios[level])}x", flush=True)
    return {"prompt_tokens": args.prefill_tokens, "prompt_tokens_per_s": per_s, "vs_llamacpp": ratios,
            "llamacpp_command": llama.command}


def _rates(values) -> str:
    return " / ".join("n/a" if v is None else f"{v:.0f}" for v in values)


def _ratio(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def on_int8_server(model_dir: Path, gguf: Path | None, args, with_memory: bool) -> dict:
    """One server on the INT8 directory: the memory figure first (a server fresh from its start), then prefill
    against llama.cpp on `gguf` (none: not measured)."""
    log = tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False).name
    what = ["memory under a mixed load"] * with_memory + ["prefill against llama.cpp"] * bool(gguf)
    print(f"\n== {NAME} INT8: {', then '.join(what)} (server log: {log})", flush=True)
    out = {}
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(LaunchedServer(["--config_path", args.servable, "--model", model_dir], log,
                                                    http=True, ready_timeout=START_SECONDS))
        if with_memory:
            out["memory"] = memory(server, model_dir, args)
        if gguf:
            out["prefill"] = prefill_turns(server, gguf, args, stack)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m client.bench.sizes", description=__doc__.split("\n\n")[0])
    p.add_argument("--models-dir", default="models", help="where the models are made (default %(default)s)")
    p.add_argument("--llamacpp", default="peers", help="the llama.cpp peer `make peers` built (default %(default)s)")
    p.add_argument("--servable", default="servable_stream/config.json", help="default %(default)s")
    p.add_argument("--rounds", type=int, default=2, help="rounds of every turn-taking comparison (default 2)")
    p.add_argument("--requests", type=int, default=16, help="requests per level of the serving benchmark "
                                                           "(default 16)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens per answer, forced (default 64)")
    p.add_argument("--prefill-tokens", type=int, default=1300, help="prompt length of the prefill figure "
                                                                   "(default 1300)")
    p.add_argument("--prefill-requests", type=int, default=8, help="requests per level and round of the prefill "
                                                                  "figure (default 8)")
    p.add_argument("--mixed-requests", type=int, default=200, help="requests of the mixed load (default 200)")
    p.add_argument("--mixed-max-tokens", type=int, default=256, help="the mixed load's longest answer (its answers "
                                                                      "are 1 to this many tokens; default 256)")
    p.add_argument("--only", action="append", choices=PARTS, default=[],
                   help="run only this part (repeatable; default: all); the others' figures are n/a")
    p.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    args = p.parse_args(argv)
    parts = set(args.only or PARTS)
    for flag in ("rounds", "requests", "max_new_tokens", "prefill_tokens", "prefill_requests", "mixed_requests",
                 "mixed_max_tokens"):
        if getattr(args, flag) < 1:
            return fail(f"--{flag.replace('_', '-')}: expected a positive integer, got {getattr(args, flag)}")
    if args.prefill_tokens >= 4000:
        return fail(f"--prefill-tokens: expected fewer than 4000 (the servable's prompt limit), got "
                    f"{args.prefill_tokens}")
    models_dir, peer = Path(args.models_dir), LlamaCpp(Path(args.llamacpp))
    figures: dict[str, float | None] = {}
    report: dict = {"model": NAME, "shape": SHAPE}
    try:
        made = prepare(models_dir)
        files = ggufs(peer, made["checkpoint"]) if peer_ready(peer) else {}
        if not files:
            print(PEER_MISSING, flush=True)
        if "serving" in parts:
            with tempfile.TemporaryDirectory(prefix="bench-sizes-") as tmp:
                for precision in SUFFIX:
                    figures.update(serving(made[precision], precision, files.get(precision), args, Path(tmp)))
        if parts & {"memory", "prefill"}:
            report.update(on_int8_server(made["int8"], files.get("int8") if "prefill" in parts else None, args,
                                         "memory" in parts))
        if "memory" in report:
            figures["rss_overhead_mb_16"] = report["memory"]["overhead_mb"]
        if "prefill" in report:
            figures.update({f"prefill_vs_llamacpp_{n}": r for n, r in report["prefill"]["vs_llamacpp"].items()})
    except ServerFailed as exc:
        return fail(exc.summary)
    except (ClientError, BuildFailed, OSError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return fail("interrupted")
    if args.json:
        Path(args.json).write_text(json.dumps({**report, "figures": figures}, indent=1))
    print(key_line(figures), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
