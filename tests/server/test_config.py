"""Settings layers: flag > environment > config.json > default; bad files stop start-up naming file and key."""
import json
import subprocess
import sys

import pytest

from server.config import ConfigError, Settings, build
from tests.server.harness import ROOT


def write(tmp_path, data) -> str:
    path = tmp_path / "config.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_precedence_flag_over_environment_over_file_over_default(tmp_path):
    path = write(tmp_path, {"model_path": "/from/file", "device": "GPU", "port": 7000, "limits": {"max_batch": 3}})
    assert build({}, None, environ={}) == Settings()
    s = build({}, path, environ={})
    assert (s.model, s.device, s.port, s.limits.max_batch, s.limits.max_waiting) == ("/from/file", "GPU", 7000, 3, 64)
    s = build({}, path, environ={"MODEL_PATH": "/from/env", "PORT": "7001"})
    assert (s.model, s.port, s.device) == ("/from/env", 7001, "GPU")
    s = build({"model": "/from/flag", "port": None}, path, environ={"MODEL_PATH": "/from/env"})
    assert (s.model, s.port) == ("/from/flag", 7000)


def test_both_servables_load():
    for name in ("servable_stream", "servable_unary"):
        s = build({}, str(ROOT / name / "config.json"), environ={})
        assert s.model == "/model" and s.limits.max_batch >= 8
        assert s.engine == "paged" and s.kv_cache.gb > 0 and s.scheduler.max_step_tokens >= 256


@pytest.mark.parametrize(("data", "message"), [
    ({"engine": "vllm"}, "engine: expected one of paged, generate"),
    ({"kv_cache": {"blocks": 10, "gb": 1.0}}, "kv_cache: give blocks or gb"),
    ({"kv_cache": {"gb": -1}}, "kv_cache: give blocks or gb"),
    ({"scheduler": {"max_step_tokens": 0}}, "max_step_tokens: must be at least 1"),
])
def test_bad_engine_settings(tmp_path, data, message):
    with pytest.raises(ConfigError, match=message):
        build({}, write(tmp_path, data), environ={})


def test_engine_settings_from_file_and_flag(tmp_path):
    path = write(tmp_path, {"engine": "generate", "kv_cache": {"blocks": 64}})
    s = build({}, path, environ={})
    assert (s.engine, s.kv_cache.blocks) == ("generate", 64)
    assert build({"engine": "paged"}, path, environ={}).engine == "paged"


@pytest.mark.parametrize(("data", "message"), [
    ("{not json", "not valid JSON"),
    ({"modle_path": "/x"}, "modle_path: unknown key"),
    ({"limits": {"max_btach": 2}}, "limits.max_btach: unknown key"),
    ({"port": "9000"}, "port: expected int"),
    ({"limits": {"max_batch": 2.5}}, "limits.max_batch: expected int"),
    ({"scheduler": {"batch_window_ms": "fast"}}, "scheduler.batch_window_ms: expected float"),
    ({"kv_cache": {"blocks": "many"}}, "kv_cache.blocks: expected int"),
    ([1, 2], "expected a JSON object"),
])
def test_bad_config_names_file_and_key(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        build({}, path, environ={})
    assert str(caught.value).startswith(path) and message in str(caught.value)


def test_bad_config_stops_start_up_with_one_line(tmp_path):
    path = write(tmp_path, {"limits": {"max_btach": 2}})
    result = subprocess.run([sys.executable, "-m", "server", "--config_path", path], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "max_btach" in result.stderr and "Traceback" not in result.stderr


def test_missing_model_directory_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "server", "--model", str(tmp_path / "nope"), "--port", "0"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, env={"HF_HUB_OFFLINE": "1", "PATH": ""})
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "nope" in result.stderr.strip().splitlines()[-1]


def test_generation_stop_strings_from_file(tmp_path):
    assert build({}, write(tmp_path, {"generation": {"stop": ["### End"]}}), environ={}).generation.stop == ("### End",)
    with pytest.raises(ConfigError, match="generation.stop: expected a list of non-empty strings"):
        build({}, write(tmp_path, {"generation": {"stop": "### End"}}), environ={})
