"""OpenAI's response shapes from engine results: whole answers, stream chunks, usage and logprobs (plain data, no
HTTP in here; schema.py reads the requests)."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from server.engine.types import FinishReason, Logprob, Usage
from server.http.answers import delta_fields

FINISH = {FinishReason.STOP: "stop", FinishReason.STOP_SEQUENCE: "stop", FinishReason.LENGTH: "length",
          FinishReason.CANCELLED: "abort", FinishReason.UNSPECIFIED: "abort"}


def new_id(kind: str) -> str:
    return ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int, proposed: int = 0, accepted: int = 0) -> dict:
    out = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
           "total_tokens": prompt_tokens + completion_tokens, "prompt_tokens_details": {"cached_tokens": cached_tokens}}
    if proposed:  # speculation's proposals, as OpenAI reports a predicted output's
        out["completion_tokens_details"] = {"accepted_prediction_tokens": accepted,
                                            "rejected_prediction_tokens": proposed - accepted}
    return out


@dataclass
class Choice:
    index: int
    text: str
    finish_reason: str
    usage: Usage
    logprobs: list[Logprob] | None = None  # None: not asked for
    prompt: str = ""  # echo: the prompt's text, before the completion
    prompt_logprobs: tuple[Logprob, ...] = ()  # echo with logprobs
    tool_calls: list[dict] | None = None  # chat: the calls read from the text (OpenAI's shape)
    reasoning: dict = field(default_factory=dict)  # chat: a thinking model's reasoning fields (answers.py)


def _object(kind: str, chunk: bool) -> str:
    if kind == "chat":
        return "chat.completion.chunk" if chunk else "chat.completion"
    return "text_completion"


def _entry(lp: Logprob) -> dict:
    return {"token": lp.token, "logprob": lp.logprob,
            "bytes": list(lp.token.encode("utf-8") if lp.token_bytes is None else lp.token_bytes)}


def chat_logprobs(logprobs: list[Logprob]) -> dict:
    """OpenAI's chat shape: choices[].logprobs.content[] (`bytes`: the token's own, which for part of a multi-byte
    character are not its text's, as OpenAI gives them)."""
    return {"content": [{**_entry(lp), "top_logprobs": [_entry(t) for t in lp.top]} for lp in logprobs],
            "refusal": None}


def completion_logprobs(logprobs: list[Logprob], offset: int) -> dict:
    """OpenAI's legacy completions shape; `offset`: where the first token's text starts in the choice's text. As
    vLLM, each token's top_logprobs holds the token itself besides the best alternatives (null for the first
    prompt token, which has no logprob)."""
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for lp in logprobs:
        out["tokens"].append(lp.token)
        out["token_logprobs"].append(lp.logprob)
        out["top_logprobs"].append(None if lp.logprob is None else {**{t.token: t.logprob for t in lp.top}, lp.token: lp.logprob})
        out["text_offset"].append(offset)
        offset += len(lp.token)
    return out


def whole(kind: str, id_: str, created: int, model: str, choices: list[Choice], n: int) -> dict:
    """The non-streamed body: every choice in index order, with usage."""
    out = []
    for c in sorted(choices, key=lambda c: c.index):
        if kind == "chat":
            message = {"role": "assistant", "content": c.text, **c.reasoning}
            if c.tool_calls:
                message["tool_calls"] = c.tool_calls
            out.append({"index": c.index, "message": message,
                        "logprobs": None if c.logprobs is None else chat_logprobs(c.logprobs),
                        "finish_reason": c.finish_reason})
        else:
            logprobs = None if c.logprobs is None else completion_logprobs([*c.prompt_logprobs, *c.logprobs], 0)
            out.append({"index": c.index, "text": c.prompt + c.text, "logprobs": logprobs,
                        "finish_reason": c.finish_reason})
    return {"id": id_, "object": _object(kind, False), "created": created, "model": model, "choices": out,
            "usage": total_usage(choices, n)}


def total_usage(choices: list[Choice], n: int) -> dict:
    # A prompt counts once however many copies were generated from it (as OpenAI counts).
    firsts = [c.usage for c in choices if c.index % n == 0]
    return usage(sum(u.prompt_tokens for u in firsts), sum(c.usage.completion_tokens for c in choices),
                 sum(u.cached_tokens for u in firsts), sum(c.usage.proposed_tokens for c in choices),
                 sum(c.usage.accepted_tokens for c in choices))


def chunk(kind: str, id_: str, created: int, model: str, index: int, text: str | None = None,
          finish_reason: str | None = None, role: bool = False, with_usage: bool = False, logprobs: dict | None = None,
          usage_now: dict | None = None, tool_calls: list[dict] | None = None, reasoning: str = "") -> dict:
    """One streamed chunk for one choice (`logprobs` already in the kind's shape; `usage_now`: continuous usage;
    `tool_calls`: chat's tool-call deltas; `reasoning`: a thinking model's reasoning delta)."""
    if kind == "chat":
        delta = {"role": "assistant", "content": ""} if role else ({} if text is None else {"content": text})
        delta.update(delta_fields(reasoning))
        if tool_calls:
            delta["tool_calls"] = tool_calls
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
    else:
        choice = {"index": index, "text": text or "", "logprobs": logprobs, "finish_reason": finish_reason}
    body = {"id": id_, "object": _object(kind, True), "created": created, "model": model, "choices": [choice]}
    if with_usage or usage_now is not None:
        body["usage"] = usage_now  # as OpenAI: null on every chunk but the last when usage was asked for
    return body


def usage_chunk(kind: str, id_: str, created: int, model: str, choices: list[Choice], n: int) -> dict:
    return {"id": id_, "object": _object(kind, True), "created": created, "model": model, "choices": [],
            "usage": total_usage(choices, n)}
