"""The private library APIs behind server/engine/libraries.py still do what the engine needs of them: an upgrade
that moves, renames or changes one fails here first. """
import inspect

import openvino as ov

from server.engine import libraries

TEMPLATE = ("{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}</{{ m.role }}>{% endfor %}"
            "{% if tools %}[{{ tools | map(attribute='function.name') | join(',') }}]{% endif %}"
            "{% if add_generation_prompt %}<assistant>{% endif %}")


def test_transformers_renders_a_chat_template_with_tools_and_special_tokens():
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    assert libraries.render_chat_template(TEMPLATE, messages, tools, bos_token="<s>") == \
        "<s><system>be brief</system><user>hi</user>[add]<assistant>"
    assert libraries.render_chat_template(TEMPLATE, messages[1:], add_generation_prompt=False, bos_token="") == \
        "<user>hi</user>"


def test_openvino_rewrites_a_stateful_llm_for_paged_attention(fp32_model_dir):
    model = ov.Core().read_model(fp32_model_dir / "openvino_model.xml")
    assert model.get_sinks() and "past_lens" not in {n for i in model.inputs for n in i.get_names()}
    libraries.paged_attention_transformation(model)
    names = {n for i in model.inputs for n in i.get_names()}
    assert {"past_lens", "subsequence_begins", "block_indices", "block_indices_begins", "max_context_len",
            "key_cache.0", "value_cache.0"} <= names
    assert not model.get_sinks()  # the KV state moved into the caches the engine owns


def test_the_adapters_take_what_the_engine_passes():
    assert list(inspect.signature(libraries.render_chat_template).parameters)[:4] == \
        ["template", "messages", "tools", "add_generation_prompt"]
