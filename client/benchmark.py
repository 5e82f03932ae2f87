"""Load a running server with concurrent streams and compare it with the model run in this process.

    python client/benchmark.py --url localhost:9000 --baseline inprocess --json bench.json --plot bench.png
    python client/benchmark.py --serve models/smollm2-135m-instruct_INT8_compressed_weights --baseline genai
    python client/benchmark.py --serve MODEL_DIR --baseline genai-cb --raw-step --rates 0.5,1,2
    python client/benchmark.py --serve MODEL_DIR --protocol grpc --protocol openai   # HTTP against gRPC, in turns

Prints a table per level (TTFT p50/p90/p99, TPOT, inter-token latency, end-to-end, requests/s, tokens/s),
the baselines beside the server with the ratio server/baseline, the open loop per rate (--rates), and last
one line: tpot_ratio_vs_inprocess=X ttft_overhead_ms=Y speedup_8_vs_1=Z followed by client/targets.py's
figures (vs_genai_1= vs_genai_8= ttft_p90_over_p50_8= tpot_vs_raw_step_1= open_ttft_p99_ms_1= rss_peak_mb_8=).
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

from client import bench, openloop, targets
from client.connection import ClientError, add_connection_flags, connect, fail

ROOT = Path(__file__).resolve().parents[1]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_connection_flags(p)
    p.set_defaults(timeout=600.0)
    p.add_argument("--protocol", action="append", choices=("grpc", "openai"), default=[],
                   help="grpc (GenerateStream, default) or openai (streamed /v1/chat/completions over HTTP); "
                        "give both to compare them on one server, taking turns round by round")
    p.add_argument("--http-url", default="http://localhost:8000",
                   help="the OpenAI-compatible API for --protocol openai (default http://localhost:8000)")
    p.add_argument("--serve", metavar="MODEL_DIR",
                   help="start the server on this model for the run (a free port; --url is ignored), stop it after")
    p.add_argument("--servable", default=str(ROOT / "servable_stream" / "config.json"),
                   help="servable config for --serve; its ov_config also configures the in-process baseline")
    p.add_argument("--server-log", help="where --serve writes the server's log (default: a temporary file)")
    p.add_argument("--prompts", default=str(bench.PROMPTS_FILE), help="prompt file, one per line")
    p.add_argument("--levels", default="1,2,4,8", help="concurrency levels, comma-separated (default 1,2,4,8)")
    p.add_argument("--requests", type=int, default=16, help="requests per level, rounded up to a multiple of the level (default 16)")
    p.add_argument("--max-new-tokens", type=int, default=128,
                   help="new tokens per request, fixed: min_new_tokens = max_new_tokens (default 128)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up requests before measuring (default 2)")
    p.add_argument("--baseline", action="append", choices=("inprocess", "genai", "genai-cb"), default=[],
                   help="also run in this process on the same model: inprocess (OVModelForCausalLM.generate), "
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


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
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
        prompts = bench.load_prompts(Path(args.prompts))
    except (OSError, ValueError) as exc:
        return fail(f"--prompts: {exc}")
    try:
        ov_config = json.loads(Path(args.servable).read_text()).get("ov_config", {})
    except (OSError, ValueError) as exc:
        return fail(f"--servable: {exc}")
    raw_step_ms = None
    if args.raw_step:  # first, right before the server's one-stream level: less drift between the two
        from client import raw_step

        try:
            raw_step_ms = raw_step.measure(model_dir, ov_config, args.device)
        except RuntimeError as exc:
            return fail(f"--raw-step: {exc}")
        _progress(f"raw step: {raw_step_ms:.2f} ms (1 sequence, ~100 tokens of context)")
    try:
        if args.serve:
            log = args.server_log or tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False).name
            print(f"starting the server on {args.serve} (log: {log})", file=sys.stderr)
            with bench.StartedServer(args.serve, args.servable, log, http="openai" in protocols) as server:
                args.url, args.http_url = server.url, server.http_url or args.http_url
                by_protocol, rss_peak_mb, open_results = measure(args, prompts, levels, rates, protocols,
                                                                 server.proc.pid)
        else:
            by_protocol, rss_peak_mb, open_results = measure(args, prompts, levels, rates, protocols)
    except (ClientError, RuntimeError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return fail("interrupted")

    baselines: dict[str, list[bench.LevelResult]] = {}
    titles: dict[str, str] = {}
    for name in dict.fromkeys(args.baseline):
        from client import baselines as base

        try:
            engine = base.load(name, model_dir, ov_config, args.device)
        except ImportError as exc:  # an optional peer `make setup` does not install
            print(f"skipping baseline {name}: {exc}", flush=True)
            continue
        titles[name] = f"{engine.title} ({engine.mode})"
        baselines[name] = base.run_levels(engine, prompts, args.max_new_tokens, levels,
                                          max(args.requests, 1), args.warmup, progress=_progress)
        del engine

    server_results = by_protocol[protocols[0]]
    summary = bench.summarize(server_results, baselines.get("inprocess"))
    goals = targets.compute(server_results, baselines.get("genai-cb"), raw_step_ms, open_results, rss_peak_mb)
    matches = same_texts(server_results, baselines.get("inprocess"))
    matches_cb = same_texts(server_results, baselines.get("genai-cb"))
    report(args, by_protocol, baselines, titles, matches, matches_cb, rss_peak_mb, open_results, raw_step_ms)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "config": {"url": args.url, "protocols": protocols,
                       "http_url": args.http_url if "openai" in protocols else None, "served_model": args.serve, "baseline_model": model_dir, "levels": levels,
                       "requests_per_level": args.requests, "max_new_tokens": args.max_new_tokens,
                       "min_new_tokens": args.max_new_tokens, "warmup": args.warmup, "prompts": prompts},
            "server": [asdict(r) for r in server_results],  # the first protocol's
            "protocols": {name: [asdict(r) for r in res] for name, res in by_protocol.items()},
            "openai_vs_grpc": protocol_ratios(by_protocol),
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
        bench.plot(args.plot, server_results, baselines,
                   f"{Path(model_dir or args.url).name}: {args.max_new_tokens} new tokens per request")
    ratios = protocol_ratios(by_protocol)
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
    from client.rss import RssSampler

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
        cfg = bench.LoadConfig(url=args.url, prompts=prompts, tokens=args.max_new_tokens, levels=[], requests=0,
                               warmup=0, timeout=args.timeout, metadata=conn.metadata)  # the levels warmed it up
        opened = openloop.run(cfg, rates, max(args.open_requests, 1), args.seed, progress=_progress)
    return by_protocol, peaks, opened


def measure_server(args, prompts: list[str], levels: list[int], protocols: list[str],
                   progress=_progress) -> dict[str, list[bench.LevelResult]]:
    metadata = (("authorization", f"Bearer {args.api_key}"),) if args.api_key else ()
    if "grpc" in protocols:
        connect(args.url, args.api_key).close()  # fails with one line naming the URL
    if "openai" in protocols:
        check_http(args.http_url, metadata)
    cfgs = [bench.LoadConfig(url=args.url, prompts=prompts, tokens=args.max_new_tokens, levels=levels,
                             requests=args.requests, warmup=args.warmup, timeout=args.timeout, metadata=metadata,
                             protocol=protocol, http_url=args.http_url) for protocol in protocols]
    by_protocol = dict(zip(protocols, bench.run_protocols(cfgs, progress=progress)))
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


def protocol_ratios(by_protocol: dict[str, list]) -> dict[int, dict] | None:
    """Per level: HTTP (openai) against gRPC, TPOT and TTFT p50 ratios and tokens/s."""
    if not {"grpc", "openai"} <= set(by_protocol):
        return None
    grpc_levels = {r.concurrency: r for r in by_protocol["grpc"]}
    out = {}
    for h in by_protocol["openai"]:
        g = grpc_levels[h.concurrency]
        ratio = h.tpot_ms.p50 / g.tpot_ms.p50 if h.tpot_ms.p50 and g.tpot_ms.p50 else None
        ttft = h.ttft_ms.p50 / g.ttft_ms.p50 if h.ttft_ms.p50 and g.ttft_ms.p50 else None
        out[h.concurrency] = {"tpot_ratio": ratio, "ttft_ratio": ttft, "grpc_tpot_ms": g.tpot_ms.p50,
                              "openai_tpot_ms": h.tpot_ms.p50, "grpc_tok_s": g.output_tokens_per_s,
                              "openai_tok_s": h.output_tokens_per_s}
    return out


def same_texts(server: list[bench.LevelResult], baseline: list[bench.LevelResult] | None) -> dict | None:
    """Greedy output through the server against a baseline's, prompt by prompt, at one stream."""
    one = next((r for r in server if r.concurrency == 1), None)
    base = next((r for r in baseline or [] if r.concurrency == 1), None)
    if not one or not base:
        return None
    mine = {t.prompt_index: t.text for t in base.timings}
    pairs = [(t.text, mine[t.prompt_index]) for t in one.timings if t.prompt_index in mine]
    return {"identical": sum(a == b for a, b in pairs), "compared": len(pairs)}


def report(args, by_protocol, baselines, titles, matches, matches_cb, rss_peak_mb, open_results,
           raw_step_ms) -> None:
    for protocol, results in by_protocol.items():
        how = (f"{args.url}: GenerateStream" if protocol == "grpc"
               else f"{args.http_url}: streamed /v1/chat/completions (OpenAI, HTTP)")
        print(f"\nServer {how}, one prompt per request, {args.max_new_tokens} new tokens "
              f"(min = max), greedy; closed loop, {args.requests} requests per level")
        print(bench.server_table(results))
        for r in results:
            for message in r.error_messages:
                print(f"  concurrency {r.concurrency}: {message}")
    server = next(iter(by_protocol.values()))
    ratios = protocol_ratios(by_protocol)
    if ratios:
        print("\nHTTP (openai) against gRPC on the same server, taking turns round by round:")
        print(f"{'conc':>4}  {'TPOT ms grpc/http':>17}  {'ratio':>5}  {'TTFT ratio':>10}  {'tok/s grpc/http':>15}")
        for level, r in ratios.items():
            tpot = f"{bench._n(r['grpc_tpot_ms'])}/{bench._n(r['openai_tpot_ms'])}"
            toks = f"{r['grpc_tok_s']:.1f}/{r['openai_tok_s']:.1f}"
            print(f"{level:>4}  {tpot:>17}  {bench._n(r['tpot_ratio'], 3):>5}  {bench._n(r['ttft_ratio'], 2):>10}  "
                  f"{toks:>15}")
    if rss_peak_mb:
        print("server RSS peak (sampled every 50 ms): " +
              ", ".join(f"{level}: {'-' if mb is None else f'{mb:.0f} MB'}" for level, mb in rss_peak_mb.items()))
    if open_results:
        print(f"\nOpen loop on the server: Poisson arrivals (seed {args.seed}), {args.open_requests} requests per "
              f"rate; in flight: the most at once; done/s: requests / (first send -> last answer)")
        print(openloop.table(open_results))
    for name, results in baselines.items():
        print(f"\nBaseline {name}: {titles[name]}")
        print(bench.baseline_table(server, results))
    if raw_step_ms is not None:
        one = next((r for r in server if r.concurrency == 1), None)
        print(f"\nOne raw infer step of the compiled paged model (1 sequence, ~100 tokens of context): "
              f"{raw_step_ms:.2f} ms; server TPOT p50 at one stream: "
              f"{'-' if not one or one.tpot_ms.p50 is None else f'{one.tpot_ms.p50:.2f} ms'}")
    if matches:
        print(f"\nGreedy text through the server = in-process at one stream: {matches['identical']}/{matches['compared']}")
    if matches_cb:
        print(f"Greedy text through the server = genai-cb at one stream: "
              f"{matches_cb['identical']}/{matches_cb['compared']}")
    print(flush=True)


if __name__ == "__main__":
    sys.exit(main())
