"""The SmolLM2 tokenizer rebuilt from its GGUF (modelprep/smollm2_gguf.py): byte-level BPE, no BOS, the GGUF's chat
template. (transformers 5.5 rebuilds it from the GGUF as a CodeLlamaTokenizer that prepends <|im_start|> and splits
text the SentencePiece way: the model then writes garbage.)"""
from __future__ import annotations

import pytest

from modelcheck import load

TEXTS = ["Hello, world!", "line one\nline two\n\n  indented\ttab", "Café, naïve, Größe, señor, Ελληνικά",
         "emoji 😀🧪👍🏽 and 家族", "numbers 1234567 and code: def f(x): return x**2"]


@pytest.fixture(scope="module")
def tokenizer(fp32_model_dir):
    return load(fp32_model_dir)[1]


def test_special_tokens(tokenizer):
    assert (tokenizer.bos_token, tokenizer.bos_token_id) == ("<|im_start|>", 1)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id) == (2, 0)


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_without_bos(tokenizer, text):
    ids = tokenizer(text).input_ids
    assert ids[0] != tokenizer.bos_token_id and tokenizer.bos_token_id not in ids
    assert tokenizer.decode(ids) == text


def test_byte_level_split(tokenizer):
    # SentencePiece-style splitting (the pitfall) would give "▁"-prefixed pieces.
    assert tokenizer.tokenize("Hello world") == ["Hello", "Ġworld"]


def test_chat_template(tokenizer):
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi there"}], tokenize=False,
                                         add_generation_prompt=True)
    assert "<|im_start|>user\nHi there<|im_end|>\n" in text
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                        return_dict=True)["input_ids"]
    assert ids.count(1) == 3 and ids.count(2) == 2  # im_start/im_end are single special tokens


def test_openvino_tokenizer_matches(fp32_model_dir, tokenizer):
    import openvino as ov
    import openvino_tokenizers  # noqa: F401  registers the tokenizer operations with OpenVINO

    core = ov.Core()
    encode = core.compile_model(fp32_model_dir / "openvino_tokenizer.xml")
    decode = core.compile_model(fp32_model_dir / "openvino_detokenizer.xml")
    for text in TEXTS:
        ids = encode([text])["input_ids"]
        assert ids[0].tolist() == tokenizer(text).input_ids
        assert decode(ids)["string_output"][0] == text
