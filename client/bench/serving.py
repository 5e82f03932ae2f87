"""Load a running server with concurrent streams and compare it with the model run in this process.

    python -m client.bench --url localhost:9000 --model models/smollm2-135m-instruct --baseline inprocess --json bench.json
    python -m client.bench --serve models/smollm2-135m-instruct_INT8_compressed_weights --baseline genai
    python -m client.bench --serve MODEL_DIR --baseline genai-cb --raw-step --rates 0.5,1,2
    python -m client.bench --serve MODEL_DIR --protocol grpc --protocol openai   # HTTP against gRPC, in turns

Prints a table per level (TTFT p50/p90/p99, TPOT, inter-token latency, end-to-end, requests/s, tokens/s),
the baselines beside the server with the ratio server/baseline, the open loop per rate (--rates), and last
one line: tpot_ratio_vs_inprocess=X ttft_overhead_ms=Y speedup_8_vs_1=Z followed by client/bench/targets.py's
figures (vs_genai_1= vs_genai_8= vs_genai_16= tok_s_16_over_8= ttft_p50_vs_genai_8= ttft_p90_over_p50_8= tpot_vs_raw_step_1= open_ttft_p99_ms_1= rss_peak_mb_8=).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from client.bench import load, openloop, plot, report, targets
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
    raw_step_ms = None
    if args.raw_step:  # first, right before the server's one-stream level: less drift between the two
        from client.bench import raw_step

        try:
            raw_step_ms = raw_step.measure(model_dir, ov_config, args.device)
        except RuntimeError as exc:
            return fail(f"--raw-step: {exc}")
        _progress(f"raw step: {raw_step_ms:.2f} ms (1 sequence, ~100 tokens of context)")
    try:
        if args.serve:
            log = args.server_log or tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False).name
            print(f"starting the server on {args.serve} (log: {log})", file=sys.stderr)
            with LaunchedServer(["--config_path", args.servable, "--model", args.serve], log,
                                http="openai" in protocols) as server:
                args.url, args.http_url = server.address, server.http_url or args.http_url
                by_protocol, rss_peak_mb, open_results = measure(args, prompts, levels, rates, protocols,
                                                                 server.proc.pid)
        else:
            by_protocol, rss_peak_mb, open_results = measure(args, prompts, levels, rates, protocols)
    except ServerFailed as exc:
        return fail(exc.summary)
    except (ClientError, RuntimeError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return fail("interrupted")

    baselines: dict[str, list[load.LevelResult]] = {}
    titles: dict[str, str] = {}
    for name in dict.fromkeys(args.baseline):
        from client.bench import baselines as base
        from server.config import ConfigError

        try:
            engine = base.load(name, model_dir, ov_config, args.device, args.servable)
        except ImportError as exc:  # an optional peer `make setup` does not install
            print(f"skipping baseline {name}: {exc}", flush=True)
            continue
        except ConfigError as exc:
            return fail(f"--servable: {exc}")
        titles[name] = f"{engine.title} ({engine.mode})"
        baselines[name] = base.run_levels(engine, prompts, args.max_new_tokens, levels,
                                          max(args.requests, 1), args.warmup, progress=_progress)
        if hasattr(engine, "close"):
            engine.close()
        del engine

    server_results = by_protocol[protocols[0]]
    summary = report.summarize(server_results, baselines.get("inprocess"))
    goals = targets.compute(server_results, baselines.get("genai-cb"), raw_step_ms, open_results, rss_peak_mb)
    matches = report.same_texts(server_results, baselines.get("inprocess"))
    matches_cb = report.same_texts(server_results, baselines.get("genai-cb"))
    report.print_report(args, by_protocol, baselines, titles, matches, matches_cb, rss_peak_mb, open_results, raw_step_ms)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "config": {"url": args.url, "protocols": protocols,
                       "http_url": args.http_url if "openai" in protocols else None, "served_model": args.serve, "baseline_model": model_dir, "levels": levels,
                       "requests_per_level": args.requests, "max_new_tokens": args.max_new_tokens,
                       "min_new_tokens": args.max_new_tokens, "warmup": args.warmup, "prompts": prompts},
            "server": [asdict(r) for r in server_results],  # the first protocol's
            "protocols": {name: [asdict(r) for r in res] for name, res in by_protocol.items()},
            "openai_vs_grpc": report.protocol_ratios(by_protocol),
            "baselines": {name: [asdict(r) for r in res] for name, res in baselines.items()},
            "greedy_text_matches_inprocess_at_1": matches,
            "greedy_text_matches_genai_cb_at_1": matches_cb,
            "server_rss_peak_mb": rss_peak_mb,
            "open_loop": {"requests_per_rate": args.open_requests, "seed": args.seed,
                          "rates": [asdict(r) for r in open_results]},
            "raw_step_ms": raw_step_ms,
            "summary": asdict(summary),
            "targets": asdict(goals),
        }, indent=1))
    if args.plot:
        plot.plot(args.plot, server_results, baselines,
                   f"{Path(model_dir or args.url).name}: {args.max_new_tokens} new tokens per request")
    ratios = report.protocol_ratios(by_protocol)
    if ratios:
        print(" ".join(f"openai_vs_grpc_tpot_at_{level}={r['tpot_ratio']:.3f}" for level, r in ratios.items()
                       if r["tpot_ratio"] is not None), flush=True)
    print(f"{summary.line()} {goals.line()}", flush=True)
    return 0


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def measure(args, prompts: list[str], levels: list[int], rates: list[float], protocols: list[str],
            pid: int | None = None):
    """The closed-loop levels per protocol (with the server's RSS peak per level when `pid` is ours), then the
    open loop over gRPC."""
    from client.bench.rss import RssSampler

    ends: dict[int, float] = {}  # when each level's last progress line came

    def progress(line: str) -> None:
        level = int(line.split("concurrency ")[1].split(":")[0])
        ends[level] = time.perf_counter()
        _progress(line)

    with RssSampler(pid) if pid else contextlib.nullcontext() as rss:
        by_protocol = measure_server(args, prompts, levels, protocols, progress)
        walls = {level: sum(r.wall_s for res in by_protocol.values() for r in res if r.concurrency == level)
                 for level in levels}
        peaks = {level: rss.peak_mb(ends[level] - walls[level], ends[level]) for level in levels} if rss else {}
    opened = []
    if rates:
        conn = connect(args.url, args.api_key)
        conn.close()
        cfg = load.LoadConfig(url=args.url, prompts=prompts, tokens=args.max_new_tokens, levels=[], requests=0,
                               warmup=0, timeout=args.timeout, metadata=conn.metadata)  # the levels warmed it up
        opened = openloop.run(cfg, rates, max(args.open_requests, 1), args.seed, progress=_progress)
    return by_protocol, peaks, opened


def measure_server(args, prompts: list[str], levels: list[int], protocols: list[str],
                   progress=_progress) -> dict[str, list[load.LevelResult]]:
    metadata = (("authorization", f"Bearer {args.api_key}"),) if args.api_key else ()
    if "grpc" in protocols:
        connect(args.url, args.api_key).close()  # fails with one line naming the URL
    if "openai" in protocols:
        check_http(args.http_url, metadata)
    cfgs = [load.LoadConfig(url=args.url, prompts=prompts, tokens=args.max_new_tokens, levels=levels,
                             requests=args.requests, warmup=args.warmup, timeout=args.timeout, metadata=metadata,
                             protocol=protocol, http_url=args.http_url) for protocol in protocols]
    by_protocol = dict(zip(protocols, load.run_protocols(cfgs, progress=progress)))
    for results in by_protocol.values():
        failed = [r for r in results if r.errors]
        if failed and all(r.requests == 0 for r in results):
            raise ClientError(f"every request failed: {failed[0].error_messages[0]}")
    return by_protocol


def check_http(url: str, metadata) -> None:
    import httpx

    try:
        response = httpx.get(f"{url}/v1/models", headers=dict(metadata), timeout=10)
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach the HTTP API at {url} ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise ClientError(f"the HTTP API at {url} answered {response.status_code}: {response.text[:200]}")
