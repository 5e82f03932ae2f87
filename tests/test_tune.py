"""modelprep/tune.py: the runtime options compress_model.py measures for a directory and records in its manifest."""
from __future__ import annotations

import shutil

import pytest

from modelcheck import MODELS_DIR
from modelprep import fidelity, tune
from modelprep.store import is_complete, read_manifest

GROUP = tune.DQ


@pytest.fixture(scope="module")
def reference(fp32_model_dir):
    return fidelity.reference(fp32_model_dir)


def test_candidates_cover_the_activation_groups_and_the_weights_group():
    groups = [c[GROUP] for c in tune.candidates(64)]
    assert groups == ["32", "64", "128", tune.PER_TOKEN]  # the plugin's default first: the ratios' baseline
    assert [c[GROUP] for c in tune.candidates(256)] == ["32", "64", "128", "256", tune.PER_TOKEN]
    assert [c[GROUP] for c in tune.candidates(None)] == ["32", "64", "128", tune.PER_TOKEN]


@pytest.mark.parametrize("bar, chosen", [(0.5, {GROUP: "128"}), (1.01, {})])
def test_the_fastest_candidate_that_passes_the_fidelity_check_is_chosen(int8_model_dir, reference, bar, chosen):
    """min_speedup 0: every candidate counts as faster, so each is checked; a bar none can pass (1.01) leaves the
    plugin's defaults."""
    runtime = tune.tune(int8_model_dir, reference=reference, min_agreement=bar, rounds=1, steps=2,
                        options=[dict(tune.BASELINE), {GROUP: "128"}], min_speedup=0.0)
    assert runtime.options == chosen
    assert runtime.cpu == tune.cpu_kind() and runtime.rounds == 1
    base, other = runtime.candidates
    assert base["options"] == tune.BASELINE and base["vs_default"] == {"1": 1.0, "8": 1.0}
    assert set(other["ms"]) == {"1", "8"} and all(v > 0 for v in other["ms"].values())
    assert other["agreement"] >= fidelity.MIN_AGREEMENT["int8"]  # DQ 128 keeps INT8's answers
    assert other["passed"] is (bar <= 1) and other["chosen"] is bool(chosen) and base["chosen"] is not bool(chosen)


def test_retune_records_the_runtime_in_a_complete_directory(run_cli, int8_model_dir, tmp_path):
    """`--retune` measures a complete directory again without rebuilding it; the directory stays complete."""
    models = tmp_path / "models"
    models.mkdir()
    fp32 = MODELS_DIR / "smollm2-135m-instruct"
    (models / fp32.name).symlink_to(fp32)
    shutil.copytree(int8_model_dir, models / int8_model_dir.name)
    result = run_cli("compress_model.py", "--output-dir", models, "--precisions", "int8", "--retune", "--no-check")
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = read_manifest(models / int8_model_dir.name)
    assert is_complete(models / int8_model_dir.name)
    assert manifest.runtime["cpu"] == tune.cpu_kind()
    groups = [c["options"][GROUP] for c in manifest.runtime["candidates"]]
    assert groups[:3] == ["32", "64", "128"] and all(c["passed"] is None for c in manifest.runtime["candidates"])
    assert f"{int8_model_dir.name}: runtime options" in result.stdout and "ms@1" in result.stdout
