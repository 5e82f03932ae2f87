"""The loaded model: OpenVINO IR compiled once, its tokenizer, and prompt rendering."""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from server.engine.params import SchedulerConfig
from server.engine import tool_parsers
from server.engine.precision import (DYNAMIC_QUANTIZATION, HINT, Numerics, manifest_runtime, numerics, resolve,
                                     sources_text)
from server.engine import tools as tools_format
from server.engine.errors import ValidationError
from server.engine.tokenizer import NAMED as SPECIAL_TOKENS
from server.engine.types import Message, Tool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    path: str
    device: str
    precision: str
    load_seconds: float
    context_length: int
    stop: tuple[str, ...] = ()  # the model's end-of-answer markers, from its modelprep manifest
    numerics: Numerics | None = None  # what the compiled model runs with
    required_precision: str | None = None  # the inference precision its manifest says it needs
    options: str = ""  # the numerics options compiled with and where each came from (servable, manifest, default)
    runtime_note: str = ""  # what became of the manifest's measured runtime options, if it has any
    batch_invariant: bool = False  # loaded in batch-invariant mode (precision.BATCH_INVARIANT)


def read_manifest(path: str | Path):
    """The manifest `download_model.py` / `compress_model.py` wrote (None for a directory made elsewhere)."""
    from modelprep.store import read_manifest

    try:
        return read_manifest(path)
    except (OSError, ValueError, TypeError):
        return None


def manifest_precision(path: str | Path) -> str | None:
    """The inference precision `compress_model.py` found this directory needs to answer right, if any."""
    manifest = read_manifest(path)
    return manifest.inference_precision if manifest else None


def weight_precision(ov_model) -> str:
    """The narrowest weight type in the IR: what NNCF compression left behind."""
    types = {op.get_output_element_type(0).get_type_name() for op in ov_model.get_ops() if op.get_type_name() == "Constant"}
    for names, label in ((("u4", "i4", "nf4"), "INT4"), (("u8", "i8"), "INT8"), (("f16", "bf16"), "FP16")):
        if types.intersection(names):
            return label
    return "FP32"


class LoadedModel:
    """The model compiled for paged attention (`paged`: the continuous-batching engine's compiled copies), with its
    tokenizer."""

    def __init__(self, paged, tokenizer, info: ModelInfo, eos, generation_config: dict | None = None):
        self.paged = paged
        self.tokenizer = tokenizer
        self.info = info
        self.generation_config = generation_config or {}  # the model's generation_config.json (the author's defaults)
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_token_ids = tuple(eos) if isinstance(eos, (list, tuple)) else (eos,)

    @classmethod
    def load(cls, path: str | Path, device: str = "CPU", ov_config: dict | None = None,
             trust_remote_code: bool = False, batch_invariant: bool = False, graphs: int = SchedulerConfig.graphs) -> LoadedModel:
        """Load once; a model whose architecture the paged-attention rewrite refuses stops here with one line.
        `ov_config` goes over our defaults (f32 on CPUs, see precision.py), `batch_invariant` over everything;
        `graphs`: compiled copies on a CPU (SchedulerConfig.graphs, paged_model.PagedModel; other devices were not
        measured: one)."""
        import openvino as ov

        from server.engine.paged_model import TransformationFailed, compile_paged

        start = time.perf_counter()
        manifest = read_manifest(path)  # once: its stop strings and the precision it needs
        required = manifest.inference_precision if manifest else None
        if required and (ov_config or {}).get(HINT, required) != required and not batch_invariant:
            log.warning("%s needs %s %s to answer right (its manifest says so); the servable sets %s", path,
                        HINT, required, ov_config[HINT])
        tuned, runtime_note = manifest_runtime(manifest.runtime if manifest else {}, device)
        options = resolve(device, ov_config or {}, batch_invariant, required, tuned)
        ov_config = options.values
        config, generation, tokenizer = _configs(Path(path), trust_remote_code)
        ov_model = ov.Core().read_model(Path(path) / "openvino_model.xml")
        precision = weight_precision(ov_model)
        try:
            paged = compile_paged(ov_model, device, ov_config, config, graphs if device.startswith("CPU") else 1)
        except TransformationFailed as exc:
            arch = getattr(config, "model_type", None) or "unknown"
            raise TransformationFailed(f"this server cannot run the {arch} architecture: {exc}") from None
        seconds = time.perf_counter() - start
        context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 2048)
        # A stop string that is a special token (smollm2's `<|im_end|>`) never shows in the decoded text: its
        # token already ends the answer, and checking for it would only cost time at every token.
        stop = tuple(s for s in (manifest.stop if manifest else ()) if s not in tokenizer.all_special_tokens)
        report = numerics(paged[0], next(i.get_element_type().get_type_name() for i in paged[0].inputs
                                      if i.get_any_name().startswith("key_cache.")))
        shown = sources_text(options, {HINT: report.inference, DYNAMIC_QUANTIZATION: report.dynamic_quantization})
        info = ModelInfo(str(path), device, precision, seconds, int(context), stop, report, required, shown,
                         runtime_note, batch_invariant)
        return cls(paged, tokenizer, info, generation.get("eos_token_id", getattr(config, "eos_token_id", None)),
                   generation)

    @functools.cached_property
    def vocab_size(self) -> int:
        """Token ids a prompt may hold: the tokenizer's, added tokens included. Once: len() of a transformers
        tokenizer builds its whole vocabulary (5 ms for 49k tokens), and every request's checks ask."""
        return len(self.tokenizer)

    def render(self, prompt: str | tuple[Message, ...], system_prompt: str | None, raw: bool,
               tools: tuple[Tool, ...] = (), chat_template_kwargs: dict | None = None) -> str:
        return render(self.tokenizer, prompt, system_prompt, raw, tools, chat_template_kwargs)

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        # Called with `raw`: a chat template writes its own special tokens; raw text gets the tokenizer's usual ones.
        # By keyword: transformers' `encode` takes a text pair second.
        return self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]


def _configs(path: Path, trust_remote_code: bool):
    """The model's config (attributes), its generation config (a dict) and its tokenizer. Read from the JSON files
    and `tokenizer.json` (tokenizer.py says why), or through transformers for remote code or a slow tokenizer."""
    import json
    from types import SimpleNamespace

    def read(name: str) -> dict:
        file = path / name
        return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}

    from server.engine.tokenizer import Tokenizer

    tokenizer = None if trust_remote_code else Tokenizer.load(path)
    if tokenizer is not None:
        return SimpleNamespace(**read("config.json")), read("generation_config.json"), tokenizer
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    return config, read("generation_config.json"), AutoTokenizer.from_pretrained(str(path),
                                                                                  trust_remote_code=trust_remote_code)


# What the renderer itself passes a chat template: chat_template_kwargs may not set these.
RESERVED = frozenset({"messages", "conversations", "tools", "documents", "chat_template", "add_generation_prompt",
                      "continue_final_message", "return_assistant_tokens_mask", "tokenize", *SPECIAL_TOKENS})


def render(tokenizer, prompt: str | tuple[Message, ...], system_prompt: str | None = None, raw: bool = False,
           tools: tuple[Tool, ...] = (), chat_template_kwargs: dict | None = None) -> str:
    """The text the model sees: the prompt wrapped in the chat template, unless raw; with `tools`, and with the
    calls and results of a conversation, as the family's format writes them (tool_parsers.py); with the client's
    extra template variables. (A plain function, so the benchmark's openvino-genai baselines render exactly as the
    server does.) A template that refuses the conversation (its raise_exception) is a ValidationError of it."""
    if raw:
        return prompt
    extra = dict(chat_template_kwargs or {})
    for name in extra:
        if name in RESERVED:
            raise ValidationError(f"chat_template_kwargs.{name}", "is set by the server, not by the template's caller")
    messages = list(prompt) if not isinstance(prompt, str) else [Message("user", prompt)]
    if system_prompt is not None and not any(m.role == "system" for m in messages):
        messages.insert(0, Message("system", system_prompt))
    template = tokenizer.chat_template
    if tools_format.takes_tools(template):
        dicts, inputs = tool_parsers.for_template(template).template_inputs(messages, tools)
        return _apply(tokenizer, dicts, {**extra, **inputs})
    dicts = tools_format.default_messages(messages, tools)
    if template:
        return _apply(tokenizer, dicts, extra)
    return "".join(f"{m['role']}: {m['content']}\n" for m in dicts) + "assistant:"


def _apply(tokenizer, messages: list[dict], extra: dict) -> str:
    from jinja2 import TemplateError

    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **extra)
    except TemplateError as exc:
        raise ValidationError("messages", f"the model's chat template refused them: {exc}") from None
