"""Memory over time: 200 short calls after a warm-up; resident memory and thread count grow by under 5%."""
from __future__ import annotations

import time

import pytest

from tests.robustness.common import CAPITAL_PROMPTS, call, gauges, proc_status, record, run_all, start_metered, wait_until
from tests.server.harness import request

WARM_UP, SOAK, CONCURRENCY = 30, 200, 4
GROWTH = 0.05


@pytest.fixture(scope="module")
def soak_server(fp32_model_dir, tmp_path_factory):
    s = start_metered(fp32_model_dir, tmp_path_factory.mktemp("soak"))
    yield s
    assert s.stop() == 0


def calls(count: int, stub):
    """Short calls of every kind: both RPCs, 1 or 2 prompts, 2 to 4 new tokens, some sampled."""
    def job(i):
        prompts = [CAPITAL_PROMPTS[i % 8], CAPITAL_PROMPTS[(i * 3) % 8]][:1 + i % 2]
        sampled = {"temperature": 0.8, "seed": i} if i % 5 == 0 else {}
        req = request(*prompts, max_new_tokens=2 + i % 3, **sampled)
        return lambda: call(stub, ("Generate", "GenerateStream")[i % 2], req, timeout=60)
    return [job(i) for i in range(count)]


def settled(server) -> dict[str, int]:
    assert wait_until(lambda: gauges(server) == (0, 0), timeout=10)
    time.sleep(0.5)
    return proc_status(server.proc.pid)


def test_soak_memory_and_threads_stay_flat(soak_server):
    server = soak_server
    warm = run_all(calls(WARM_UP, server.stub), CONCURRENCY, budget=120)
    assert not [r for r in warm if isinstance(r, Exception)]
    before = settled(server)
    started = time.monotonic()
    results = run_all(calls(SOAK, server.stub), CONCURRENCY, budget=240)
    duration = time.monotonic() - started
    after = settled(server)
    failures = [r for r in results if isinstance(r, Exception)]
    rss_growth = after["VmRSS"] / before["VmRSS"] - 1
    record("soak", requests=SOAK, warm_up=WARM_UP, concurrency=CONCURRENCY, failures=len(failures),
           duration_s=f"{duration:.1f}", rss_mib_before=f"{before['VmRSS'] / 1024:.1f}",
           rss_mib_after=f"{after['VmRSS'] / 1024:.1f}", rss_growth=f"{rss_growth:+.2%}",
           peak_rss_mib=f"{after['VmHWM'] / 1024:.1f}", threads_before=before["Threads"], threads_after=after["Threads"])
    assert not failures, failures[:3]
    assert rss_growth < GROWTH
    assert after["Threads"] <= before["Threads"] * (1 + GROWTH)
