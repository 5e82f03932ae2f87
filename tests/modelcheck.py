"""Helpers for the model-preparation tests: paths, greedy decoding, token agreement, CLI contract.

Imported by name from test modules (never `from conftest import ...`: several conftests exist).
"""
from __future__ import annotations

import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from modelprep import fidelity

REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO / "models"
DEFAULT_MODEL = "smollm2-135m-instruct"

QUESTION = fidelity.PROMPTS[0]  # "What is the theory of relativity?"
AGREEMENT_PROMPTS = fidelity.PROMPTS


@lru_cache(maxsize=None)
def load(model_dir: Path):
    from transformers import AutoTokenizer

    return fidelity.load(model_dir), AutoTokenizer.from_pretrained(str(model_dir))


def greedy(model_dir: Path, prompt: str, max_new_tokens: int = 32) -> list[int]:
    return fidelity.greedy(*load(model_dir), prompt, max_new_tokens)


def teacher_forced(model_dir: Path, prompt: str, reference: list[int]) -> list[int]:
    """The model's greedy choice at each step when fed the reference continuation (no compounding)."""
    return fidelity.teacher_forced(*load(model_dir), prompt, reference)


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
