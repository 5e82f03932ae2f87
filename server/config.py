"""Settings: one object, from CLI flags > environment variables > the servable's config.json > defaults.

pydantic-settings merges the layers and pydantic checks types; hand-written, as the library lacks them: our variable
names, a strict JSON reading of the file that names it in errors, and errors as one line naming the key."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import Field, TypeAdapter, ValidationError, model_validator, with_config
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from typing_extensions import TypedDict

from server.engine.params import GenerationParams, KVCacheConfig, Limits, SchedulerConfig, SpeculationConfig
from server.engine.reasoning import PARSERS as REASONING_PARSERS
from server.engine.tool_parsers import PARSERS


GENERATION_CONFIGS = ("auto", "servable")


class ConfigError(Exception):
    """A setting is wrong; the message names the file (or variable) and the key."""


# Environment variable -> setting; a later variable wins over an earlier one for the same setting.
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
    "METRICS_API_KEY": "metrics_api_key",
}


class Settings(BaseSettings):
    """Every setting, read by attribute. `Settings(**flags)` adds the environment and the `config_path` file
    under the flags given; `load` does that for the command line, with any error as one ConfigError line."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid")

    config_path: str | None = None  # the servable's config.json (a flag only: a file cannot name itself)
    model: str = "/model"  # the seed demo's Docker layout; `--model` or MODEL_PATH overrides
    device: str = "CPU"
    host: str = "127.0.0.1"  # loopback unless told otherwise
    port: int = 9000
    http_port: int = 8000  # the OpenAI-compatible HTTP API, the chat page, KServe REST and /metrics; 0 turns it off
    served_model_name: str | None = None  # the model's name over HTTP; default: its directory's name
    kserve_model_name: str = "python_model"  # KServe calls' model name (the OVMS demo's); the served name works too
    # How chat answers are read (vLLM's names); default: as the model's chat template teaches (server/engine/tool_parsers.py,
    # server/engine/reasoning.py).
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    cache_dir: str = str(Path.home() / ".cache" / "llm-server" / "openvino")
    ov_config: dict = Field(default_factory=dict)
    generation: GenerationParams = GenerationParams()
    # Where an OpenAI API request's left-out sampling fields come from (vLLM's --generation-config): "auto", the
    # model's generation_config.json, else `generation`; "servable", `generation` only. gRPC and KServe: `generation`.
    generation_config: str = "auto"
    limits: Limits = Limits()
    scheduler: SchedulerConfig = SchedulerConfig()
    kv_cache: KVCacheConfig = KVCacheConfig()  # the KV cache's size
    speculation: SpeculationConfig = SpeculationConfig()  # prompt-lookup speculation (off by default)
    # f32 and no dynamic quantization, over ov_config: the same prompt, the same greedy text, whatever runs beside it
    batch_invariant: bool = False
    grace_seconds: float = 30.0  # how long running calls may finish on SIGTERM
    max_message_bytes: int = 4 * 1024 * 1024
    trust_remote_code: bool = False
    log_level: str = "INFO"
    log_format: str = "text"  # or "json"
    log_prompts: bool = False  # prompt text in request logs only when asked
    metrics_port: int = 0  # a Prometheus endpoint of its own, beside /metrics on the HTTP port; 0 turns it off
    api_key: str | None = Field(default=None, repr=False)  # never logged
    # /metrics on the HTTP port is open (scrapers carry no API key) unless this key is set; never logged
    metrics_api_key: str | None = Field(default=None, repr=False)
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_client_ca: str | None = None  # set: clients must present a certificate signed by it

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest first; pydantic-settings puts the defaults under them. No .env or secrets files.
        return (init_settings, _Environment(settings_cls, case_sensitive=True, env_ignore_empty=True),
                _ServableFile(settings_cls))

    @model_validator(mode="after")
    def _rules(self) -> Settings:
        check(self)
        return self


class _Environment(EnvSettingsSource):
    """Only the variables in ENVIRONMENT, under their settings' names (pydantic-settings reads them, skipping empty
    ones; its own lookup would take every setting's name as a variable)."""

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for var, name in ENVIRONMENT.items():
            if raw := self.env_vars.get(var):
                values[name] = _from_environment(var, name, raw)
        return values


def _from_environment(var: str, name: str, raw: str) -> Any:
    if var == "SELECTED_MODEL":
        return str(Path("models") / raw)
    if name.endswith("port"):  # converted here, so that a bad value is named by its variable
        if not raw.isdigit():
            raise ConfigError(f"environment variable {var}: expected a port number, got {raw!r}")
        return int(raw)
    return raw


class _ServableFile(PydanticBaseSettingsSource):
    """The `config_path` file, validated on its own as strict JSON ("8" is no int, true no number) so that an error
    names the file; JsonConfigSettingsSource would check it leniently, with the other layers, and skip a missing one."""

    def get_field_value(self, field, field_name):  # abstract in the base class; __call__ reads the whole file
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = self.current_state.get("config_path")  # from the flags, the source above this one
        if not path:
            return {}
        try:
            text = Path(path).read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        try:
            values = _FILE.validate_json(text, strict=True)
        except ValidationError as exc:
            raise ConfigError(f"{path}: {describe(exc, _FILE_KEYS)}") from None
        if "model_path" in values:
            values["model"] = values.pop("model_path")
        return values


# config.json's keys: every setting but config_path, and `model` spelt model_path (the seed demo's name). Unknown
# keys are refused, in the sections too: stdlib dataclasses take the config of what holds them.
_FILE_KEYS = {("model_path" if name == "model" else name): field.annotation
              for name, field in Settings.model_fields.items() if name != "config_path"}
_FILE = TypeAdapter(with_config(extra="forbid")(TypedDict("ServableFile", _FILE_KEYS, total=False)))

# What a type error's kind expected, in words (the tuple is generation.stop).
_EXPECTED = {"int": "int", "float": "float", "bool": "bool", "string": "str", "dict": "an object",
             "dataclass": "an object", "tuple": "a list of non-empty strings"}


def describe(exc: ValidationError, keys: Iterable[str] = Settings.model_fields) -> str:
    """pydantic's first error as one line: the key's dotted path, then what was wrong (`keys`: the top level's)."""
    error = exc.errors(include_url=False)[0]
    loc, kind, value = error["loc"], error["type"], error["input"]
    key = ".".join(str(part) for part in loc)
    if kind == "json_invalid":
        return f"not valid JSON ({error['ctx']['error']})"
    if not loc:
        return "expected a JSON object"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        section = Settings.model_fields[loc[0]].annotation if len(loc) > 1 else None
        known = [f.name for f in dataclasses.fields(section)] if section else keys
        return f"{key}: unknown key; expected one of {', '.join(sorted(known))}"
    if expected := _EXPECTED.get(kind.split("_")[0]):
        return f"{key}: expected {expected}, got {type(value).__name__} {value!r}"
    return f"{key}: {error['msg']}"


def load(flags: dict[str, Any]) -> Settings:
    """Settings from the flags the user gave (None: not given), the environment and the config_path file."""
    try:
        return Settings(**{name: value for name, value in flags.items() if value is not None})
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None


def check(s: Settings) -> None:
    """The rules across settings, beyond each one's type."""
    if not all(s.generation.stop):
        raise ConfigError(f"generation.stop: expected a list of non-empty strings, got {list(s.generation.stop)!r}")
    if s.kv_cache.blocks < 0 or s.kv_cache.gb < 0 or (s.kv_cache.blocks and s.kv_cache.gb):
        raise ConfigError("kv_cache: give blocks or gb (positive), not both")
    if s.limits.max_batch < 0:
        raise ConfigError("limits.max_batch: must be at least 1 (or 0: as many as the KV cache holds)")
    if s.scheduler.max_step_tokens < 1:
        raise ConfigError("scheduler.max_step_tokens: must be at least 1")
    if not 1 <= s.scheduler.graphs <= 8:
        raise ConfigError("scheduler.graphs: must be 1 to 8")
    if s.speculation.max_tokens < 0 or not 1 <= s.speculation.min_ngram <= s.speculation.max_ngram:
        raise ConfigError("speculation: max_tokens >= 0 and 1 <= min_ngram <= max_ngram")
    if s.speculation.max_step_tokens < 2:
        raise ConfigError("speculation.max_step_tokens: must be at least 2")
    if s.generation_config not in GENERATION_CONFIGS:
        raise ConfigError(f"generation_config: expected {' or '.join(GENERATION_CONFIGS)}, got {s.generation_config!r}")
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
    if not s.kserve_model_name.strip():
        raise ConfigError("kserve_model_name: must not be empty")
    if s.tool_call_parser is not None and s.tool_call_parser not in PARSERS:
        raise ConfigError(f"tool_call_parser: expected one of {', '.join(PARSERS)}, got {s.tool_call_parser!r}")
    if s.reasoning_parser is not None and s.reasoning_parser not in REASONING_PARSERS:
        raise ConfigError(f"reasoning_parser: expected one of {', '.join(REASONING_PARSERS)}, "
                          f"got {s.reasoning_parser!r}")
    if s.api_key is not None and not s.api_key.strip():
        raise ConfigError("api_key: must not be empty")
    if s.metrics_api_key is not None:
        if not s.metrics_api_key.strip():
            raise ConfigError("metrics_api_key: must not be empty")
        if not s.http_port:
            raise ConfigError("metrics_api_key guards /metrics on the HTTP port, and http_port is 0")
        if s.metrics_port:  # that port's server has no authentication: a key there would guard nothing
            raise ConfigError("metrics_api_key and metrics_port: the separate metrics port cannot check a key; "
                              "scrape /metrics on the HTTP port instead")
