"""Memory per model precision: the server's resident memory after loading, and its peak during a batch of 8.

    python -m client.bench.memory                      # every precision found under models/
    python -m client.bench.memory --precision int8 int4 --json

For each precision directory (NAME, NAME_FP16, NAME_INT8_compressed_weights, NAME_INT4_compressed_weights)
it starts `python -m server` on a free loopback port (client/launcher.py), waits until it is SERVING, reads VmRSS from
/proc/PID/status, then sends one Generate call with a batch of prompts while sampling VmRSS (and the
kernel's own high-water mark, VmHWM, reset just before the batch), and stops the server.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

from client.launcher import LaunchedServer, ServerFailed
from proto import llm_pb2, llm_pb2_grpc

DEFAULT_MODEL = "smollm2-135m-instruct"
SUFFIXES = {"fp32": "", "fp16": "_FP16", "int8": "_INT8_compressed_weights", "int4": "_INT4_compressed_weights"}
PROMPTS = ("What is the theory of relativity?", "Who is Albert Einstein?", "Write a short poem about the sea.",
           "How do I make a cup of tea?", "What is the capital of France?", "Explain photosynthesis.",
           "Tell me a story about a dragon.", "What is machine learning?")
START_SECONDS = 300.0


class BenchmarkError(Exception):
    """Ends the script with one line on stderr and exit code 1."""


@dataclass
class Row:
    precision: str
    directory: str
    weights_mib: float
    load_seconds: float
    rss_loaded_mib: float
    rss_peak_batch_mib: float
    batch_extra_mib: float
    batch_prompts: int
    batch_seconds: float
    tokens_per_second: float


def parse_args(argv, prog: str | None = None):
    p = argparse.ArgumentParser(prog=prog, description="Resident memory of the server per model precision: after loading, "
                                            "and at its peak during one batch.")
    p.add_argument("--models-dir", type=Path, default=Path("models"),
                   help="where the model directories are (default: models/, relative to the current directory)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model name (default {DEFAULT_MODEL})")
    p.add_argument("--precision", nargs="+", choices=list(SUFFIXES),
                   help="precisions to measure (default: every one whose directory exists)")
    p.add_argument("--batch", type=int, default=8, help="prompts in the measured batch (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per prompt (default 64)")
    p.add_argument("--device", default="CPU", help="OpenVINO device (default CPU)")
    p.add_argument("--cache-dir", help="OpenVINO model cache directory (default: the server's)")
    p.add_argument("--json", action="store_true", help="print a machine-readable report (JSON) instead of a table")
    args = p.parse_args(argv)
    if not 1 <= args.batch <= 64:
        p.error("--batch: expected 1 to 64")
    if args.max_new_tokens < 1:
        p.error("--max-new-tokens: expected at least 1")
    return args


def model_dirs(args) -> dict[str, Path]:
    if not args.models_dir.is_dir():
        raise BenchmarkError(f"no models directory at {args.models_dir}; run: python download_model.py --model {args.model}")
    dirs = {p: args.models_dir / f"{args.model}{s}" for p, s in SUFFIXES.items()}
    if args.precision:
        for p in args.precision:
            if not dirs[p].is_dir():
                hint = (f"download_model.py --model {args.model}" if p == "fp32"
                        else f"compress_model.py --model {args.model} --precisions {p}")
                raise BenchmarkError(f"{dirs[p]} not found; run: python {hint}")
        return {p: dirs[p] for p in args.precision}
    found = {p: d for p, d in dirs.items() if d.is_dir()}
    if not found:
        raise BenchmarkError(f"no {args.model} model directories under {args.models_dir}; "
                             f"run: python download_model.py --model {args.model}")
    return found


def status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def reset_peak(pid: int) -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of a process; False where that is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def start(model_dir: Path, args, log: Path) -> tuple[LaunchedServer, float]:
    """The server on this model directory, SERVING, and the seconds that took."""
    flags = ["--model", model_dir, "--device", args.device, *(["--cache-dir", args.cache_dir] if args.cache_dir else [])]
    server = LaunchedServer(flags, log, ready_timeout=START_SECONDS)
    started = time.monotonic()
    try:
        server.serve()
    except ServerFailed as exc:
        raise BenchmarkError(f"the server for {model_dir.name} {exc.reason}: {exc.last_line}") from None
    return server, time.monotonic() - started


def measure(precision: str, model_dir: Path, args, workdir: Path) -> Row:
    server, load_seconds = start(model_dir, args, workdir / f"server-{precision}.log")
    proc = server.proc
    try:
        time.sleep(1.0)  # let start-up settle
        loaded = status(proc.pid)["VmRSS"]
        exact = reset_peak(proc.pid)
        peak, running = loaded, True

        def sample():
            nonlocal peak
            while running:
                try:
                    peak = max(peak, status(proc.pid)["VmRSS"])
                except (OSError, KeyError):
                    return
                time.sleep(0.01)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch)]
        request = llm_pb2.GenerateRequest(prompts=prompts, max_new_tokens=args.max_new_tokens,
                                          min_new_tokens=args.max_new_tokens)
        started = time.monotonic()
        try:
            response = llm_pb2_grpc.LLMServiceStub(server.channel).Generate(request, timeout=600)
        except grpc.RpcError as exc:
            raise BenchmarkError(f"the batch on {model_dir.name} failed: {exc.code().name}: {exc.details()}") from None
        finally:
            running = False
            sampler.join(5)
        seconds = time.monotonic() - started
        if exact:
            peak = max(peak, status(proc.pid)["VmHWM"])
    finally:
        server.stop()
    tokens = sum(c.completion_tokens for c in response.completions)
    weights = sum(f.stat().st_size for f in model_dir.glob("openvino_model*.bin"))
    mib = lambda kb: round(kb / 1024, 1)  # noqa: E731
    return Row(precision.upper(), model_dir.name, round(weights / 2**20, 1), round(load_seconds, 1), mib(loaded),
               mib(peak), mib(peak - loaded), len(prompts), round(seconds, 2), round(tokens / seconds, 1))


def table(rows: list[Row], args) -> str:
    head = ("precision", "weights MiB", "load s", "RSS loaded MiB", f"peak batch of {args.batch} MiB", "batch +MiB",
            "batch s", "tok/s")
    body = [(r.precision, r.weights_mib, r.load_seconds, r.rss_loaded_mib, r.rss_peak_batch_mib, r.batch_extra_mib,
             r.batch_seconds, r.tokens_per_second) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(line, widths)))
             for line in (head, *body)]
    return "\n".join([f"{args.model}: server RSS after loading and peak during one batch of {args.batch} prompts "
                      f"x {args.max_new_tokens} new tokens (device {args.device})", *lines])


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = parse_args(argv, prog)
    try:
        dirs = model_dirs(args)
        rows = []
        with tempfile.TemporaryDirectory(prefix="memory-benchmark-") as workdir:
            for precision, model_dir in dirs.items():
                if not args.json:
                    print(f"measuring {precision.upper()} ({model_dir.name}) ...", file=sys.stderr, flush=True)
                rows.append(measure(precision, model_dir, args, Path(workdir)))
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    print(json.dumps([asdict(r) for r in rows], indent=2) if args.json else table(rows, args))
    return 0


if __name__ == "__main__":
    sys.exit(main(prog="python -m client.bench.memory"))
