"""Helpers for the model-preparation tests: paths, greedy decoding, token agreement, CLI contract.

Imported by name from test modules (never `from conftest import ...`: several conftests exist).
"""
from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path

from modelprep import fidelity

REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO / "models"
DEFAULT_MODEL = "smollm2-135m-instruct"
# OpenVINO's model cache, one per pytest worker (`make test` runs two): two processes compiling the same model into one
# cache directory race on its blob ("cannot set permissions: No such file or directory").
OV_CACHE = MODELS_DIR / ".ov_cache" / os.environ.get("PYTEST_XDIST_WORKER", "main")

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


RECORDED: list[str] = []  # printed in the terminal summary by conftest


def record(precision: str, result) -> None:
    """Keep the figures for the terminal summary."""
    rows = ", ".join(f"{r.precision} {r.agreement:.1%}{'' if r.passed else ' (fails)'}" for r in result.rows)
    RECORDED.append(f"{precision}: teacher-forced top-1 agreement with FP32 at {rows}")


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The CLI contract for bad input: non-zero exit, one line on stderr, no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]
