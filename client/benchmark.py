"""Load a running server with concurrent streams and compare it with the model run in this process.

    python client/benchmark.py --url localhost:9000 --baseline inprocess --json bench.json --plot bench.png
    python client/benchmark.py --serve models/smollm2-135m-instruct_INT8_compressed_weights --baseline genai
    python client/benchmark.py --serve MODEL_DIR --protocol grpc --protocol openai   # HTTP against gRPC, in turns

Prints a table per level (TTFT p50/p90/p99, TPOT, inter-token latency, end-to-end, requests/s, tokens/s),
the baselines beside the server with the ratio server/baseline, and last one line:
tpot_ratio_vs_inprocess=X ttft_overhead_ms=Y speedup_8_vs_1=Z
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repo root: `client`, `proto`

from client import bench  # noqa: E402
from client.common import ClientError, add_connection_flags, connect, fail  # noqa: E402


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
    p.add_argument("--baseline", action="append", choices=("inprocess", "genai"), default=[],
                   help="also run in this process on the same model: inprocess (OVModelForCausalLM.generate) "
                        "or genai (openvino-genai LLMPipeline); repeatable")
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
    model_dir = args.model or args.serve
    if args.baseline and not model_dir:
        return fail("--baseline needs the model directory: --model DIR (or --serve DIR)")
    try:
        prompts = bench.load_prompts(Path(args.prompts))
    except (OSError, ValueError) as exc:
        return fail(f"--prompts: {exc}")
    protocols = list(dict.fromkeys(args.protocol or ["grpc"]))
    try:
        if args.serve:
            log = args.server_log or tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False).name
            print(f"starting the server on {args.serve} (log: {log})", file=sys.stderr)
            with bench.StartedServer(args.serve, args.servable, log, http="openai" in protocols) as server:
                args.url, args.http_url = server.url, server.http_url or args.http_url
                by_protocol = measure_server(args, prompts, levels, protocols)
        else:
            by_protocol = measure_server(args, prompts, levels, protocols)
    except (ClientError, RuntimeError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return fail("interrupted")

    ov_config = json.loads(Path(args.servable).read_text()).get("ov_config", {})
    baselines: dict[str, list[bench.LevelResult]] = {}
    for name in dict.fromkeys(args.baseline):
        from client import baselines as base

        engine = base.load(name, model_dir, ov_config, args.device)
        baselines[name] = base.run_levels(engine, prompts, args.max_new_tokens, levels,
                                          max(args.requests, 1), args.warmup, progress=_progress)
        del engine

    server_results = by_protocol[protocols[0]]
    summary = bench.summarize(server_results, baselines.get("inprocess"))
    matches = same_texts(server_results, baselines.get("inprocess"))
    report(args, by_protocol, baselines, matches)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "config": {"url": args.url, "protocols": protocols, "http_url": args.http_url if "openai" in protocols else None,
                       "served_model": args.serve, "baseline_model": model_dir, "levels": levels,
                       "requests_per_level": args.requests, "max_new_tokens": args.max_new_tokens,
                       "min_new_tokens": args.max_new_tokens, "warmup": args.warmup, "prompts": prompts},
            "server": [asdict(r) for r in server_results],  # the first protocol's
            "protocols": {name: [asdict(r) for r in res] for name, res in by_protocol.items()},
            "openai_vs_grpc": protocol_ratios(by_protocol),
            "baselines": {name: [asdict(r) for r in res] for name, res in baselines.items()},
            "greedy_text_matches_inprocess_at_1": matches,
            "summary": asdict(summary),
        }, indent=1))
    if args.plot:
        bench.plot(args.plot, server_results, baselines,
                   f"{Path(model_dir or args.url).name}: {args.max_new_tokens} new tokens per request")
    ratios = protocol_ratios(by_protocol)
    if ratios:
        print(" ".join(f"openai_vs_grpc_tpot_at_{level}={r['tpot_ratio']:.3f}" for level, r in ratios.items()
                       if r["tpot_ratio"] is not None), flush=True)
    print(summary.line(), flush=True)
    return 0


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def measure_server(args, prompts: list[str], levels: list[int], protocols: list[str]) -> dict[str, list]:
    metadata = (("authorization", f"Bearer {args.api_key}"),) if args.api_key else ()
    if "grpc" in protocols:
        connect(args.url, args.api_key).close()  # fails with one line naming the URL
    if "openai" in protocols:
        check_http(args.http_url, metadata)
    cfgs = [bench.LoadConfig(url=args.url, prompts=prompts, tokens=args.max_new_tokens, levels=levels,
                             requests=args.requests, warmup=args.warmup, timeout=args.timeout, metadata=metadata,
                             protocol=protocol, http_url=args.http_url) for protocol in protocols]
    by_protocol = dict(zip(protocols, bench.run_protocols(cfgs, progress=_progress)))
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


def same_texts(server: list[bench.LevelResult], inprocess: list[bench.LevelResult] | None) -> dict | None:
    """Greedy output through the server against in-process generate, prompt by prompt, at one stream."""
    one = next((r for r in server if r.concurrency == 1), None)
    base = next((r for r in inprocess or [] if r.concurrency == 1), None)
    if not one or not base:
        return None
    mine = {t.prompt_index: t.text for t in base.timings}
    pairs = [(t.text, mine[t.prompt_index]) for t in one.timings if t.prompt_index in mine]
    return {"identical": sum(a == b for a, b in pairs), "compared": len(pairs)}


def report(args, by_protocol, baselines, matches) -> None:
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
    from client.baselines import GenAI, InProcess

    titles = {"inprocess": InProcess.title, "genai": GenAI.title}
    for name, results in baselines.items():
        print(f"\nBaseline {name}: {titles[name]} (level 1: one stream; level N: batches of N prompts)")
        print(bench.baseline_table(server, results))
    if matches:
        print(f"\nGreedy text through the server = in-process at one stream: {matches['identical']}/{matches['compared']}")
    print(flush=True)


if __name__ == "__main__":
    sys.exit(main())
