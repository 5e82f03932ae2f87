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


def _timed(*times: dict) -> list[tune.Candidate]:
    """Candidates 32 (the baseline), 64, 128, ... with made-up ms of a decode step per round, compared."""
    found = [tune.Candidate({GROUP: str(32 * 2**i)}, times=t) for i, t in enumerate(times)]
    tune.compare(found)
    return found


BASE = {1: [10.0, 10.3, 10.1], 8: [20.0, 20.4, 20.2]}  # a quiet machine: the rounds within 3%


def test_a_candidate_faster_in_every_round_is_chosen():
    found = _timed(BASE, {1: [9.6, 9.9, 9.7], 8: [19.2, 19.6, 19.4]}, {1: [9.0, 9.2, 9.1], 8: [18.0, 18.3, 18.1]})
    assert found[2].rounds == {1: [1.111, 1.12, 1.11], 8: [1.111, 1.115, 1.116]}
    assert tune.choose(found) == (found[2], "")


def test_a_candidate_faster_in_the_median_but_slower_in_one_round_is_not_chosen():
    """128's median is 10% faster, but it lost round 2 at 8 sequences: 64, faster in every round, wins."""
    lost = {1: [9.0, 9.2, 9.1], 8: [18.0, 20.8, 18.1]}
    found = _timed(BASE, {1: [9.7, 10.0, 9.8], 8: [19.4, 19.8, 19.6]}, lost)
    assert found[2].speedup > found[1].speedup > tune.MIN_SPEEDUP and min(found[2].rounds[8]) < 1
    assert tune.choose(found) == (found[1], "")
    alone = _timed(BASE, lost)
    assert tune.choose(alone) == (alone[0], "")  # the plugin's defaults


def test_a_candidate_faster_in_every_round_by_less_than_min_speedup_is_not_chosen():
    found = _timed(BASE, {1: [9.95, 10.25, 10.05], 8: [19.9, 20.3, 20.1]})
    assert min(found[1].rounds[1] + found[1].rounds[8]) > 1 and found[1].speedup < tune.MIN_SPEEDUP
    assert tune.choose(found) == (found[0], "")


def test_a_noisy_baseline_keeps_the_plugins_defaults_with_a_note():
    """The baseline's rounds at 8 sequences spread 1.31x: every candidate looks faster in the median, and 64 in
    every round, but the machine is too busy to tell; nothing is checked for fidelity."""
    checked = []
    found = _timed({1: [10.0, 10.4, 10.2], 8: [20.0, 26.2, 21.0]}, {1: [9.6, 10.0, 9.8], 8: [19.6, 20.0, 19.8]})
    chosen, note = tune.choose(found, check=lambda options: checked.append(options) or (1.0, True))
    assert chosen is found[0] and checked == [] and found[0].spread == pytest.approx(1.31)
    assert note == ("the machine was too busy to tell the candidates apart (baseline spread 1.31x); the plugin's "
                    "defaults kept; rerun `compress_model.py --retune` on a quiet machine")


def test_the_fastest_failing_the_fidelity_check_gives_way_to_the_next():
    agreement = {"64": 0.95, "128": 0.5}
    checked = []

    def check(options):
        checked.append(options[GROUP])
        return agreement[options[GROUP]], agreement[options[GROUP]] >= 0.8

    found = _timed(BASE, {1: [9.6, 9.9, 9.7], 8: [19.2, 19.6, 19.4]}, {1: [9.0, 9.2, 9.1], 8: [18.0, 18.3, 18.1]})
    assert tune.choose(found, check=check) == (found[1], "")
    assert checked == ["128", "64"] and (found[2].passed, found[1].passed) == (False, True)
    assert (found[2].agreement, found[1].agreement) == (0.5, 0.95)


def test_nothing_timed_chooses_nothing():
    """The plugin refused the baseline: no timings, nothing to choose."""
    assert tune.choose([tune.Candidate(dict(tune.BASELINE), error="refused")]) == (None, "")


def test_the_table_shows_the_worst_round_and_the_note_and_reads_older_manifests():
    runtime = {"note": "the machine was too busy", "candidates": [
        {"options": {GROUP: "32"}, "ms": {"1": 10.1, "8": 20.2}, "vs_default": {"1": 1.0, "8": 1.0},
         "rounds": {"1": [1.0, 1.0], "8": [1.0, 1.0]}, "chosen": True},
        {"options": {GROUP: "128"}, "ms": {"1": 9.1, "8": 18.3}, "vs_default": {"1": 1.11, "8": 1.1},
         "rounds": {"1": [1.1, 1.12], "8": [0.97, 1.2]}, "agreement": 0.93, "passed": True, "chosen": False}]}
    lines = tune.table(runtime).splitlines()
    assert "worst round" in lines[0] and "0.97" in lines[2] and lines[-1] == "the machine was too busy"
    older = {"candidates": [{k: v for k, v in c.items() if k != "rounds"} for c in runtime["candidates"]]}
    lines = tune.table(older).splitlines()  # before the rounds and the note were recorded
    assert len(lines) == 3 and lines[2].split()[5] == "-"


@pytest.mark.parametrize("bar, chosen", [(0.5, {GROUP: "128"}), (1.01, {})])
def test_the_fastest_candidate_that_passes_the_fidelity_check_is_chosen(int8_model_dir, reference, bar, chosen):
    """min_speedup and min_round 0: every candidate counts as faster, so each is checked; a bar none can pass (1.01)
    leaves the plugin's defaults."""
    runtime = tune.tune(int8_model_dir, reference=reference, min_agreement=bar, rounds=1, steps=2,
                        options=[dict(tune.BASELINE), {GROUP: "128"}], min_speedup=0.0, min_round=0.0)
    assert runtime.options == chosen
    assert runtime.cpu == tune.cpu_kind() and runtime.rounds == 1
    assert runtime.spread == 1.0 and runtime.note == ""  # one round: no spread to judge
    base, other = runtime.candidates
    assert base["options"] == tune.BASELINE and base["vs_default"] == {"1": 1.0, "8": 1.0}
    assert base["rounds"] == {"1": [1.0], "8": [1.0]} and other["rounds"]["1"] == [other["vs_default"]["1"]]
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
    assert manifest.runtime["cpu"] == tune.cpu_kind() and manifest.runtime["spread"] >= 1
    assert ("too busy" in manifest.runtime["note"]) is (manifest.runtime["spread"] > tune.MAX_SPREAD)
    groups = [c["options"][GROUP] for c in manifest.runtime["candidates"]]
    assert groups[:3] == ["32", "64", "128"] and all(c["passed"] is None for c in manifest.runtime["candidates"])
    assert f"{int8_model_dir.name}: runtime options" in result.stdout and "ms@1" in result.stdout
