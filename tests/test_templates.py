"""Registry prompt templates for models whose tokenizer has none (dolly, red-pajama, ...)."""
from __future__ import annotations

from transformers.utils.chat_template_utils import render_jinja_template

from modelprep import registry, templates


def render(template, messages):
    rendered, _ = render_jinja_template(conversations=[messages], chat_template=template.to_jinja(),
                                        add_generation_prompt=True)
    return rendered[0]


def test_dolly_template():
    text = render(templates.DOLLY, [{"role": "user", "content": "Name a color."}])
    assert text.startswith("Below is an instruction")
    assert text.endswith("### Instruction:\nName a color.\n\n### Response:\n")


def test_red_pajama_template_with_history():
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "Who are you?"}]
    assert render(templates.RED_PAJAMA, chat) == "<human>: Hi\n<bot>: Hello!\n<human>: Who are you?\n<bot>:"


def test_registry_fallbacks_and_defaults():
    assert registry.MODELS["dolly-v2-3b"].template is templates.DOLLY
    assert registry.MODELS["red-pajama-3b-chat"].template is templates.RED_PAJAMA
    assert registry.MODELS["mistral-7b"].int4 == registry.Int4Params(sym=True, group_size=64, ratio=0.6)
    assert registry.resolve("someone/model").name == "model"
