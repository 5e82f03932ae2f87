"""The private APIs of the libraries the engine uses, each behind one function here: an upgrade that moves or
changes one breaks here, and in tests/server/engine/test_libraries.py, not somewhere inside the engine.
(optimum-intel's `_from_pretrained` is no longer used: the server reads the IR with `ov.Core().read_model`.)"""
from __future__ import annotations


def paged_attention_transformation(ov_model) -> None:
    """OpenVINO's rewrite of a stateless LLM graph for paged attention, in place (what openvino-genai's continuous
    batching runs; private in openvino 2025-2026: `openvino._offline_transformations`)."""
    from openvino._offline_transformations import paged_attention_transformation as rewrite

    rewrite(ov_model)


def render_chat_template(template: str, messages: list[dict], tools: list[dict] | None = None,
                         add_generation_prompt: bool = True, **special_tokens: str) -> str:
    """One conversation through a Jinja chat template, by transformers' own renderer (which, unlike the
    tokenizer classes, does not import PyTorch; `transformers.utils.chat_template_utils.render_jinja_template`,
    not part of transformers' documented API)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    (text,), _ = render_jinja_template(conversations=[messages], chat_template=template, tools=tools,
                                       add_generation_prompt=add_generation_prompt, **special_tokens)
    return text
