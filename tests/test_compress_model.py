"""compress_model.py and the FP16 / INT8 / INT4 directories it writes."""
from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from modelcheck import DEFAULT_MODEL, MODELS_DIR, QUESTION, greedy, load, one_line_error, record
from modelprep import fidelity
from modelprep.fidelity import F32, FACTS, Fidelity, Row
from modelprep.report import fidelity_report
from modelprep.store import MANIFEST, Manifest, is_complete, read_manifest

# Lower bounds for teacher-forced top-1 agreement with FP32 at f32 (4 prompts x 24 tokens), as recorded by the
# check compress_model.py runs. Measured on SmolLM2-135M: FP16 1.00, INT8 0.96, INT4 (group 64, ratio 1.0) sym 0.67,
# asym 0.66; a 135M model is far more sensitive to 4-bit weights than the 7B models the seed demo targets.
MIN_AGREEMENT = {"fp16": 0.98, "int8": 0.9, "int4": 0.6}


def weights(path) -> int:
    return (path / "openvino_model.bin").stat().st_size


def test_compressed_weight_sizes(fp32_model_dir, fp16_model_dir, int8_model_dir, int4_model_dir):
    assert weights(fp16_model_dir) <= 0.55 * weights(fp32_model_dir)
    assert weights(int8_model_dir) <= 0.35 * weights(fp32_model_dir)
    assert weights(int4_model_dir) < weights(int8_model_dir)


def test_directory_names_and_manifests(fp32_model_dir, fp16_model_dir, int8_model_dir, int4_model_dir):
    expected = {"fp16": "_FP16", "int8": "_INT8_compressed_weights", "int4": "_INT4_compressed_weights"}
    for path in (fp16_model_dir, int8_model_dir, int4_model_dir):
        manifest = read_manifest(path)
        assert is_complete(path) and path.name == DEFAULT_MODEL + expected[manifest.precision]
        assert path.parent == fp32_model_dir.parent
    assert read_manifest(int4_model_dir).compression == {"mode": "int4_sym", "sym": True, "group_size": 64, "ratio": 1.0}


def test_int8_greedy_answer(int8_model_dir):
    _, tokenizer = load(int8_model_dir)
    text = tokenizer.decode(greedy(int8_model_dir, QUESTION, 16), skip_special_tokens=True)
    assert text.startswith("The theory of relativity is"), text


@pytest.mark.parametrize("precision", ["fp16", "int8", "int4"])
def test_token_agreement_with_fp32(request, fp32_model_dir, precision, record_property):
    model_dir = request.getfixturevalue(f"{precision}_model_dir")
    result = Fidelity.from_manifest(read_manifest(model_dir).fidelity)
    record(precision, result)
    record_property("token_agreement", result.row(F32).agreement)
    assert [r.precision for r in result.rows] == list(dict.fromkeys((fidelity.cpu_default_precision(), F32)))
    assert result.row(F32).agreement >= MIN_AGREEMENT[precision], result
    # Coherent: every precision still answers the question on topic.
    _, tokenizer = load(model_dir)
    assert tokenizer.decode(greedy(model_dir, QUESTION, 8), skip_special_tokens=True).startswith("The theory of relativity")


def test_compress_cli_prints_the_recorded_fidelity(run_cli, fp16_model_dir, int8_model_dir, int4_model_dir):
    """Complete directories are not rebuilt nor checked again: the command prints what their manifests recorded."""
    result = run_cli("compress_model.py", "--output-dir", MODELS_DIR)
    assert result.returncode == 0 and result.stdout.count("already complete") == 3, result.stderr[-2000:]
    default = fidelity.cpu_default_precision()
    for path in (fp16_model_dir, int8_model_dir, int4_model_dir):
        manifest = read_manifest(path)
        lines = [line for line in result.stdout.splitlines() if line.startswith(path.name + " ")]
        recorded = Fidelity.from_manifest(manifest.fidelity).rows
        # One row at the CPU's default inference precision, one at f32 (one row on CPUs where they are the same).
        assert [line.split()[1] for line in lines] == [r.precision for r in recorded] == list(dict.fromkeys((default, F32)))
        assert all(f"  {r.agreement:.2f}  " in line for line, r in zip(lines, recorded)), result.stdout
        needs = f"{path.name} needs f32 inference precision"
        assert (needs in result.stderr) == (manifest.inference_precision == F32), result.stderr


def test_compress_cli_is_idempotent_and_force_rebuilds(run_cli, scratch_models):
    args = ("compress_model.py", "--output-dir", scratch_models, "--precisions", "fp16", "--no-check")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    target = scratch_models / f"{DEFAULT_MODEL}_FP16"
    assert is_complete(target) and "0.50" in first.stdout  # the size table: weights ratio to FP32
    # Not checked: nothing recorded, and the user is told to run it at f32.
    assert read_manifest(target).fidelity == {} and f"{target.name} was not checked against FP32" in first.stderr
    stamp = (target / "openvino_model.bin").stat().st_mtime_ns
    again = run_cli(*args)
    assert "already complete" in again.stdout and (target / "openvino_model.bin").stat().st_mtime_ns == stamp
    forced = run_cli(*args, "--force")
    assert forced.returncode == 0 and (target / "openvino_model.bin").stat().st_mtime_ns != stamp
    assert is_complete(target) and sorted(p.name for p in scratch_models.iterdir()) == [DEFAULT_MODEL, target.name]


def test_a_directory_poor_even_at_f32_is_refused_and_nothing_is_left(scratch_models, int8_model_dir):
    """In process, to reuse the FP32 reference the fixtures computed; the CLI turns the error into one line and
    exit code 1 (test_group_size_that_does_not_fit_is_one_sentence)."""
    from modelprep.errors import ModelPrepError
    from modelprep.pipeline import compress

    # INT8 agrees with FP32 on about 96% of tokens; asking for all of them makes it a directory to refuse.
    with pytest.raises(ModelPrepError) as refused:
        compress(scratch_models / DEFAULT_MODEL, "int8", progress=False, min_agreement=1.0)
    line = str(refused.value)
    assert f"refused {DEFAULT_MODEL}_INT8_compressed_weights: even at f32" in line and "(minimum 1.00)" in line
    assert "\n" not in line
    assert sorted(p.name for p in scratch_models.iterdir()) == [DEFAULT_MODEL]  # no directory, no temporary


@pytest.mark.model  # its model directory comes by name, past tests/conftest.py's marking
@pytest.mark.parametrize("precision", ["fp16", "int8", "int4"])
def test_answers_right_at_the_precision_its_manifest_names(request, precision):
    """On an AVX512_BF16 CPU INT8 answered "L'Étoile, la Marseillaise..." at bf16: whatever the CPU, a directory
    run at the inference precision its manifest names (None: the default) answers the check's questions right."""
    model_dir = request.getfixturevalue(f"{precision}_model_dir")
    needed = read_manifest(model_dir).inference_precision
    assert needed in (None, F32)
    model, tokenizer = load(model_dir) if needed is None else (fidelity.load(model_dir, needed), load(model_dir)[1])
    for question, word in FACTS:
        assert word in fidelity.answer(model, tokenizer, question), (precision, needed, question)


def test_required_precision_and_refusal_follow_the_rows(tmp_path):
    """The decision and what the user is told, on the three outcomes a CPU with bf16 can give."""
    def row(precision, agreement, wrong=()):
        answers = {q: "The capital is Lyon." if q in wrong else f"It is {w}." for q, w in FACTS}
        return Row(precision, agreement, answers, list(wrong), agreement >= 0.8 and not wrong)

    fine = Fidelity("bf16", 0.8, [row("bf16", 0.95), row(F32, 0.96)])
    needs_f32 = Fidelity("bf16", 0.8, [row("bf16", 0.93, wrong=[FACTS[0][0]]), row(F32, 0.96)])
    poor = Fidelity("bf16", 0.8, [row("bf16", 0.4), row(F32, 0.5)])
    assert (fine.required_precision, fine.refused) == (None, False)
    assert (needs_f32.required_precision, needs_f32.refused) == (F32, False)
    assert poor.refused
    message = str(fidelity.refusal("m_INT4_compressed_weights", poor))
    assert "\n" not in message and "agreement with FP32 0.50 (minimum 0.80)" in message

    dirs = []
    for name, result in (("m_FP16", fine), ("m_INT8_compressed_weights", needs_f32)):
        (tmp_path / name).mkdir()
        manifest = Manifest("m", "int8", "test", inference_precision=result.required_precision,
                            fidelity=result.to_manifest())
        (tmp_path / name / MANIFEST).write_text(json.dumps(asdict(manifest)))
        assert Fidelity.from_manifest(read_manifest(tmp_path / name).fidelity) == result
        dirs.append(tmp_path / name)
    table, warnings = fidelity_report(dirs)
    assert [line.split("  ")[-1] for line in table.splitlines()[2:]] == ["ok", "ok", "wrong answer", "ok"], table
    (warning,) = warnings
    assert warning.startswith("m_INT8_compressed_weights needs f32") and "INFERENCE_PRECISION_HINT" in warning


def test_server_reads_the_recorded_precision(int8_model_dir, tmp_path):
    from server.engine.model import manifest_precision

    assert manifest_precision(int8_model_dir) == read_manifest(int8_model_dir).inference_precision
    manifest = json.loads((int8_model_dir / MANIFEST).read_text())
    (tmp_path / MANIFEST).write_text(json.dumps({**manifest, "inference_precision": "f32", "from_a_newer_version": 1}))
    assert manifest_precision(tmp_path) == "f32"
    assert manifest_precision(tmp_path / "made-elsewhere") is None


def test_int4_overrides_are_applied(run_cli, scratch_models):
    result = run_cli("compress_model.py", "--output-dir", scratch_models, "--precisions", "int4",
                     "--group-size", "32", "--ratio", "0.9", "--sym", "--no-check", "--no-tune")
    assert result.returncode == 0, result.stderr[-2000:]
    manifest = read_manifest(scratch_models / f"{DEFAULT_MODEL}_INT4_compressed_weights")
    assert manifest.compression == {"mode": "int4_sym", "sym": True, "group_size": 32, "ratio": 0.9}
    assert manifest.runtime == {} and "runtime options" not in result.stdout  # --no-tune (tests/test_tune.py tunes)


def test_compressing_a_model_not_downloaded_names_the_command(run_cli, tmp_path):
    line = one_line_error(run_cli("compress_model.py", "--model", "tiny-llama-1b-chat", "--output-dir", tmp_path))
    assert f"python download_model.py --model tiny-llama-1b-chat --output-dir {tmp_path}" in line


def test_unknown_model_exits_2(run_cli):
    result = run_cli("compress_model.py", "--model", "no-such-model")
    assert "smollm2-135m-instruct" in one_line_error(result) and result.returncode == 2


@pytest.mark.parametrize("args", [("--precisions", "int3"), ("--precisions", ""), ("--ratio", "1.5"),
                                  ("--group-size", "0"), ("--group-size", "x")])
def test_bad_options_exit_2(run_cli, args):
    result = run_cli("compress_model.py", *args)
    one_line_error(result)
    assert result.returncode == 2


def test_group_size_that_does_not_fit_is_one_sentence(run_cli, scratch_models):
    result = run_cli("compress_model.py", "--output-dir", scratch_models, "--precisions", "int4", "--group-size", "100")
    assert result.returncode == 1 and "group size 100" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in scratch_models.iterdir()) == [DEFAULT_MODEL]
