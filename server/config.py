"""Settings: one object, from CLI flags > environment variables > the servable's config.json > defaults."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.engine.params import GenerationDefaults, KVCacheConfig, Limits, SchedulerConfig


class ConfigError(Exception):
    """A setting is wrong; the message names the file (or variable) and the key."""


@dataclass(frozen=True)
class Settings:
    model: str = "/model"  # the seed demo's Docker layout; `--model` or MODEL_PATH overrides
    device: str = "CPU"
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 9000
    http_port: int = 0  # the OpenAI-compatible HTTP API and chat page; 0 turns it off
    served_model_name: str | None = None  # the model's name over HTTP; default: its directory's name
    cache_dir: str = str(Path.home() / ".cache" / "llm-server" / "openvino")
    ov_config: dict = field(default_factory=dict)
    generation: GenerationDefaults = field(default_factory=GenerationDefaults)
    limits: Limits = field(default_factory=Limits)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    engine: str = "paged"  # continuous batching on paged attention; "generate": whole batches through generate()
    kv_cache: KVCacheConfig = field(default_factory=KVCacheConfig)  # the paged engine's cache size
    grace_seconds: float = 30.0  # how long running calls may finish on SIGTERM
    max_message_bytes: int = 4 * 1024 * 1024
    trust_remote_code: bool = False
    log_level: str = "INFO"
    log_format: str = "text"  # or "json"
    log_prompts: bool = False  # prompt text in request logs only when asked
    metrics_port: int = 0  # Prometheus endpoint; 0 turns it off
    api_key: str | None = field(default=None, repr=False)  # never logged
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None  # set: clients must present a certificate signed by it


ENGINES = ("paged", "generate")

# Environment variable -> setting.
ENVIRONMENT = {
    "SELECTED_MODEL": "model",  # a name under models/, as in the seed demo; MODEL_PATH wins
    "MODEL_PATH": "model",
    "DEVICE": "device",
    "HOST": "host",
    "PORT": "port",
    "HTTP_PORT": "http_port",
    "OV_CACHE_DIR": "cache_dir",
    "LOG_LEVEL": "log_level",
    "LOG_FORMAT": "log_format",
    "METRICS_PORT": "metrics_port",
    "LLM_API_KEY": "api_key",
}
SECTIONS = {"generation": GenerationDefaults, "limits": Limits, "scheduler": SchedulerConfig, "kv_cache": KVCacheConfig}
TOP_LEVEL = {f.name: f for f in dataclasses.fields(Settings)} | {"model_path": None}


def _typed(value: Any, kind: type, where: str) -> Any:
    if kind is tuple:  # a list of strings in JSON
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{where}: expected a list of non-empty strings, got {value!r}")
        return tuple(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, bool) or not isinstance(value, kind):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def _field_type(cls, name: str) -> type:
    hint = {f.name: f.type for f in dataclasses.fields(cls)}[name]
    hint = hint if isinstance(hint, str) else hint.__name__
    return {"int": int, "float": float, "bool": bool, "str": str, "dict": dict, "tuple": tuple}.get(
        hint.split("[")[0].split(" ")[0], str)


def _section(cls, data: Any, where: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected an object")
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"{where}.{key}: unknown key; expected one of {', '.join(sorted(names))}")
    return cls(**{k: _typed(v, _field_type(cls, k), f"{where}.{k}") for k, v in data.items()})


def load_file(path: str | Path) -> dict:
    """A servable config.json as Settings fields."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    values: dict = {}
    for key, value in data.items():
        where = f"{path}: {key}"
        if key not in TOP_LEVEL or key == "model":
            raise ConfigError(f"{where}: unknown key; expected one of {', '.join(sorted(set(TOP_LEVEL) - {'model'}))}")
        if key in SECTIONS:
            values[key] = _section(SECTIONS[key], value, where)
        elif key == "model_path":
            values["model"] = _typed(value, str, where)
        else:
            values[key] = _typed(value, _field_type(Settings, key), where)
    return values


def from_environment(environ=os.environ) -> dict:
    values = {}
    for var, name in ENVIRONMENT.items():
        if environ.get(var):
            raw = environ[var]
            if var == "SELECTED_MODEL":
                values[name] = str(Path("models") / raw)
            elif name.endswith("port"):
                if not raw.isdigit():
                    raise ConfigError(f"environment variable {var}: expected a port number, got {raw!r}")
                values[name] = int(raw)
            else:
                values[name] = raw
    return values


def build(cli: dict, config_path: str | None, environ=os.environ) -> Settings:
    """Merge the layers; `cli` holds only the flags the user gave (None means not given)."""
    values: dict = {}
    if config_path:
        values.update(load_file(config_path))
    values.update(from_environment(environ))
    values.update({k: v for k, v in cli.items() if v is not None})
    settings = Settings(**values)
    check(settings)
    return settings


def check(s: Settings) -> None:
    if s.engine not in ENGINES:
        raise ConfigError(f"engine: expected one of {', '.join(ENGINES)}, got {s.engine!r}")
    if s.kv_cache.blocks < 0 or s.kv_cache.gb < 0 or (s.kv_cache.blocks and s.kv_cache.gb):
        raise ConfigError("kv_cache: give blocks or gb (positive), not both")
    if s.scheduler.max_step_tokens < 1:
        raise ConfigError("scheduler.max_step_tokens: must be at least 1")
    if s.log_format not in ("text", "json"):
        raise ConfigError(f"log_format: expected text or json, got {s.log_format!r}")
    if bool(s.tls_cert) != bool(s.tls_key):
        raise ConfigError("tls_cert and tls_key go together: give both or neither")
    if s.tls_client_ca and not s.tls_cert:
        raise ConfigError("tls_client_ca needs tls_cert and tls_key")
    for name in ("tls_cert", "tls_key", "tls_client_ca"):
        path = getattr(s, name)
        if path and not Path(path).is_file():
            raise ConfigError(f"{name}: no such file {path}")
    if s.http_port and s.http_port in (s.port, s.metrics_port):
        raise ConfigError(f"http_port: {s.http_port} is already taken by the gRPC or metrics port")
    if s.api_key is not None and not s.api_key.strip():
        raise ConfigError("api_key: must not be empty")
