"""Helpers for the model-preparation tests: paths, greedy decoding, token agreement, CLI contract.

Imported by name from test modules (never `from conftest import ...`: several conftests exist).
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO / "models"
DEFAULT_MODEL = "smollm2-135m-instruct"

QUESTION = "What is the theory of relativity?"
# Varied prompts so the agreement figure is not one lucky answer.
AGREEMENT_PROMPTS = (
    QUESTION,
    "Who is Albert Einstein?",
    "Write a short poem about the sea.",
    "How do I make a cup of tea?",
)


@lru_cache(maxsize=None)
def load(model_dir: Path):
    from optimum.intel import OVModelForCausalLM
    from transformers import AutoTokenizer

    return OVModelForCausalLM.from_pretrained(str(model_dir)), AutoTokenizer.from_pretrained(str(model_dir))


def chat_ids(tokenizer, prompt: str):
    messages = [{"role": "user", "content": prompt}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)


def greedy(model_dir: Path, prompt: str, max_new_tokens: int = 32) -> list[int]:
    model, tokenizer = load(model_dir)
    inputs = chat_ids(tokenizer, prompt)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, inputs["input_ids"].shape[1]:].tolist()


def teacher_forced(model_dir: Path, prompt: str, reference: list[int]) -> list[int]:
    """The model's greedy choice at each step when fed the reference continuation (no compounding)."""
    import torch

    model, tokenizer = load(model_dir)
    prompt_ids = chat_ids(tokenizer, prompt)["input_ids"]
    ids = torch.cat([prompt_ids, torch.tensor([reference])], dim=1)
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    start = prompt_ids.shape[1] - 1
    return logits[0, start:start + len(reference)].argmax(-1).tolist()


@dataclass
class Agreement:
    precision: str
    teacher_forced: float  # share of the 32 steps where the compressed model picks FP32's token
    same_prefix: float  # free-running: share of FP32's tokens matched before the first divergence
    exact: int  # prompts whose 32 greedy tokens are identical to FP32's


def agreement(precision: str, reference_dir: Path, model_dir: Path, n: int = 32) -> Agreement:
    forced = prefix = total = exact = 0
    for prompt in AGREEMENT_PROMPTS:
        ref = greedy(reference_dir, prompt, n)
        got = greedy(model_dir, prompt, n)
        forced += sum(a == b for a, b in zip(teacher_forced(model_dir, prompt, ref), ref))
        prefix += next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b), min(len(ref), len(got)))
        exact += ref == got
        total += len(ref)
    return Agreement(precision, round(forced / total, 3), round(prefix / total, 3), exact)


RECORDED: list[str] = []  # printed in the terminal summary by conftest


def record(result: Agreement, path: Path) -> None:
    """Keep the figure: terminal summary now, and a JSON file beside the models for later runs."""
    import json
    from dataclasses import asdict

    RECORDED.append(
        f"{result.precision}: teacher-forced {result.teacher_forced:.1%}, "
        f"free-running prefix {result.same_prefix:.1%}, identical answers {result.exact}/{len(AGREEMENT_PROMPTS)}"
    )
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[result.precision] = asdict(result)
    path.write_text(json.dumps(data, indent=2) + "\n")


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The CLI contract for bad input: non-zero exit, one line on stderr, no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]
