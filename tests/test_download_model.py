"""download_model.py and the default model it builds (real SmolLM2-135M from the embedded GGUF)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from modelcheck import DEFAULT_MODEL, QUESTION, REPO, greedy, load, one_line_error
from modelprep import registry
from modelprep.store import REQUIRED, is_complete, read_manifest


def test_default_model_converts(fp32_model_dir):
    assert is_complete(fp32_model_dir)
    assert all((fp32_model_dir / name).is_file() for name in REQUIRED)
    manifest = read_manifest(fp32_model_dir)
    assert (manifest.name, manifest.precision) == (DEFAULT_MODEL, "fp32")
    assert manifest.source.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


def test_fp32_greedy_answer(fp32_model_dir):
    _, tokenizer = load(fp32_model_dir)
    text = tokenizer.decode(greedy(fp32_model_dir, QUESTION, 16), skip_special_tokens=True)
    assert text.startswith("The theory of relativity is"), text


def test_openvino_genai_loads_the_same_directory(fp32_model_dir):
    """The OpenVINO tokenizer/detokenizer make the directory usable by LLMPipeline, with the same answer."""
    import openvino_genai

    _, tokenizer = load(fp32_model_dir)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], tokenize=False,
                                           add_generation_prompt=True)
    pipe = openvino_genai.LLMPipeline(str(fp32_model_dir), "CPU")
    config = openvino_genai.GenerationConfig(max_new_tokens=16, do_sample=False, apply_chat_template=False)
    text = pipe.generate(prompt, config)
    assert text == tokenizer.decode(greedy(fp32_model_dir, QUESTION, 16), skip_special_tokens=True)


def test_help_lists_every_model_with_its_hub_id(run_cli):
    result = run_cli("download_model.py", "--help")
    assert result.returncode == 0
    for spec in registry.MODELS.values():
        assert any(spec.name in line and spec.hub_id in line for line in result.stdout.splitlines()), spec.name
    seed = ["tiny-llama-1b-chat", "phi-2", "dolly-v2-3b", "red-pajama-3b-instruct", "red-pajama-3b-chat", "mistral-7b",
            "llama-2-chat-7b", "llama-3-8b-instruct", "notus-7b-v1", "mpt-7b-chat", "zephyr-7b-beta",
            "neural-chat-7b-v3-1"]
    assert set(seed + [DEFAULT_MODEL]) <= set(registry.MODELS)  # the seed models keep their rows (today's: test_families.py)


def test_complete_model_is_not_rebuilt(run_cli, fp32_model_dir):
    before = (fp32_model_dir / "openvino_model.bin").stat().st_mtime_ns
    result = run_cli("download_model.py", "--model", DEFAULT_MODEL, "--output-dir", fp32_model_dir.parent)
    assert result.returncode == 0, result.stderr
    assert "already complete" in result.stdout
    assert (fp32_model_dir / "openvino_model.bin").stat().st_mtime_ns == before


def test_unknown_model_exits_2_and_lists_choices(run_cli):
    result = run_cli("download_model.py", "--model", "no-such-model")
    line = one_line_error(result)
    assert result.returncode == 2
    assert "no-such-model" in line and all(name in line for name in registry.MODELS)


def test_bad_weight_format_exits_2(run_cli):
    result = run_cli("download_model.py", "--weight-format", "int3")
    assert "int3" in one_line_error(result) and result.returncode == 2


@pytest.mark.parametrize("model", ["tiny-llama-1b-chat", "llama-2-chat-7b", "someone/some-model"])
def test_hub_model_without_network_is_one_sentence(run_cli, tmp_path, model):
    result = run_cli("download_model.py", "--model", model, "--output-dir", tmp_path)
    line = one_line_error(result)
    assert result.returncode == 1 and "not reachable" in line, line
    assert list(tmp_path.iterdir()) == []


def test_gated_and_missing_repos_are_explained():
    """The messages for errors only a live hub can produce (real huggingface_hub exception types)."""
    import httpx
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    from modelprep.hub_errors import explain

    response = httpx.Response(401, request=httpx.Request("GET", "https://huggingface.co/x"))
    assert explain(OSError("disk full"), "meta-llama/Llama-2-7b-chat-hf") is None  # not a hub error
    try:
        raise OSError("cannot load") from GatedRepoError("gated", response=response)
    except OSError as exc:
        assert "HF_TOKEN" in str(explain(exc, "meta-llama/Llama-2-7b-chat-hf"))
    missing = explain(RepositoryNotFoundError("nope", response=response), "a/b")
    assert "not found" in str(missing)


@pytest.mark.parametrize("where", ["file", "file/sub", "/sys/modelprep-test"])
def test_unwritable_output_dir_is_one_sentence(run_cli, tmp_path, where):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    output = where if where.startswith("/") else tmp_path / where
    line = one_line_error(run_cli("download_model.py", "--output-dir", output))
    assert "cannot write to output directory" in line


def _start_download(output_dir, wait_for: str):
    """Start a real conversion and return once `wait_for` exists inside its temporary directory."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, str(REPO / "download_model.py"), "--output-dir", str(output_dir)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(output_dir.glob(f".{DEFAULT_MODEL}.partial-*/{wait_for}")):
        assert proc.poll() is None and time.monotonic() < deadline, "conversion never started"
        time.sleep(0.2)
    return proc


@pytest.mark.model  # converts a checkpoint in a subprocess
def test_interrupted_download_leaves_nothing(tmp_path):
    proc = _start_download(tmp_path, ".hf-checkpoint")  # mid-conversion
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.model  # converts a checkpoint in a subprocess
def test_killed_download_never_looks_complete(tmp_path):
    from modelprep.store import Manifest, atomic_dir

    proc = _start_download(tmp_path, "")
    proc.kill()
    proc.wait()
    leftovers = list(tmp_path.iterdir())
    assert not (tmp_path / DEFAULT_MODEL).exists() and not any(is_complete(p) for p in leftovers)
    # The next run clears what the dead process left.
    try:
        with atomic_dir(tmp_path / DEFAULT_MODEL, Manifest(DEFAULT_MODEL, "fp32", "test")):
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert list(tmp_path.iterdir()) == []


def test_weight_format_int8_compresses_the_fp32_directory(run_cli, scratch_models, fp32_model_dir):
    result = run_cli("download_model.py", "--output-dir", scratch_models, "--weight-format", "int8")
    assert result.returncode == 0, result.stderr[-2000:]
    target = scratch_models / f"{DEFAULT_MODEL}_INT8_compressed_weights"
    manifest = read_manifest(target)
    assert is_complete(target) and manifest.precision == "int8" and manifest.source == str(scratch_models / DEFAULT_MODEL)
    assert (target / "openvino_model.bin").stat().st_size <= 0.35 * (fp32_model_dir / "openvino_model.bin").stat().st_size
