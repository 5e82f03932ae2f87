"""The model's tokenizer read straight from its `tokenizer.json`, without transformers' tokenizer classes.

Importing `AutoTokenizer` or `AutoConfig` imports PyTorch, scikit-learn and SciPy (about 10 s and 400 MB at
every server start), and the server needs none of it: transformers' fast tokenizers are this same `tokenizers`
backend plus the chat template. A directory that `download_model.py` (or optimum-intel) wrote carries the
backend as transformers built it, so encoding and decoding here are the same calls on the same object.
"""
from __future__ import annotations

import json
from pathlib import Path

# transformers' names for the special tokens a chat template may use, in its order.
NAMED = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE writes each byte as a printable character: the printable Latin-1 bytes as
    themselves, the rest (controls, space, ...) as the characters from U+0100 on, in byte order. Character -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + n): b for n, b in enumerate(others)}}


BYTE_OF = _byte_level_alphabet()


def _content(token) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken's dict."""
    return token.get("content") if isinstance(token, dict) else token


class Tokenizer:
    """What the server uses of a transformers tokenizer: `encode`, `decode`, `eos_token_id`,
    `all_special_tokens`, `chat_template` and `apply_chat_template`."""

    def __init__(self, backend, config: dict, chat_template: str | None):
        self.backend = backend
        self.chat_template = chat_template
        self.special_tokens_map = {k: _content(config[k]) for k in NAMED if _content(config.get(k)) is not None}
        extra = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
        extra = extra.values() if isinstance(extra, dict) else extra
        self.all_special_tokens = list(dict.fromkeys([*self.special_tokens_map.values(), *map(_content, extra)]))
        self.clean_up_tokenization_spaces = bool(config.get("clean_up_tokenization_spaces", False))
        eos = self.special_tokens_map.get("eos_token")
        self.eos_token_id = backend.token_to_id(eos) if eos is not None else None
        from tokenizers.decoders import ByteLevel

        self._byte_level = isinstance(backend.decoder, ByteLevel)
        self._added = frozenset(backend.get_added_tokens_decoder())  # their strings are plain text

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer | None:
        """The tokenizer of model directory `path`; None when it has no `tokenizer.json` (a slow tokenizer only)."""
        from tokenizers import Tokenizer as Backend

        path = Path(path)
        if not (path / "tokenizer.json").is_file():
            return None
        config_file = path / "tokenizer_config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        template_file = path / "chat_template.jinja"
        template = template_file.read_text(encoding="utf-8") if template_file.is_file() else config.get("chat_template")
        if isinstance(template, list):  # several named templates: transformers takes "default"
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        backend = Backend.from_file(str(path / "tokenizer.json"))
        backend.no_truncation()
        backend.no_padding()
        return cls(backend, config, template)

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def token_bytes(self, token_id: int) -> bytes:
        """The token's own bytes. A byte-level BPE token may be part of a multi-byte character, whose text decodes
        as U+FFFD; its vocabulary string says its true bytes (OpenAI's logprobs `bytes`). Other vocabularies, and
        added tokens: the text's UTF-8."""
        piece = self.backend.id_to_token(token_id) if self._byte_level and token_id not in self._added else None
        if piece is not None and all(c in BYTE_OF for c in piece):
            return bytes(BYTE_OF[c] for c in piece)
        return self.decode([token_id]).encode("utf-8")

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text, add_special_tokens)}

    def decode(self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None,
               **_) -> str:
        text = self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        if clean_up_tokenization_spaces:  # transformers' clean_up_tokenization
            for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                                  (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
                text = text.replace(before, after)
        return text

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True, tokenize: bool = False,
                            tools: list[dict] | None = None, **template_kwargs):
        """The chat template rendered by transformers' own renderer (which does not import PyTorch);
        `template_kwargs`: more variables for the template (Qwen3's enable_thinking), as transformers passes them."""
        from transformers.utils.chat_template_utils import render_jinja_template

        (text,), _ = render_jinja_template(conversations=[messages], chat_template=self.chat_template, tools=tools,
                                           add_generation_prompt=add_generation_prompt,
                                           **{**template_kwargs, **self.special_tokens_map})
        return self.encode(text, add_special_tokens=False) if tokenize else text
