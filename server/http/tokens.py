"""vLLM's /tokenize and /detokenize bodies (schema.py's rules: strict JSON types, the declared fields only)."""
from __future__ import annotations

from pydantic import Field

from server.engine.types import GenerationRequest
from server.http.schema import Body, Messages, check_body, conversation, rule


class TokenizeRequest(Body):
    """vLLM's /tokenize body: `prompt` (raw text) or `messages` (a chat, rendered with its template)."""

    model: str | None = None
    messages: Messages | None = None
    prompt: str | None = Field(None, validate_default=True)
    add_special_tokens: bool | None = None  # None: as a generation would
    add_generation_prompt: bool = True
    return_token_strs: bool = False
    chat_template_kwargs: dict | None = None  # as on chat completions

    _given = rule("prompt", lambda prompt, before: prompt is not None or before.get("messages") is not None,
                   "required (or messages)")
    _true = rule("add_generation_prompt", lambda value, _: value, "only true is supported")


class DetokenizeRequest(Body):
    model: str | None = None
    tokens: list[int]


def parse_tokenize(body) -> tuple[str | None, GenerationRequest, bool | None, bool]:
    """vLLM's /tokenize body: the model named, the request whose prompt is tokenized, add_special_tokens (None: as
    a generation would), and whether the tokens' texts are wanted."""
    b = check_body(TokenizeRequest, body)
    if b.messages is not None:
        request = GenerationRequest(conversations=(conversation(b.messages),),
                                    chat_template_kwargs=b.chat_template_kwargs)
    else:
        request = GenerationRequest(prompts=(b.prompt,), raw=True)
    return b.model, request, b.add_special_tokens, b.return_token_strs


def parse_detokenize(body) -> tuple[str | None, list[int]]:
    """vLLM's /detokenize body: the model named and `tokens`, an array of token ids."""
    b = check_body(DetokenizeRequest, body)
    return b.model, list(b.tokens)
