"""What the serving benchmark prints: the summary line, the tables per level, the comparisons it derives
(HTTP against gRPC, greedy text against a baseline)."""
from __future__ import annotations

from dataclasses import dataclass

from client.bench.load import LevelResult


@dataclass
class Summary:
    tpot_ratio_vs_inprocess: float | None  # server TPOT p50 / in-process TPOT p50, one stream
    ttft_overhead_ms: float | None  # server TTFT p50 - in-process TTFT p50, one stream
    speedup_vs_1: float | None  # server output tokens/s at the highest level / at one stream
    top_level: int

    def line(self) -> str:
        def f(v, digits):
            return "n/a" if v is None else f"{v:.{digits}f}"

        return (f"tpot_ratio_vs_inprocess={f(self.tpot_ratio_vs_inprocess, 3)} "
                f"ttft_overhead_ms={f(self.ttft_overhead_ms, 1)} "
                f"speedup_{self.top_level}_vs_1={f(self.speedup_vs_1, 2)}")


def summarize(server: list[LevelResult], inprocess: list[LevelResult] | None) -> Summary:
    by_level = {r.concurrency: r for r in server}
    one, top = by_level.get(1), server[-1] if server else None
    base = next((r for r in inprocess or [] if r.concurrency == 1), None)
    ratio = overhead = speedup = None
    if one and base and one.tpot_ms.p50 and base.tpot_ms.p50:
        ratio = one.tpot_ms.p50 / base.tpot_ms.p50
    if one and base and one.ttft_ms.p50 is not None and base.ttft_ms.p50 is not None:
        overhead = one.ttft_ms.p50 - base.ttft_ms.p50
    if one and top and one.output_tokens_per_s:
        speedup = top.output_tokens_per_s / one.output_tokens_per_s
    return Summary(ratio, overhead, speedup, top.concurrency if top else 0)


def number(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def server_table(results: list[LevelResult]) -> str:
    rows = [f"{'conc':>4} {'reqs':>4} {'err':>3}  {'TTFT ms p50/p90/p99':>21}  {'TPOT ms':>7}  "
            f"{'ITL ms p50/p99':>14}  {'E2E s p50/p99':>13}  {'req/s':>6}  {'tok/s':>6}"]
    for r in results:
        ttft = f"{number(r.ttft_ms.p50, 0)}/{number(r.ttft_ms.p90, 0)}/{number(r.ttft_ms.p99, 0)}"
        itl = f"{number(r.itl_ms.p50)}/{number(r.itl_ms.p99)}"
        e2e = f"{number(r.e2e_ms.p50 and r.e2e_ms.p50 / 1000, 2)}/{number(r.e2e_ms.p99 and r.e2e_ms.p99 / 1000, 2)}"
        rows.append(f"{r.concurrency:>4} {r.requests:>4} {r.errors:>3}  {ttft:>21}  {number(r.tpot_ms.p50):>7}  "
                    f"{itl:>14}  {e2e:>13}  {r.requests_per_s:>6.2f}  {r.output_tokens_per_s:>6.1f}")
    return "\n".join(rows)


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}"


def baseline_table(server: list[LevelResult], baseline: list[LevelResult]) -> str:
    by_level = {r.concurrency: r for r in server}
    rows = [f"{'conc':>4}  {'TTFT ms':>8}  {'TPOT ms':>7}  {'tok/s':>6}   "
            f"{'server/baseline: TTFT':>21}  {'TPOT':>5}  {'tok/s':>5}"]
    for b in baseline:
        s = by_level.get(b.concurrency)
        rows.append(f"{b.concurrency:>4}  {number(b.ttft_ms.p50):>8}  {number(b.tpot_ms.p50):>7}  {b.output_tokens_per_s:>6.1f}   "
                    f"{_ratio(s and s.ttft_ms.p50, b.ttft_ms.p50):>21}  {_ratio(s and s.tpot_ms.p50, b.tpot_ms.p50):>5}  "
                    f"{_ratio(s and s.output_tokens_per_s, b.output_tokens_per_s):>5}")
    return "\n".join(rows)


def open_loop_table(results: list) -> str:
    n = number
    rows = [f"{'req/s':>5} {'reqs':>4} {'err':>3}  {'TTFT ms p50/p90/p99':>21}  {'TPOT ms p50/p99':>15}  "
            f"{'ITL ms p50/p99':>14}  {'in flight':>9}  {'done/s':>6}  {'tok/s':>6}"]
    for r in results:
        lv = r.level
        ttft = f"{n(lv.ttft_ms.p50, 0)}/{n(lv.ttft_ms.p90, 0)}/{n(lv.ttft_ms.p99, 0)}"
        rows.append(f"{r.rate:>5g} {lv.requests:>4} {lv.errors:>3}  {ttft:>21}  "
                    f"{n(lv.tpot_ms.p50) + '/' + n(lv.tpot_ms.p99):>15}  {n(lv.itl_ms.p50) + '/' + n(lv.itl_ms.p99):>14}  "
                    f"{r.peak_in_flight:>9}  {lv.requests_per_s:>6.2f}  {lv.output_tokens_per_s:>6.1f}")
    return "\n".join(rows)


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


def same_texts(server: list[LevelResult], baseline: list[LevelResult] | None) -> dict | None:
    """Greedy output through the server against a baseline's, prompt by prompt, at one stream."""
    one = next((r for r in server if r.concurrency == 1), None)
    base = next((r for r in baseline or [] if r.concurrency == 1), None)
    if not one or not base:
        return None
    mine = {t.prompt_index: t.text for t in base.timings}
    pairs = [(t.text, mine[t.prompt_index]) for t in one.timings if t.prompt_index in mine]
    return {"identical": sum(a == b for a, b in pairs), "compared": len(pairs)}


def print_report(args, by_protocol, baselines, titles, matches, matches_cb, rss_peak_mb, open_results,
           raw_step_ms) -> None:
    for protocol, results in by_protocol.items():
        how = (f"{args.url}: GenerateStream" if protocol == "grpc"
               else f"{args.http_url}: streamed /v1/chat/completions (OpenAI, HTTP)")
        rounds = f", {args.rounds} rounds pooled" if args.rounds > 1 else ""
        print(f"\nServer {how}, one prompt per request, {args.max_new_tokens} new tokens "
              f"(min = max), greedy; closed loop, {args.requests} requests per level{rounds}")
        print(server_table(results))
        for r in results:
            for message in r.error_messages:
                print(f"  concurrency {r.concurrency}: {message}")
    server = next(iter(by_protocol.values()))
    ratios = protocol_ratios(by_protocol)
    if ratios:
        print("\nHTTP (openai) against gRPC on the same server, taking turns round by round:")
        print(f"{'conc':>4}  {'TPOT ms grpc/http':>17}  {'ratio':>5}  {'TTFT ratio':>10}  {'tok/s grpc/http':>15}")
        for level, r in ratios.items():
            tpot = f"{number(r['grpc_tpot_ms'])}/{number(r['openai_tpot_ms'])}"
            toks = f"{r['grpc_tok_s']:.1f}/{r['openai_tok_s']:.1f}"
            print(f"{level:>4}  {tpot:>17}  {number(r['tpot_ratio'], 3):>5}  {number(r['ttft_ratio'], 2):>10}  "
                  f"{toks:>15}")
    if rss_peak_mb:
        print("server RSS peak (sampled every 50 ms): " +
              ", ".join(f"{level}: {'-' if mb is None else f'{mb:.0f} MB'}" for level, mb in rss_peak_mb.items()))
    if open_results:
        print(f"\nOpen loop on the server: Poisson arrivals (seed {args.seed}), {args.open_requests} requests per "
              f"rate; in flight: the most at once; done/s: requests / (first send -> last answer)")
        print(open_loop_table(open_results))
    for name, results in baselines.items():
        print(f"\nBaseline {name}: {titles[name]}")
        print(baseline_table(server, results))
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
