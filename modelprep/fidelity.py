"""Does a compressed directory still answer like its FP32 source? Checked as `compress_model.py` writes it.

Two measures, each on the CPU at its default inference precision (bf16 on CPUs with AVX512_BF16 or AMX)
and at f32:
- teacher-forced top-1 agreement: fed FP32's greedy continuation of a few varied prompts, how often the
  compressed model's own first choice is FP32's next token (no compounding of one early divergence);
- the greedy answer to questions with one right answer, right wherever FP32's answer is right.
Measured: on an AMD EPYC with AVX512_BF16, INT8 weights answer "What is the capital of France?" with nonsense at
bf16 and with Paris at f32; on an Intel Xeon with AMX, right at both. So the check runs on the CPU at hand and
the directory's manifest records the inference precision it needs there.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from modelprep.errors import ModelPrepError

# Varied prompts so the figure is not one lucky answer; short continuations keep the check to seconds.
PROMPTS = (
    "What is the theory of relativity?",
    "Who is Albert Einstein?",
    "Write a short poem about the sea.",
    "How do I make a cup of tea?",
)
TOKENS = 24  # teacher-forced steps per prompt
# Questions with one right answer: (question, the word a right answer contains).
FACTS = (
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Japan?", "Tokyo"),
)
ANSWER_TOKENS = 12  # "The capital of France is Paris." is 8 tokens
# Below this teacher-forced agreement at f32 a directory is refused: its weights no longer carry the model.
# 4-bit weights cost a 135M model much more than 8-bit (measured: FP16 1.00, INT8 0.96, INT4 0.66).
MIN_AGREEMENT = {"fp16": 0.9, "int8": 0.8, "int4": 0.5}
F32 = "f32"


def cpu_default_precision() -> str:
    """What OpenVINO's CPU plugin runs at unless told otherwise: bf16 on CPUs with bf16, else f32."""
    import openvino as ov

    return ov.Core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()


def memory_shortfall(fp32_dir: Path) -> str | None:
    """Why this machine cannot run the check (FP32 inference beside a compressed copy), or None if it can."""
    need = 1.5 * (Path(fp32_dir) / "openvino_model.bin").stat().st_size
    try:  # MemAvailable counts the page cache the kernel would give back; Linux only
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        free = int(meminfo["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None
    if need <= free:
        return None
    return f"running its FP32 model needs about {need / 1e9:.0f} GB and {free / 1e9:.0f} GB of memory is available"


def load(model_dir: Path, precision: str | None = None, options: dict | None = None):
    """The directory as OVModelForCausalLM loads it, at `precision` (None: the CPU's default), with other OpenVINO
    `options` (runtime candidates, modelprep/tune.py)."""
    from optimum.intel import OVModelForCausalLM

    ov_config = {**(options or {}), **({"INFERENCE_PRECISION_HINT": precision} if precision else {})}
    return OVModelForCausalLM.from_pretrained(str(model_dir), device="CPU", ov_config=ov_config)


def chat_ids(tokenizer, prompt: str):
    messages = [{"role": "user", "content": prompt}]
    if tokenizer.chat_template:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    return tokenizer(prompt, return_tensors="pt")


def greedy(model, tokenizer, prompt: str, max_new_tokens: int) -> list[int]:
    inputs = chat_ids(tokenizer, prompt)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def teacher_forced(model, tokenizer, prompt: str, reference: list[int]) -> list[int]:
    """The model's first choice at each step when fed the reference continuation."""
    import torch

    prompt_ids = chat_ids(tokenizer, prompt)["input_ids"]
    ids = torch.cat([prompt_ids, torch.tensor([reference])], dim=1)
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    start = prompt_ids.shape[1] - 1
    return logits[0, start:start + len(reference)].argmax(-1).tolist()


def answer(model, tokenizer, question: str) -> str:
    return tokenizer.decode(greedy(model, tokenizer, question, ANSWER_TOKENS), skip_special_tokens=True).strip()


@dataclass(frozen=True)
class Reference:
    """The FP32 directory at f32: what the compressed ones are compared with."""

    tokenizer: object
    continuations: tuple[tuple[int, ...], ...]
    answers: tuple[str, ...]

    @classmethod
    def of(cls, fp32_dir: Path) -> Reference:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(fp32_dir))
        model = load(fp32_dir, F32)
        return cls(tokenizer,
                   tuple(tuple(greedy(model, tokenizer, p, TOKENS)) for p in PROMPTS),
                   tuple(answer(model, tokenizer, q) for q, _ in FACTS))

    def known_facts(self) -> list[tuple[int, str, str]]:
        """(index, question, word) of the questions FP32 answers right (a random-weight model knows none)."""
        return [(i, q, word) for i, (q, word) in enumerate(FACTS) if word in self.answers[i]]


def reference(fp32_dir: Path) -> Reference:
    """The FP32 reference, computed once per process for all the precisions compressed from one directory."""
    from modelprep.store import MANIFEST

    return _reference(Path(fp32_dir).resolve(), (Path(fp32_dir) / MANIFEST).stat().st_mtime_ns)


@lru_cache(maxsize=2)
def _reference(fp32_dir: Path, _stamp: int) -> Reference:  # the stamp: a rebuilt FP32 directory is a new key
    return Reference.of(fp32_dir)


@dataclass
class Row:
    precision: str  # the inference precision it ran at
    agreement: float  # teacher-forced top-1 agreement with FP32
    answers: dict[str, str]  # question -> greedy answer, for the questions FP32 answers right
    wrong: list[str]  # the questions among them it answers wrong
    passed: bool


@dataclass
class Fidelity:
    cpu_default: str
    min_agreement: float
    rows: list[Row] = field(default_factory=list)

    def row(self, precision: str) -> Row:
        return next(r for r in self.rows if r.precision == precision)

    @property
    def refused(self) -> bool:
        return not any(r.passed for r in self.rows)

    @property
    def required_precision(self) -> str | None:
        """None when the CPU's default precision is fine, else f32."""
        return None if self.row(self.cpu_default).passed else F32

    def to_manifest(self) -> dict:
        return {"cpu_default": self.cpu_default, "min_agreement": self.min_agreement,
                "prompts": len(PROMPTS), "tokens": TOKENS, "rows": [asdict(r) for r in self.rows]}

    @classmethod
    def from_manifest(cls, data: dict) -> Fidelity:
        return cls(data["cpu_default"], data["min_agreement"], [Row(**r) for r in data["rows"]])


def measure(model_dir: Path, reference: Reference, precision: str, min_agreement: float,
            options: dict | None = None) -> Row:
    model, tokenizer = load(model_dir, precision, options), reference.tokenizer
    same = total = 0
    for prompt, ref in zip(PROMPTS, reference.continuations):
        same += sum(a == b for a, b in zip(teacher_forced(model, tokenizer, prompt, list(ref)), ref))
        total += len(ref)
    answers = {q: answer(model, tokenizer, q) for _, q, _ in reference.known_facts()}
    wrong = [q for _, q, word in reference.known_facts() if word not in answers[q]]
    agreement = round(same / total, 3)
    return Row(precision, agreement, answers, wrong, agreement >= min_agreement and not wrong)


def check(model_dir: Path, reference: Reference, min_agreement: float) -> Fidelity:
    """`model_dir` against FP32 at the CPU's default precision and at f32 (one run where they are the same)."""
    default = cpu_default_precision()
    result = Fidelity(default, min_agreement)
    for precision in dict.fromkeys((default, F32)):
        result.rows.append(measure(model_dir, reference, precision, min_agreement))
    return result


def refusal(name: str, result: Fidelity) -> ModelPrepError:
    row = result.row(F32)
    why = [f"teacher-forced agreement with FP32 {row.agreement:.2f} (minimum {result.min_agreement:.2f})"]
    why += [f"{q!r} answered {row.answers[q]!r}" for q in row.wrong]
    return ModelPrepError(f"refused {name}: even at f32 inference precision, {'; '.join(why)}; "
                          "nothing was written (--min-agreement sets the bar)")


def table(rows: list[tuple[str, Fidelity]]) -> str:
    """One line per (directory, inference precision): agreement, answer, verdict."""
    lines = [("directory", "precision", "agreement", "answer", "verdict")]
    for name, result in rows:
        for r in result.rows:
            label = r.precision + (" (CPU default)" if r.precision == result.cpu_default else "")
            verdict = "ok" if r.passed else ("wrong answer" if r.wrong else "low agreement")
            shown = " ".join(next(iter(r.answers.values()), "-").split())[:40]
            lines.append((name, label, f"{r.agreement:.2f}", shown, verdict))
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    title = (f"fidelity: teacher-forced top-1 agreement with FP32 (at f32) over {len(PROMPTS)} prompts x {TOKENS} "
             f"tokens; greedy answers to {len(FACTS)} questions, the first shown: {FACTS[0][0]!r}")
    return title + "\n" + "\n".join("  ".join(f"{c:<{w}}" for c, w in zip(line, widths)).rstrip() for line in lines)
