"""The server's tokenizer (read from tokenizer.json) encodes, decodes and renders as transformers' AutoTokenizer
does on the same directory, and loading a model no longer imports PyTorch."""
from __future__ import annotations

import subprocess
import sys

import pytest

from modelcheck import REPO
from server.engine.tokenizer import Tokenizer

TEXTS = ["Hello, world!", "line one\nline two\n\n  indented\ttab", "Café, naïve, Größe, Ελληνικά, 家族 😀👍🏽",
         "I 'm sure it 's fine , is n't it ?", "<|im_start|>user\nspecial tokens inside<|im_end|>", "", " "]
CONVERSATIONS = [
    [{"role": "user", "content": "Hi there"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}],
]


@pytest.fixture(scope="module")
def bos_tokenizer_dir(fp32_model_dir, tmp_path_factory):
    """The default model's tokenizer saved again with a BOS added and spaces cleaned up (as Llama-family
    tokenizers are), so both of transformers' post-processing paths are compared."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(fp32_model_dir)
    tokenizer.add_bos_token = True
    tokenizer.clean_up_tokenization_spaces = True
    path = tmp_path_factory.mktemp("bos-tokenizer")
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module", params=["shipped", "bos-and-cleanup"])
def pair(request, fp32_model_dir):
    from transformers import AutoTokenizer

    path = fp32_model_dir if request.param == "shipped" else request.getfixturevalue("bos_tokenizer_dir")
    return Tokenizer.load(path), AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_encode_and_decode_as_transformers(pair, add_special_tokens):
    ours, theirs = pair
    for text in TEXTS:
        ids = theirs(text, add_special_tokens=add_special_tokens)["input_ids"]
        assert ours.encode(text, add_special_tokens) == ids, text
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip), text
            assert ours.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=False) == \
                theirs.decode(ids, skip_special_tokens=skip, clean_up_tokenization_spaces=False), text


def test_bos_variant_really_differs(pair, request):
    ours, theirs = pair
    with_bos = ours.encode("Hi", True)
    assert (with_bos[0] == theirs.bos_token_id) == ("bos-and-cleanup" in request.node.nodeid)


def test_special_tokens_and_chat_template_as_transformers(pair):
    ours, theirs = pair
    assert ours.eos_token_id == theirs.eos_token_id and len(ours) == len(theirs)
    assert ours.all_special_tokens == theirs.all_special_tokens
    assert ours.chat_template == theirs.chat_template
    for messages in CONVERSATIONS:
        for add in (True, False):
            assert ours.apply_chat_template(messages, add_generation_prompt=add) == \
                theirs.apply_chat_template(messages, add_generation_prompt=add, tokenize=False)


def test_a_directory_without_tokenizer_json_is_left_to_transformers(tmp_path):
    assert Tokenizer.load(tmp_path) is None


def test_loading_a_model_imports_neither_pytorch_nor_optimum(fp32_model_dir):
    """The point of reading tokenizer.json ourselves: transformers' model side costs ~10 s per server start. A
    grammar (llguidance's tokenizer, built from the same tokenizer.json) imports neither either."""
    code = ("import sys; from server.engine.model import LoadedModel; from server.engine.grammar import Grammars; "
            "from server.engine.types import Constraint; m = LoadedModel.load(sys.argv[1]); "
            "Grammars.for_tokenizer(m.tokenizer, m.vocab_size, m.eos_token_ids).matcher(Constraint(json_object=True)); "
            "print(sorted(m for m in ('torch', 'optimum', 'sklearn', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(fp32_model_dir)], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_transformers_path_encodes_alike(fp32_model_dir):
    """`--trust-remote-code` loads transformers' tokenizer instead: the model encodes through it the same way."""
    from server.engine.model import LoadedModel, _configs

    _, _, theirs = _configs(fp32_model_dir, trust_remote_code=True)
    ours = Tokenizer.load(fp32_model_dir)
    assert type(theirs) is not Tokenizer
    through_transformers = LoadedModel(None, theirs, None, None)
    for text in TEXTS:
        for special in (True, False):
            assert through_transformers.encode(text, special) == ours.encode(text, special), text


def test_token_bytes_are_the_tokens_own(fp32_model_dir):
    """A byte-level BPE token may be part of a multi-byte character (its text is U+FFFD); its bytes are its own, so a
    text's tokens' bytes join into its UTF-8 (OpenAI's logprobs `bytes`). Added tokens are their text."""
    tokenizer = Tokenizer.load(fp32_model_dir)
    for text in TEXTS:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert b"".join(tokenizer.token_bytes(t) for t in ids) == text.encode("utf-8"), text
    ids = tokenizer.encode("😀", add_special_tokens=False)
    assert len(ids) > 1 and tokenizer.decode(ids[:1]).endswith("\ufffd")
    assert tokenizer.token_bytes(ids[0]) != tokenizer.decode(ids[:1]).encode() and \
        tokenizer.token_bytes(ids[0]) == "😀".encode()[:len(tokenizer.token_bytes(ids[0]))]
