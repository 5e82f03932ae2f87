"""The random-weight checkpoint builder at a tiny shape: a checkpoint transformers loads and runs, at the shape asked,
with the default model's tokenizer; made once."""
from __future__ import annotations

from dataclasses import asdict

from client.bench import checkpoints


def test_the_builder_makes_a_loadable_checkpoint_of_the_shape_once(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    shape = checkpoints.SHAPES["tiny"]
    out = checkpoints.build(shape, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt.partial").exists()
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    for key, value in asdict(shape).items():
        assert getattr(model.config, key) == value, key
    assert model.config.model_type == "llama" and model.dtype == torch.bfloat16
    assert model.config.vocab_size == len(tokenizer) == 49152  # the default model's tokenizer
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()  # the untied head
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], 49152) and torch.isfinite(logits).all()

    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert checkpoints.build(shape, out) == out  # there: nothing done
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp


def test_the_real_shapes_are_the_reference_models(tmp_path):
    tiny_llama = checkpoints.SHAPES["tinyllama-1.1b"]
    assert (tiny_llama.hidden_size, tiny_llama.intermediate_size, tiny_llama.num_hidden_layers,
            tiny_llama.num_attention_heads, tiny_llama.num_key_value_heads) == (2048, 5632, 22, 32, 4)
    assert not tiny_llama.tie_word_embeddings
