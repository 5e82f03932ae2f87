"""Which OpenVINO CPU options make a compressed directory fastest, with answers that still pass the fidelity check.

Measured (docs/benchmarks.md): the activation quantization group the CPU plugin uses with compressed weights
(DYNAMIC_QUANTIZATION_GROUP_SIZE, default 32) moved the 1.1B INT4 decode step by 1.30x, and the best value
depends on the weights (INT4's group, INT8's per-channel scales) and the CPU. So `compress_model.py` times the
candidates on the paged model the server runs (one-token decode steps at 1 and 8 sequences, in alternating
rounds, per-round ratios to the plugin's default), checks the faster ones' answers against FP32 with
modelprep/fidelity.py, and records the fastest that passes in the manifest as `runtime`, with the CPU it was
measured on: the server applies those options on a CPU of the same kind only. On a busy machine a round's
timings swing 10-30%, more than the candidates differ, so a candidate counts as faster only when it beats the
default in every round at every batch size, and a default whose own rounds spread too far keeps the defaults.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

DQ = "DYNAMIC_QUANTIZATION_GROUP_SIZE"
PER_TOKEN = str(2**64 - 1)  # the plugin's per-token (one scale per row) activation quantization
BASELINE = {DQ: "32"}  # the CPU plugin's default, named so every candidate is explicit
BATCHES = (1, 8)  # sequences per decode step
CONTEXT = 68  # tokens in each sequence's cache before the timed steps (as client/bench/raw_step.py)
MIN_SPEEDUP = 1.02  # the median speed ratio a candidate needs: less is noise on a shared machine
# The most the baseline's per-round times may spread (slowest / fastest round) for the rounds to be judged: a busy
# machine swung them 10-30% (docs/benchmarks.md), while the default model's candidates differ by 3-9%.
MAX_SPREAD = 1.15
# What the ISA flags a kernel choice depends on; a directory measured on one kind is not tuned for another.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_bf16", "amx_int8",
             "amx_fp16")


def cpu_kind() -> dict:
    """The CPU the options are measured on: the plugin's name for it and the ISA extensions its kernels use."""
    import openvino as ov

    try:
        flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        flags = set()
    return {"name": str(ov.Core().get_property("CPU", "FULL_DEVICE_NAME")).strip(),
            "isa": [f for f in ISA_FLAGS if f in flags]}


def same_kind(a: dict, b: dict) -> bool:
    return a.get("name") == b.get("name") and sorted(a.get("isa", [])) == sorted(b.get("isa", []))


def candidates(weight_group: int | None) -> list[dict]:
    """The plugin's default first, then activation groups 64, 128, the weights' group, and per token."""
    groups = ["64", "128"] + ([str(weight_group)] if weight_group and weight_group > 0 else [])
    found = [dict(BASELINE)] + [{DQ: g} for g in dict.fromkeys(groups) if g != BASELINE[DQ]]
    return found + [{DQ: PER_TOKEN}]


def label(options: dict) -> str:
    return ",".join(f"{k}={'per-token' if v == PER_TOKEN else v}" for k, v in options.items()) or "defaults"


@dataclass
class Candidate:
    options: dict
    times: dict = field(default_factory=dict)  # sequences -> ms of a decode step in each round (median of its steps)
    rounds: dict = field(default_factory=dict)  # sequences -> each round's speed ratio, baseline ms / this ms
    agreement: float | None = None  # teacher-forced agreement with FP32 at f32 with these options (None: unchecked)
    passed: bool | None = None  # the fidelity check's verdict (None: not checked)
    error: str = ""  # the plugin refused the options

    @property
    def ms(self) -> dict:
        """Sequences -> median ms of a decode step over the rounds."""
        return {b: round(statistics.median(t), 2) for b, t in self.times.items()}

    @property
    def ratio(self) -> dict:
        """Sequences -> median over the rounds of the speed ratio to the baseline."""
        return {b: round(statistics.median(r), 3) for b, r in self.rounds.items()}

    @property
    def speedup(self) -> float:
        """Geometric mean over the batch sizes of the median speed ratios to the plugin's default."""
        return math.prod(self.ratio.values()) ** (1 / len(self.ratio)) if self.ratio else 0.0

    @property
    def spread(self) -> float:
        """How far this candidate's own rounds moved: the largest slowest / fastest round over the batch sizes."""
        return max((max(t) / min(t) for t in self.times.values() if t), default=1.0)


def worst_round(rounds: dict) -> float | None:
    """The lowest speed ratio to the baseline of any round at any batch size (None: no rounds)."""
    return min((r for ratios in rounds.values() for r in ratios), default=None)


def compare(found: list[Candidate]) -> None:
    """Each timed candidate's per-round speed ratios to the first (the baseline), round by round."""
    base = found[0].times
    for c in found:
        if c.times:
            c.rounds = {b: [round(x / y, 3) for x, y in zip(base[b], t)] for b, t in c.times.items()}


def choose(found: list[Candidate], check=None, min_speedup: float = MIN_SPEEDUP, max_spread: float = MAX_SPREAD,
           min_round: float = 1.0) -> tuple[Candidate | None, str]:
    """The candidate to record, from `compare`d timings (the first is the baseline), and a note when the timings
    could not be judged. A candidate wins when its median speedup is at least `min_speedup`, every round at every
    batch size is above `min_round`, and `check(options)` (the fidelity check: (agreement, passed); None: speed
    only) passes; the fastest such, else the baseline. None when nothing was timed."""
    timed = [c for c in found if c.rounds]
    if not timed:
        return None, ""
    base = timed[0]
    # Load only slows a step: a slowed candidate loses its round (the defaults are kept, the safe way), a slowed
    # baseline makes every candidate look faster, so the baseline's spread is what tells a machine too busy to judge.
    if base.spread > max_spread:
        return base, (f"the machine was too busy to tell the candidates apart (baseline spread {base.spread:.2f}x); "
                      "the plugin's defaults kept; rerun `compress_model.py --retune` on a quiet machine")
    for c in sorted(timed[1:], key=lambda c: -c.speedup):
        if c.speedup < min_speedup:
            break
        if worst_round(c.rounds) <= min_round:
            continue
        if check is not None:
            c.agreement, c.passed = check(c.options)
            if not c.passed:
                continue
        return c, ""
    return base, ""


class _Timer:
    """One candidate's compiled paged model with a small KV cache of its own, stepping `seqs` sequences at once."""

    def __init__(self, model_dir: Path, options: dict):
        import openvino as ov

        from server.engine.model import _configs
        from server.engine.paged_model import PagedModel, compile_paged
        from server.engine.precision import runtime_options

        config, _, _ = _configs(model_dir, False)
        model = ov.Core().read_model(model_dir / "openvino_model.xml")
        # The server's own options under the candidate's (f32 on CPUs); no model cache: a blob would be per candidate.
        self.paged = PagedModel(compile_paged(model, "CPU", runtime_options("CPU", options), config))
        self.per_seq = math.ceil((CONTEXT + 64) / self.paged.block_size)
        self.paged.allocate(self.per_seq * max(BATCHES))
        self.compiled = self.paged.compiled

    def _step(self, seqs: int, tokens: int, past: int):
        import numpy as np

        from server.engine.paged_model import StepInputs

        blocks = math.ceil((past + tokens) / self.paged.block_size)
        table = np.concatenate([np.arange(s * self.per_seq, s * self.per_seq + blocks) for s in range(seqs)])
        n = seqs * tokens
        return self.paged.forward(StepInputs(
            input_ids=np.tile(np.arange(1000, 1000 + tokens, dtype=np.int64), seqs),
            position_ids=np.tile(np.arange(past, past + tokens, dtype=np.int64), seqs),
            past_lens=np.full(seqs, past, dtype=np.int32),
            subsequence_begins=np.arange(0, n + 1, tokens, dtype=np.int32),
            block_indices=table.astype(np.int32),
            block_indices_begins=np.arange(0, seqs * blocks + 1, blocks, dtype=np.int32),
            max_context_len=past + tokens,
            sampled=np.arange(tokens - 1, n, tokens, dtype=np.int64),
        ))

    def measure(self, seqs: int, steps: int, warmup: int = 3) -> float:
        """Median ms of `steps` one-token decode steps of `seqs` sequences (contexts CONTEXT.. onwards)."""
        import numpy as np

        self._step(seqs, CONTEXT, 0)
        times = []
        for i in range(warmup + steps):
            start = time.perf_counter()
            self._step(seqs, 1, CONTEXT + i)
            times.append((time.perf_counter() - start) * 1000)
        return float(np.median(times[warmup:]))


def time_candidates(model_dir: Path, options: list[dict], rounds: int, steps: int) -> list[Candidate]:
    """Each candidate compiled once, then timed in alternating rounds; ratios to the first (the baseline) per round."""
    found = [Candidate(o) for o in options]
    timers = {}
    for c in found:
        try:
            timers[id(c)] = _Timer(model_dir, c.options)
        except RuntimeError as exc:
            c.error = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else type(exc).__name__
    live = [c for c in found if id(c) in timers]
    if not live or live[0] is not found[0]:
        return found
    for c in live:
        c.times = {b: [] for b in BATCHES}
    for r in range(rounds):
        order = live if r % 2 == 0 else live[::-1]  # alternate so a drift in machine load hits everyone alike
        for c in order:
            for b in BATCHES:
                c.times[b].append(round(timers[id(c)].measure(b, steps), 3))
    timers.clear()
    compare(found)
    return found


@dataclass
class Runtime:
    """What the manifest records as `runtime` (older manifests lack `spread` and `note`)."""

    options: dict  # the chosen options ({}: the plugin's defaults won)
    cpu: dict  # cpu_kind() where they were measured
    openvino: str
    rounds: int
    seconds: float
    candidates: list[dict]
    spread: float = 1.0  # the baseline's slowest / fastest round: how quiet the machine was
    note: str = ""  # why the plugin's defaults were kept without judging the candidates ("": they were judged)

    def to_manifest(self) -> dict:
        return asdict(self)


def tune(model_dir: Path, *, weight_group: int | None = None, reference=None, min_agreement: float = 0.0,
         rounds: int = 3, steps: int = 16, options: list[dict] | None = None, min_speedup: float = MIN_SPEEDUP,
         min_round: float = 1.0) -> Runtime:
    """Time the candidates on `model_dir` and `choose` among them, checking the faster ones (fastest first)
    against `reference` (a fidelity.Reference; None: speed only); the plugin's default when none passes."""
    import openvino as ov

    from modelprep import fidelity

    def check(candidate_options: dict) -> tuple[float, bool]:
        row = fidelity.measure(model_dir, reference, fidelity.F32, min_agreement, candidate_options)
        return row.agreement, row.passed

    started = time.monotonic()
    model_dir = Path(model_dir)
    found = time_candidates(model_dir, options or candidates(weight_group), rounds, steps)
    chosen, note = choose(found, check if reference is not None else None, min_speedup, MAX_SPREAD, min_round)
    chosen_options = {} if chosen is None or chosen is found[0] else dict(chosen.options)
    rows = [{"options": c.options, "ms": {str(k): v for k, v in c.ms.items()},
             "vs_default": {str(k): v for k, v in c.ratio.items()},
             "rounds": {str(k): v for k, v in c.rounds.items()}, "agreement": c.agreement, "passed": c.passed,
             "chosen": c is chosen, **({"error": c.error} if c.error else {})} for c in found]
    return Runtime(chosen_options, cpu_kind(), ov.get_version().split("-")[0], rounds,
                   round(time.monotonic() - started, 1), rows, round(found[0].spread, 3), note)


def table(runtime: dict) -> str:
    """The candidates' figures as `compress_model.py` prints them, and the note when the machine was too busy."""
    lines = [("options", *(f"ms@{b}" for b in BATCHES), *(f"x@{b}" for b in BATCHES), "worst round", "agreement",
              "")]
    for c in runtime.get("candidates", []):
        ms, ratio = c.get("ms", {}), c.get("vs_default", {})
        worst = worst_round(c.get("rounds", {}))
        agreement = "-" if c.get("agreement") is None else f"{c['agreement']:.2f}"
        verdict = "chosen" if c.get("chosen") else ("refused by the plugin" if c.get("error") else
                                                    "fails fidelity" if c.get("passed") is False else "")
        lines.append((label(c["options"]), *(str(ms.get(str(b), "-")) for b in BATCHES),
                      *(str(ratio.get(str(b), "-")) for b in BATCHES), "-" if worst is None else str(worst),
                      agreement, verdict))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    rows = ["  ".join(f"{c:<{w}}" for c, w in zip(line, widths)).rstrip() for line in lines]
    return "\n".join(rows + ([runtime["note"]] if runtime.get("note") else []))
