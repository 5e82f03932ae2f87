"""Settings layers: flag > environment > config.json > default; bad files stop start-up naming file and key.
JSON logs: one object per line with the keys the log tools read."""
import json
import re
import subprocess
import sys

import pytest

from server.config import ENVIRONMENT, ConfigError, Settings, load
from server.engine.params import Limits
from tests.server.harness import ROOT


@pytest.fixture(autouse=True)
def environ(monkeypatch):
    """The real process environment, without the server's variables: each test sets the ones it means."""
    for var in ENVIRONMENT:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def write(tmp_path, data) -> str:
    path = tmp_path / "config.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_precedence_flag_over_environment_over_file_over_default(tmp_path, environ):
    path = write(tmp_path, {"model_path": "/from/file", "device": "GPU", "port": 7000, "limits": {"max_batch": 3}})
    assert load({}) == Settings()
    s = load({"config_path": path})
    assert (s.model, s.device, s.port, s.limits.max_batch, s.limits.max_waiting) == ("/from/file", "GPU", 7000, 3, 64)
    environ.setenv("MODEL_PATH", "/from/env")
    environ.setenv("PORT", "7001")
    s = load({"config_path": path})
    assert (s.model, s.port, s.device) == ("/from/env", 7001, "GPU")
    s = load({"config_path": path, "model": "/from/flag", "port": None})  # None: a flag not given
    assert (s.model, s.port, s.device) == ("/from/flag", 7001, "GPU")


def test_defaults():
    s = load({})
    assert (s.model, s.device, s.host, s.port, s.http_port) == ("/model", "CPU", "127.0.0.1", 9000, 8000)  # HTTP on
    assert s.limits == Limits() and s.config_path is None and s.api_key is None and s.metrics_api_key is None


def test_every_environment_variable(environ):
    values = {"MODEL_PATH": "/m", "DEVICE": "GPU", "HOST": "0.0.0.0", "PORT": "9100", "HTTP_PORT": "8100",
              "OV_CACHE_DIR": "/cache", "LOG_LEVEL": "DEBUG", "LOG_FORMAT": "json", "METRICS_PORT": "9190",
              "LLM_API_KEY": "key"}
    for var, value in values.items():
        environ.setenv(var, value)
    s = load({})
    assert {ENVIRONMENT[var]: getattr(s, ENVIRONMENT[var]) for var in values} == {
        "model": "/m", "device": "GPU", "host": "0.0.0.0", "port": 9100, "http_port": 8100, "cache_dir": "/cache",
        "log_level": "DEBUG", "log_format": "json", "metrics_port": 9190, "api_key": "key"}
    environ.delenv("METRICS_PORT")  # the separate port cannot check a key
    environ.setenv("METRICS_API_KEY", "scrape")
    assert load({}).metrics_api_key == "scrape"


def test_selected_model_is_a_name_under_models_and_model_path_wins(environ):
    environ.setenv("SELECTED_MODEL", "smollm2-135m-instruct")
    assert load({}).model == "models/smollm2-135m-instruct"
    environ.setenv("MODEL_PATH", "/model/path")
    assert load({}).model == "/model/path"


def test_only_the_listed_variables_are_read_and_empty_ones_are_unset(environ):
    environ.setenv("GRACE_SECONDS", "5")  # a setting's name, but no variable of ours
    environ.setenv("MODEL", "/not/read")
    environ.setenv("DEVICE", "")
    s = load({})
    assert (s.grace_seconds, s.model, s.device) == (30.0, "/model", "CPU")


@pytest.mark.parametrize("value", ["abc", "-1", "9000.0", " 9000"])
def test_bad_port_variable_is_named(environ, value):
    environ.setenv("METRICS_PORT", value)
    with pytest.raises(ConfigError, match=f"^environment variable METRICS_PORT: expected a port number, got {value!r}$"):
        load({})


def test_settings_built_directly_read_the_same_layers(tmp_path, environ):
    environ.setenv("PORT", "7001")
    s = Settings(config_path=write(tmp_path, {"device": "GPU"}), host="0.0.0.0")
    assert (s.port, s.device, s.host) == (7001, "GPU", "0.0.0.0")


def test_settings_are_frozen_and_keep_the_api_key_out_of_repr():
    s = Settings(api_key="s3cret-key")
    assert "s3cret-key" not in repr(s) and "s3cret-key" not in str(s)
    with pytest.raises(ValueError, match="frozen"):
        s.port = 1


def test_both_servables_load():
    for name in ("servable_stream", "servable_unary"):
        s = load({"config_path": str(ROOT / name / "config.json")})
        assert s.model == "/model" and s.limits.max_batch >= 8
        assert s.kv_cache.gb > 0 and s.scheduler.max_step_tokens >= 256
        assert type(s.generation).__module__ == "server.engine.params"  # the engine's own dataclasses


@pytest.mark.parametrize(("data", "message"), [
    ({"engine": "generate"}, "engine: unknown key"),  # the generate engine is gone
    ({"kv_cache": {"blocks": 10, "gb": 1.0}}, "kv_cache: give blocks or gb"),
    ({"kv_cache": {"gb": -1}}, "kv_cache: give blocks or gb"),
    ({"scheduler": {"max_step_tokens": 0}}, "max_step_tokens: must be at least 1"),
    ({"speculation": {"max_tokens": -1}}, "speculation: max_tokens >= 0"),
    ({"speculation": {"min_ngram": 3, "max_ngram": 2}}, "1 <= min_ngram <= max_ngram"),
    ({"speculation": {"tokens": 4}}, "speculation.tokens: unknown key; expected one of max_ngram, max_step_tokens, "
                                     "max_tokens, min_ngram"),
    ({"speculation": {"max_step_tokens": 1}}, "speculation.max_step_tokens: must be at least 2"),
    ({"limits": {"max_batch": -1}}, "limits.max_batch: must be at least 1"),
    ({"log_format": "xml"}, "log_format: expected text or json"),
    ({"generation_config": "vllm"}, "^generation_config: expected auto or servable, got 'vllm'$"),
    ({"generation": {"stop": ["### End", ""]}}, "generation.stop: expected a list of non-empty strings"),
    ({"http_port": 9000}, "http_port: 9000 is already taken"),
    ({"api_key": "  "}, "api_key: must not be empty"),
    ({"tool_call_parser": "pythonic"}, "tool_call_parser: expected one of hermes, llama3_json, mistral, granite, "
                                        "phi4_mini_json, got 'pythonic'"),
    ({"reasoning_parser": "think"}, "reasoning_parser: expected one of deepseek_r1, qwen3, granite, none"),
    ({"metrics_api_key": ""}, "metrics_api_key: must not be empty"),
    ({"metrics_api_key": "k", "http_port": 0}, "metrics_api_key guards /metrics on the HTTP port, and http_port is 0"),
    ({"metrics_api_key": "k", "metrics_port": 9190}, "the separate metrics port cannot check a key"),
    ({"tls_cert": "/nonexistent.pem"}, "tls_cert and tls_key go together"),
    ({"tls_client_ca": "/ca.pem"}, "tls_client_ca needs tls_cert and tls_key"),
    ({"tls_cert": "/nonexistent.pem", "tls_key": "/nonexistent.key"}, "tls_cert: no such file /nonexistent.pem"),
])
def test_rules_across_settings(tmp_path, data, message):
    with pytest.raises(ConfigError, match=message):
        load({"config_path": write(tmp_path, data)})


def test_engine_settings_from_file(tmp_path):
    s = load({"config_path": write(tmp_path, {"kv_cache": {"blocks": 64}, "scheduler": {"max_step_tokens": 32}})})
    assert (s.kv_cache.blocks, s.scheduler.max_step_tokens) == (64, 32)
    assert s.kv_cache.prefix_caching  # on by default
    assert not load({"config_path": write(tmp_path, {"kv_cache": {"prefix_caching": False}})}).kv_cache.prefix_caching
    with pytest.raises(ConfigError, match="kv_cache.prefix_caching: expected bool"):
        load({"config_path": write(tmp_path, {"kv_cache": {"prefix_caching": "no"}})})
    assert s.speculation.max_tokens == 0  # off by default
    assert s.scheduler.pacing and not load({"config_path": write(tmp_path, {"scheduler": {"pacing": False}})}).scheduler.pacing
    with pytest.raises(ConfigError, match="scheduler.pacing: expected bool"):
        load({"config_path": write(tmp_path, {"scheduler": {"pacing": 1}})})
    assert s.scheduler.graphs == 1 and load({"config_path": write(tmp_path, {"scheduler": {"graphs": 3}})}).scheduler.graphs == 3
    for bad in (0, 9):
        with pytest.raises(ConfigError, match="scheduler.graphs: must be 1 to 8"):
            load({"config_path": write(tmp_path, {"scheduler": {"graphs": bad}})})
    assert load({"config_path": write(tmp_path, {"speculation": {"max_tokens": 4}})}).speculation.max_tokens == 4


def test_a_flag_can_settle_a_rule_the_file_alone_breaks(tmp_path):
    """The rules see the merged settings: the file's http_port clashes with the default gRPC port, not the flag's."""
    assert load({"config_path": write(tmp_path, {"http_port": 9000}), "port": 9100}).http_port == 9000


@pytest.mark.parametrize(("data", "message"), [
    ("{not json", "not valid JSON (key must be a string at line 1 column 2)"),
    ({"modle_path": "/x"}, "modle_path: unknown key; expected one of api_key, batch_invariant, cache_dir,"),
    ({"model": "/x"}, "model: unknown key"),  # model_path in the file
    ({"config_path": "other.json"}, "config_path: unknown key"),
    ({"limits": {"max_btach": 2}}, "limits.max_btach: unknown key; expected one of max_batch, max_logprobs, max_new_tokens_cap,"),
    ({"port": "9000"}, "port: expected int, got str '9000'"),
    ({"port": True}, "port: expected int, got bool True"),
    ({"trust_remote_code": 1}, "trust_remote_code: expected bool, got int 1"),
    ({"device": 0}, "device: expected str, got int 0"),
    ({"limits": {"max_batch": 2.5}}, "limits.max_batch: expected int, got float 2.5"),
    ({"limits": [8]}, "limits: expected an object, got list [8]"),
    ({"scheduler": {"max_step_tokens": "many"}}, "scheduler.max_step_tokens: expected int"),
    ({"kv_cache": {"blocks": "many"}}, "kv_cache.blocks: expected int"),
    ({"generation": {"stop": "### End"}}, "generation.stop: expected a list of non-empty strings"),
    ({"generation": {"stop": ["### End", 1]}}, "generation.stop.1: expected str, got int 1"),
    ([1, 2], "expected a JSON object"),
])
def test_bad_config_names_file_and_key(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        load({"config_path": path})
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.json: no such config file"):
        load({"config_path": str(tmp_path / "nope.json")})


def test_file_numbers_as_json_has_them(tmp_path):
    """Floats accept whole numbers; everything else keeps its JSON type."""
    s = load({"config_path": write(tmp_path, {"grace_seconds": 5,
                                               "kv_cache": {"gb": 1}, "ov_config": {"NUM_STREAMS": "1"}})})
    assert (s.grace_seconds, s.kv_cache.gb) == (5.0, 1.0)
    assert isinstance(s.grace_seconds, float) and s.ov_config == {"NUM_STREAMS": "1"}


def test_bad_flag_value_is_one_line():
    with pytest.raises(ConfigError, match=r"^port: expected int, got str 'x'$"):
        load({"port": "x"})


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


def test_generation_config_is_auto_unless_the_file_or_the_flag_says_servable(tmp_path):
    assert load({}).generation_config == "auto"
    assert load({"config_path": write(tmp_path, {"generation_config": "servable"})}).generation_config == "servable"
    result = subprocess.run([sys.executable, "-m", "server", "--generation-config", "model"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stderr.strip() == \
        "error: generation_config: expected auto or servable, got 'model'"


def test_generation_stop_strings_from_file(tmp_path):
    assert load({"config_path": write(tmp_path, {"generation": {"stop": ["### End"]}})}).generation.stop == ("### End",)


def test_json_logs_one_object_per_line():
    program = ("import logging; from server import logs; logs.setup('info', 'json'); log = logging.getLogger('server.x')\n"
               "log.info('done %s', 'ok', extra={'rpc': 'Generate', 'tokens_in': 3, 'path': __import__('pathlib').Path('/p')})\n"
               "log.debug('not shown')\n"
               "try:\n    1 / 0\nexcept ZeroDivisionError:\n    log.exception('failed')\n")
    result = subprocess.run([sys.executable, "-c", program], cwd=ROOT, capture_output=True, text=True, timeout=60)
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert len(lines) == 2
    first, second = lines
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first.pop("time"))
    assert first == {"level": "INFO", "logger": "server.x", "message": "done ok", "rpc": "Generate", "tokens_in": 3,
                     "path": "/p"}
    assert (second["level"], second["message"]) == ("ERROR", "failed")
    assert second["exception"].startswith("Traceback") and "ZeroDivisionError" in second["exception"]
