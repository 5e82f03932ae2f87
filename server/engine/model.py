"""The loaded model: OpenVINO IR compiled once, its tokenizer, and prompt rendering."""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from server.engine.types import Message

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    path: str
    device: str
    precision: str
    load_seconds: float
    context_length: int


def weight_precision(ov_model) -> str:
    """The narrowest weight type in the IR: what NNCF compression left behind."""
    types = {op.get_output_element_type(0).get_type_name() for op in ov_model.get_ops() if op.get_type_name() == "Constant"}
    for names, label in ((("u4", "i4", "nf4"), "INT4"), (("u8", "i8"), "INT8"), (("f16", "bf16"), "FP16")):
        if types.intersection(names):
            return label
    return "FP32"


class LoadedModel:
    """One compiled model shared by every worker; each worker gets its own infer request via `fork()`."""

    def __init__(self, model, tokenizer, info: ModelInfo):
        self.model = model
        self.tokenizer = tokenizer
        self.info = info
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_token_ids = tuple(eos) if isinstance(eos, (list, tuple)) else (eos,)
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.eos_token_ids[0]

    @classmethod
    def load(cls, path: str | Path, device: str = "CPU", ov_config: dict | None = None,
             trust_remote_code: bool = False) -> LoadedModel:
        # Imported here: these take seconds, and `--help` should not wait for them.
        from optimum.intel import OVModelForCausalLM
        from transformers import AutoTokenizer

        start = time.perf_counter()
        model = OVModelForCausalLM.from_pretrained(
            str(path), device=device, ov_config=dict(ov_config or {}), compile=True,
            trust_remote_code=trust_remote_code,
        )
        tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        tokenizer.padding_side = "left"
        seconds = time.perf_counter() - start
        context = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", 2048)
        info = ModelInfo(str(path), device, weight_precision(model.model), seconds, int(context))
        return cls(model, tokenizer, info)

    def fork(self):
        """A model object sharing the compiled weights but with its own infer request (its own KV cache)."""
        twin = copy.copy(self.model)
        twin.request = self.model.request.get_compiled_model().create_infer_request()
        twin.next_beam_idx = None
        twin._past_length = 0
        return twin

    def render(self, prompt: str | tuple[Message, ...], system_prompt: str | None, raw: bool) -> str:
        """The text the model sees: the prompt wrapped in the chat template, unless raw."""
        if raw:
            return prompt
        messages = [{"role": m.role, "content": m.content} for m in prompt] if not isinstance(prompt, str) \
            else [{"role": "user", "content": prompt}]
        if system_prompt is not None and not any(m["role"] == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": system_prompt})
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant:"

    def encode(self, text: str, raw: bool) -> list[int]:
        # A chat template writes its own special tokens; raw text gets the tokenizer's usual ones.
        return self.tokenizer(text, add_special_tokens=raw)["input_ids"]
