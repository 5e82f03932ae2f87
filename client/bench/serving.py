"""Load a running server with concurrent streams and compare it with the model run in this process.

    python -m client.bench --url localhost:9000 --model models/smollm2-135m-instruct --baseline inprocess --json bench.json
    python -m client.bench --serve models/smollm2-135m-instruct_INT8_compressed_weights --baseline genai
    python -m client.bench --serve MODEL_DIR --baseline genai-cb --raw-step --rates 0.5,1,2 --rounds 3
    python -m client.bench --serve MODEL_DIR --protocol grpc --protocol openai   # HTTP against gRPC, in turns

Rounds (--rounds N, default 1; `make bench` runs 3): at each level, round after round, the raw step (before the
lowest level only), the server's level, then genai-cb's (rounds.py): the same prompts, request count and new tokens,
genai-cb and the raw step loaded once up front, the server kept running. The other baselines (inprocess, genai) run
once, after. Every ratio of the last line is the median of its per-round ratios (tpot_ratio_vs_inprocess: of the
per-round server against the one in-process run), the server-only figures the median of their per-round values; the
per-level tables, the plot and the JSON's `server`/`baselines` pool the rounds (every request's timings, tokens over
the summed wall time); the JSON's `rounds` keeps each round's figures.

Prints a table per level (TTFT p50/p90/p99, TPOT, inter-token latency, end-to-end, requests/s, tokens/s),
the baselines beside the server with the ratio server/baseline, the open loop per rate (--rates), and last
one line: tpot_ratio_vs_inprocess=X ttft_overhead_ms=Y speedup_8_vs_1=Z followed by client/bench/targets.py's
figures (vs_genai_1= vs_genai_8= vs_genai_16= tok_s_16_over_8= ttft_p50_vs_genai_8= ttft_p90_over_p50_8= tpot_vs_raw_step_1= open_ttft_p99_ms_1= rss_peak_mb_8=).

The llama.cpp peer (llamacpp.py), when `make peers` has built it (else one line says it is skipped): its server on a
free port, as many slots as the highest level, the server's own HTTP API beside it, each taking its turn after genai-cb
in every round, on the same prompts (rendered by the server's /tokenize, sent as token ids to /v1/completions, end of
sequence ignored); the last line adds vs_llamacpp_N= (the server's tokens/s over llama.cpp's, median of per-round
ratios) per level.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from client.bench import load, openloop, plot, report, targets
from client.bench.llamacpp import (LLAMACPP, NOT_BUILT, PEERS_DIR, SERVER_HTTP, LlamaCpp, LlamaCppServer,
                                   completions, render, vs_llamacpp)
from client.bench.load import LevelResult
from client.bench.rounds import Results, alternate, median_fields, pool, series
from client.connection import ClientError, add_connection_flags, connect, fail
from client.launcher import LaunchedServer, ServerFailed

SERVABLE = Path("servable_stream") / "config.json"  # relative to the current directory: run from the repository


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    add_connection_flags(p)
    p.set_defaults(timeout=600.0)
    p.add_argument("--protocol", action="append", choices=("grpc", "openai"), default=[],
                   help="grpc (GenerateStream, default) or openai (streamed /v1/chat/completions over HTTP); "
                        "give both to compare them on one server, taking turns round by round")
    p.add_argument("--http-url", default="http://localhost:8000",
                   help="the OpenAI-compatible API for --protocol openai (default http://localhost:8000)")
    p.add_argument("--serve", metavar="MODEL_DIR",
                   help="start the server on this model for the run (a free port; --url is ignored), stop it after")
    p.add_argument("--servable", default=str(SERVABLE),
                   help=f"servable config for --serve; its ov_config also configures the in-process baselines "
                        f"(default {SERVABLE}, relative to the current directory)")
    p.add_argument("--server-log", help="where --serve writes the server's log (default: a temporary file)")
    p.add_argument("--prompts", default=str(load.PROMPTS_FILE), help="prompt file, one per line (default: the package's own)")
    p.add_argument("--levels", default="1,2,4,8", help="concurrency levels, comma-separated (default 1,2,4,8)")
    p.add_argument("--requests", type=int, default=16, help="requests per level, rounded up to a multiple of the level (default 16)")
    p.add_argument("--max-new-tokens", type=int, default=128,
                   help="new tokens per request, fixed: min_new_tokens = max_new_tokens (default 128)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up requests before measuring (default 2)")
    p.add_argument("--rounds", type=int, default=1,
                   help="rounds per level, each the server's level then genai-cb's (the raw step first): the ratios "
                        "are medians of per-round ratios (default 1)")
    p.add_argument("--baseline", action="append", choices=("inprocess", "genai", "genai-cb"), default=[],
                   help="also run in this process on the same model: inprocess (optimum-intel's "
                        "OVModelForCausalLM.generate on the --servable's ov_config, batches of N prompts), "
                        "genai (openvino-genai LLMPipeline) or genai-cb (openvino-genai ContinuousBatchingPipeline "
                        "fed by closed-loop streams, as the server); repeatable")
    p.add_argument("--raw-step", action="store_true",
                   help="time one raw infer step of the server's compiled paged model (1 sequence, ~100 tokens "
                        "of context) in this process, for tpot_vs_raw_step_1")
    p.add_argument("--rates", help="also an open loop on the server: Poisson arrivals at these request rates "
                                   "(requests/s, comma-separated), after the closed-loop levels")
    p.add_argument("--open-requests", type=int, default=20, help="requests per open-loop rate (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the open loop's arrival times (default 0)")
    p.add_argument("--model", help="model directory for the baselines (default: the --serve directory)")
    p.add_argument("--device", default="CPU", help="OpenVINO device for the baselines (default CPU)")
    p.add_argument("--llamacpp", metavar="DIR", default=str(PEERS_DIR),
                   help="the llama.cpp peer `make peers` built (default %(default)s): measured beside the server over "
                        "HTTP in every round when it is there")
    p.add_argument("--llamacpp-model", metavar="FILE.gguf",
                   help="the GGUF llama.cpp's server runs (default: the default model's Q8_0, from `make peers`)")
    p.add_argument("--json", metavar="FILE", help="write every figure and per-request timing as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="draw TTFT, TPOT and throughput against concurrency")
    return p


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parser(prog).parse_args(argv)
    try:
        levels = sorted({int(x) for x in args.levels.split(",") if x.strip()})
        if not levels or min(levels) < 1:
            raise ValueError
    except ValueError:
        return fail(f"--levels: expected positive integers separated by commas, got {args.levels!r}")
    try:
        rates = openloop.parse_rates(args.rates) if args.rates is not None else []
    except ValueError as exc:
        return fail(f"--rates: {exc}")
    if args.rounds < 1:
        return fail(f"--rounds: expected a positive integer, got {args.rounds}")
    protocols = list(dict.fromkeys(args.protocol or ["grpc"]))
    model_dir = args.model or args.serve
    if (args.baseline or args.raw_step) and not model_dir:
        return fail("--baseline and --raw-step need the model directory: --model DIR (or --serve DIR)")
    try:
        prompts = load.load_prompts(Path(args.prompts))
    except (OSError, ValueError) as exc:
        return fail(f"--prompts: {exc}")
    ov_config = {}
    if args.serve or args.baseline or args.raw_step:  # what reads the servable
        try:
            servable = json.loads(Path(args.servable).read_text())
        except (OSError, ValueError) as exc:
            return fail(f"--servable: {exc}")
        from server.engine.precision import runtime_options

        # The options the server compiles with (f32 on CPUs under the servable's): the openvino-genai baselines
        # would otherwise run OpenVINO's bf16 default on CPUs that have it, other numerics than the server's.
        ov_config = runtime_options(args.device, servable.get("ov_config", {}), servable.get("batch_invariant", False))
    raw = None
    if args.raw_step:
        from client.bench.raw_step import RawStep

        try:
            raw = RawStep(model_dir, ov_config, args.device)
        except RuntimeError as exc:
            return fail(f"--raw-step: {exc}")
    peer = LlamaCpp(Path(args.llamacpp), Path(args.llamacpp_model) if args.llamacpp_model else None)
    if not peer.built():
        print(NOT_BUILT, flush=True)
        peer = None
    names = list(dict.fromkeys(args.baseline))
    baselines: dict[str, list[LevelResult]] = {}
    titles: dict[str, str] = {}
    try:
        # Up front and kept through the rounds: it takes turns with the server.
        cb = _baseline("genai-cb", model_dir, ov_config, args) if "genai-cb" in names else None
        with contextlib.ExitStack() as stack:
            pid = None
            if args.serve:
                log = args.server_log or _temp_log("bench-server-")
                print(f"starting the server on {args.serve} (log: {log})", file=sys.stderr)
                server = stack.enter_context(LaunchedServer(["--config_path", args.servable, "--model", args.serve],
                                                            log, http="openai" in protocols or peer is not None))
                args.url, args.http_url, pid = server.address, server.http_url or args.http_url, server.proc.pid
            llama = start_peer(peer, args, prompts, levels, stack) if peer else None
            run = measure(args, prompts, levels, rates, protocols, raw, cb, pid, llama)
        if cb:
            titles["genai-cb"], baselines["genai-cb"] = f"{cb.title} ({cb.mode})", pooled(run.results, "genai-cb")
        raw = cb = None  # their memory back before the other baselines load
        for name in names:
            engine = None if name == "genai-cb" else _baseline(name, model_dir, ov_config, args)
            if engine is None:
                continue
            titles[name] = f"{engine.title} ({engine.mode})"
            from client.bench.baselines import run_levels

            baselines[name] = run_levels(engine, prompts, args.max_new_tokens, levels, max(args.requests, 1),
                                         args.warmup, progress=_progress)
            del engine
        baselines = {name: baselines[name] for name in names if name in baselines}  # in the order asked
    except ServerFailed as exc:
        return fail(exc.summary)
    except (ClientError, RuntimeError, load.RequestFailed) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return fail("interrupted")

    by_protocol = {protocol: pooled(run.results, name) for protocol, name in zip(protocols, run.names)}
    server_results = by_protocol[protocols[0]]
    server_rounds = series(run.results, run.names[0])
    summary, goals, per_round = figures(server_rounds, series(run.results, "genai-cb"),
                                        [r[0] if r else None for r in series(run.results, "raw_step")],
                                        baselines.get("inprocess"), run.open_results, run.rss_peak_mb)
    matches = report.same_texts(server_results, baselines.get("inprocess"))
    matches_cb = report.same_texts(server_results, baselines.get("genai-cb"))
    report.print_report(args, by_protocol, baselines, titles, matches, matches_cb, run.rss_peak_mb, run.open_results,
                        goals.raw_step_ms)
    peer_line, peer_json = "", {}
    if llama:
        ours, theirs, vs = pooled(run.results, SERVER_HTTP), pooled(run.results, LLAMACPP), vs_llamacpp(run.results)
        print(f"Baseline llama.cpp's server ({peer.gguf.name}, -np {max(levels)}) against the server, both over HTTP: "
              f"/v1/completions, the same token ids, end of sequence ignored, taking turns")
        print(report.baseline_table(ours, theirs) + "\n", flush=True)
        peer_line = "".join(f" vs_llamacpp_{level}={'n/a' if r is None else f'{r:.2f}'}" for level, r in vs.items())
        peer_json = {"llamacpp": {"command": llama.server.command, "server_http": [asdict(r) for r in ours],
                                  "llamacpp": [asdict(r) for r in theirs], "vs_llamacpp": vs}}
    if args.json:
        engines = dict.fromkeys(name for per_round in run.results.values() for got in per_round for name in got)
        Path(args.json).write_text(json.dumps({
            "config": {"url": args.url, "protocols": protocols,
                       "http_url": args.http_url if "openai" in protocols else None, "served_model": args.serve, "baseline_model": model_dir, "levels": levels,
                       "requests_per_level": args.requests, "max_new_tokens": args.max_new_tokens,
                       "min_new_tokens": args.max_new_tokens, "warmup": args.warmup, "rounds": args.rounds,
                       "prompts": prompts},
            "server": [asdict(r) for r in server_results],  # the first protocol's
            "protocols": {name: [asdict(r) for r in res] for name, res in by_protocol.items()},
            "openai_vs_grpc": report.protocol_ratios(by_protocol),
            "baselines": {name: [asdict(r) for r in res] for name, res in baselines.items()},
            "greedy_text_matches_inprocess_at_1": matches,
            "greedy_text_matches_genai_cb_at_1": matches_cb,
            "server_rss_peak_mb": run.rss_peak_mb,
            "open_loop": {"requests_per_rate": args.open_requests, "seed": args.seed,
                          "rates": [asdict(r) for r in run.open_results]},
            "raw_step_ms": goals.raw_step_ms,
            "summary": asdict(summary),
            "targets": asdict(goals),
            "rounds": [{**{name: [_without_timings(f) for f in series(run.results, name)[r]] for name in engines},
                        "summary": asdict(s), "targets": asdict(t)} for r, (s, t) in enumerate(per_round)],
            **peer_json,
        }, indent=1))
    if args.plot:
        plot.plot(args.plot, server_results, baselines,
                   f"{Path(model_dir or args.url).name}: {args.max_new_tokens} new tokens per request")
    ratios = report.protocol_ratios(by_protocol)
    if ratios:
        print(" ".join(f"openai_vs_grpc_tpot_at_{level}={r['tpot_ratio']:.3f}" for level, r in ratios.items()
                       if r["tpot_ratio"] is not None), flush=True)
    print(f"{summary.line()} {goals.line()}{peer_line}", flush=True)
    return 0


def figures(server: list[list[LevelResult]], genai_cb: list[list[LevelResult]] | None,
            raw_steps: list[float | None] | None, inprocess: list[LevelResult] | None, open_results: list,
            rss_peak_mb: dict[int, float | None]):
    """The summary and the targets from the rounds (per round: the server's levels, genai-cb's, the raw step), each
    figure the median of its per-round values, a ratio taken within a round where the engines ran side by side;
    the open loop and the RSS peaks were measured once. Also the per-round (summary, targets), for the JSON."""
    genai_cb = genai_cb or [None] * len(server)
    raw_steps = raw_steps or [None] * len(server)
    per_round = [(report.summarize(s, inprocess), targets.compute(s, cb, raw, None, {}))
                 for s, cb, raw in zip(server, genai_cb, raw_steps)]
    summary = median_fields([s for s, _ in per_round], keep=("top_level",))
    once = targets.compute([], None, None, open_results, rss_peak_mb)
    goals = replace(median_fields([t for _, t in per_round]), open_ttft_p99_ms_1=once.open_ttft_p99_ms_1,
                    rss_peak_mb_8=once.rss_peak_mb_8)
    return summary, goals, per_round


def pooled(results: Results, name: str) -> list[LevelResult]:
    """`name`'s figures per level, its rounds pooled."""
    return [pool(list(rounds)) for rounds in zip(*series(results, name))]


def _without_timings(figure):
    """A round's figure for the JSON: the pooled levels already hold every request."""
    return figure if not isinstance(figure, LevelResult) else {
        k: v for k, v in asdict(figure).items() if k != "timings"}


def _baseline(name: str, model_dir: str, ov_config: dict, args):
    """A baseline loaded, or None (one line saying so) where its package (an optional peer) is not installed."""
    from client.bench import baselines as base
    from server.config import ConfigError

    try:
        return base.load(name, model_dir, ov_config, args.device, args.servable)
    except ImportError as exc:
        print(f"skipping baseline {name}: {exc}", flush=True)
        return None
    except ConfigError as exc:
        raise ClientError(f"--servable: {exc}") from None


def _temp_log(prefix: str) -> str:
    return tempfile.NamedTemporaryFile(prefix=prefix, suffix=".log", delete=False).name


@dataclass
class Peer:
    server: LlamaCppServer
    prompt_ids: list[list[int]]  # the prompts rendered by our server's chat template, for both


def start_peer(peer: LlamaCpp, args, prompts: list[str], levels: list[int], stack: contextlib.ExitStack) -> Peer:
    """llama.cpp's server, up until `stack` closes, sized for the run: a slot per stream of the highest level, each
    with room for the longest prompt and its answer."""
    ids = render(args.http_url, prompts, _metadata(args))
    log = _temp_log("bench-llamacpp-")
    print(f"starting llama.cpp's server on {peer.gguf} (log: {log})", file=sys.stderr)
    server = stack.enter_context(LlamaCppServer(peer, log, max(levels), max(map(len, ids)), args.max_new_tokens))
    return Peer(server, ids)


def _metadata(args) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {args.api_key}"),) if args.api_key else ()


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class Measured:
    results: Results  # level -> round -> engine name (server or the protocols, genai-cb, raw_step) -> its figure
    names: list[str]  # the server's, one per protocol
    rss_peak_mb: dict[int, float | None]
    open_results: list


def measure(args, prompts: list[str], levels: list[int], rates: list[float], protocols: list[str], raw=None,
            cb=None, pid: int | None = None, llama: Peer | None = None) -> Measured:
    """The closed-loop levels in rounds (the server's RSS peak per level when `pid` is ours), then the open loop over
    gRPC."""
    from client.bench.rss import RssSampler

    metadata = _metadata(args)
    if "grpc" in protocols:
        connect(args.url, args.api_key).close()  # fails with one line naming the URL
    if "openai" in protocols:
        check_http(args.http_url, metadata)
    names = ["server"] if len(protocols) == 1 else protocols
    windows: dict[int, list[tuple[float, float]]] = {}  # when the server ran each level

    def server(level: int, r: int) -> dict:
        cfgs = [load.LoadConfig(url=args.url, prompts=prompts, tokens=args.max_new_tokens, levels=[level],
                                requests=args.requests, warmup=0 if windows else args.warmup, timeout=args.timeout,
                                metadata=metadata, protocol=protocol, http_url=args.http_url) for protocol in protocols]
        start = time.perf_counter()
        results = load.run_protocols(cfgs, progress=lambda line: None)  # protocols in turns within the level
        if not windows:  # the first level: a server that answers nothing stops the run there
            for res in results:
                if res[0].requests == 0 and res[0].errors:
                    raise ClientError(f"every request failed: {res[0].error_messages[0]}")
        windows.setdefault(level, []).append((start, time.perf_counter()))
        return {name: res[0] for name, res in zip(names, results)}

    steps = [server]
    if raw:  # right before the server's lowest level (one stream): less drift between the two
        steps.insert(0, lambda level, r: {"raw_step": raw.measure()} if level == levels[0] else {})
    if cb:
        cb.closed_loop(prompts, args.max_new_tokens, 1, max(args.warmup, 1))  # its warm-up
        steps.append(lambda level, r: {"genai-cb": cb.closed_loop(prompts, args.max_new_tokens, level,
                                                                  load.requests_at(level, args.requests))})
    if llama:
        workload = dict(tokens=args.max_new_tokens, requests=args.requests, warmup=args.warmup, timeout=args.timeout)
        steps += [completions(SERVER_HTTP, args.http_url, metadata, llama.prompt_ids, **workload),
                  completions(LLAMACPP, llama.server.url, (), llama.prompt_ids, **workload)]
    with RssSampler(pid) if pid else contextlib.nullcontext() as rss:
        results = alternate(levels, args.rounds, steps, progress=_progress)
    peaks = {level: max((mb for start, end in windows[level] if (mb := rss.peak_mb(start, end)) is not None),
                        default=None) for level in levels} if rss else {}
    opened = []
    if rates:
        cfg = load.LoadConfig(url=args.url, prompts=prompts, tokens=args.max_new_tokens, levels=[], requests=0,
                              warmup=0, timeout=args.timeout, metadata=metadata)  # the levels warmed it up
        opened = openloop.run(cfg, rates, max(args.open_requests, 1), args.seed, progress=_progress)
    return Measured(results, names, peaks, opened)


def check_http(url: str, metadata) -> None:
    import httpx

    try:
        response = httpx.get(f"{url}/v1/models", headers=dict(metadata), timeout=10)
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach the HTTP API at {url} ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise ClientError(f"the HTTP API at {url} answered {response.status_code}: {response.text[:200]}")
