"""The reference answer: optimum-intel's own OVModelForCausalLM.generate on a model directory, greedy, at the
batch-invariant numerics (f32, dynamic quantization off) that the parity tests run the server at.

Imported by name from test modules (as tests/modelcheck.py is)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from server.engine.precision import BATCH_INVARIANT


@lru_cache(maxsize=None)
def optimum(model_dir: str | Path):
    """The OVModelForCausalLM and its tokenizer, loaded once per directory, pinned to f32 without dynamic
    quantization (OpenVINO's CPU default is bf16 on CPUs that have it)."""
    from optimum.intel import OVModelForCausalLM
    from transformers import AutoTokenizer

    model = OVModelForCausalLM.from_pretrained(str(model_dir), device="CPU",
                                               ov_config={"PERFORMANCE_HINT": "LATENCY", **BATCH_INVARIANT})
    return model, AutoTokenizer.from_pretrained(str(model_dir))


def greedy_text(model_dir: str | Path, prompt: str, n: int, exactly: bool = False) -> str:
    """The prompt's chat-templated greedy answer of up to `n` tokens (`exactly`: no earlier end)."""
    import torch

    from server.engine.model import render

    model, tokenizer = optimum(model_dir)
    ids = torch.tensor([tokenizer(render(tokenizer, prompt), add_special_tokens=False)["input_ids"]])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                         min_new_tokens=n if exactly else 0)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
