"""The memory benchmark (`python -m client.bench.memory`) as a user runs it: one precision measured for real,
one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from modelcheck import OV_CACHE, one_line_error
from tests.robustness.common import record


def run(*args, cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "client.bench.memory", *map(str, args)], cwd=cwd,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=timeout)


def test_measures_one_precision(int8_model_dir, tmp_path):
    result = run("--models-dir", int8_model_dir.parent, "--precision", "int8", "--max-new-tokens", "8",
                 "--cache-dir", OV_CACHE, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["precision"] == "INT8" and row["directory"] == int8_model_dir.name and row["batch_prompts"] == 8
    assert 100 < row["rss_loaded_mib"] <= row["rss_peak_batch_mib"] < 8192
    assert row["weights_mib"] > 10 and row["tokens_per_second"] > 0
    record("memory benchmark (INT8, batch of 8 x 8 tokens)", rss_loaded_mib=row["rss_loaded_mib"],
           rss_peak_batch_mib=row["rss_peak_batch_mib"])


def test_missing_models_are_one_line_errors(tmp_path):
    assert "download_model.py" in one_line_error(run("--models-dir", tmp_path / "nowhere", cwd=tmp_path))
    assert "no smollm2-135m-instruct model directories" in one_line_error(run("--models-dir", tmp_path, cwd=tmp_path))
    (tmp_path / "smollm2-135m-instruct").mkdir()
    message = one_line_error(run("--models-dir", tmp_path, "--precision", "int4", cwd=tmp_path))
    assert "compress_model.py --model smollm2-135m-instruct --precisions int4" in message
