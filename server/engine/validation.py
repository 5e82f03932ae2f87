"""Request checks: plain functions over plain data, run before any work starts."""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from typing import Any

from server.engine.errors import ValidationError
from server.engine.params import PARAMETERS, GenerationParams, Limits
from server.engine.types import GenerationRequest

ROLES = ("system", "user", "assistant", "tool")
MAX_SEED = 2**63 - 1
SAMPLING = {"temperature", "top_p", "top_k", "seed"}  # setting one turns sampling on, unless do_sample says otherwise
MAX_LOGIT_BIAS = 1024  # tokens a request may bias (a whole vocabulary's map would be megabytes to check each step)
MAX_STOP_TOKEN_IDS = 64
# What vLLM's `--generation-config auto` (its default) takes from a model's generation_config.json when an OpenAI
# request leaves it out (ModelConfig.get_diff_sampling_param), by our names: the sampling its author recommends.
MODEL_FILE_FIELDS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_new_tokens")
# Each generation parameter's kind, from its default (seed's default is None: an int when given; logit_bias is a map
# of token id -> bias, stop_token_ids a list of token ids).
KINDS = {name: {"seed": int, "logit_bias": dict, "stop_token_ids": list}.get(name, type(getattr(GenerationParams(), name)))
         for name in PARAMETERS}


def check_inputs(request: GenerationRequest, limits: Limits) -> None:
    """Prompts, prompt ids or conversations: exactly one kind, none empty, within the batch limit; logprob counts."""
    kinds = [name for name in ("prompts", "prompt_ids", "conversations") if getattr(request, name)]
    if len(kinds) > 1:
        raise ValidationError(kinds[0], f"give one of prompts, prompt_ids or conversations, not {' and '.join(kinds)}")
    if not kinds:
        raise ValidationError("prompts", "at least one prompt (or conversation) is required")
    field = kinds[0]
    count = len(getattr(request, field))
    if count > limits.max_batch:
        raise ValidationError(field, f"{count} given, at most {limits.max_batch} per request")
    if not isinstance(request.n, int) or isinstance(request.n, bool) or request.n < 1:
        raise ValidationError("n", "must be an integer of at least 1")
    if count * request.n > limits.max_batch:
        raise ValidationError("n", f"{count} prompt(s) x n={request.n} = {count * request.n} answers, at most "
                                   f"{limits.max_batch} per request")
    for i, prompt in enumerate(request.prompts):
        if not isinstance(prompt, str):
            raise ValidationError(f"prompts[{i}]", f"expected a string, got {type(prompt).__name__}")
        if not prompt.strip():
            raise ValidationError(f"prompts[{i}]", "must not be empty")
    for i, ids in enumerate(request.prompt_ids):
        if not ids:
            raise ValidationError(f"prompt_ids[{i}]", "must not be empty")
    for i, conversation in enumerate(request.conversations):
        if not conversation:
            raise ValidationError(f"conversations[{i}].messages", "must not be empty")
        for j, message in enumerate(conversation):
            for name, value in (("role", message.role), ("content", message.content)):
                if not isinstance(value, str):
                    raise ValidationError(f"conversations[{i}].messages[{j}].{name}",
                                          f"expected a string, got {type(value).__name__}")
            if message.role not in ROLES:
                raise ValidationError(
                    f"conversations[{i}].messages[{j}].role",
                    f"unknown role {message.role[:32]!r}; expected one of {', '.join(ROLES)}",
                )
    if request.system_prompt is not None and not isinstance(request.system_prompt, str):
        raise ValidationError("system_prompt", f"expected a string, got {type(request.system_prompt).__name__}")
    if request.raw and request.conversations:
        raise ValidationError("raw", "raw applies to prompts, not to conversations")
    for name in ("logprobs", "prompt_logprobs"):
        n = getattr(request, name)
        if n is not None and not is_int(n):
            raise ValidationError(name, f"expected an integer, got {type(n).__name__}")
        if n is not None and not 0 <= n <= limits.max_logprobs:
            raise ValidationError(name, f"must be in [0, {limits.max_logprobs}]")


def check_constraint(request: GenerationRequest) -> None:
    """A constraint is one kind of grammar, not empty (whether it compiles, grammar.py checks)."""
    c = request.constraint
    if c is None:
        return
    given = [*c.texts, *(["json_object"] if c.json_object else [])]
    if len(given) != 1:
        raise ValidationError(given[0] if given else "json_schema",
                              "give one of json_schema, regex, grammar or json_object" +
                              (f", not {' and '.join(given)}" if given else ""))
    if c.value is not None and not c.value.strip():
        raise ValidationError(c.field, "must not be empty")


def check_tools(request: GenerationRequest) -> None:
    """Tools have distinct names and JSON-object parameters; the calls in a conversation, JSON-object arguments."""
    names = set()
    for i, tool in enumerate(request.tools):
        if not tool.name or tool.name in names:
            raise ValidationError(f"tools[{i}].name", "must not be empty" if not tool.name else
                                  f"{tool.name[:64]!r} is given twice")
        names.add(tool.name)
        _json_object(f"tools[{i}].parameters", tool.parameters)
    for i, conversation in enumerate(request.conversations):
        for j, message in enumerate(conversation):
            for k, call in enumerate(message.tool_calls):
                _json_object(f"conversations[{i}].messages[{j}].tool_calls[{k}].arguments", call.arguments)


def _json_object(field: str, text: str) -> None:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValidationError(field, f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValidationError(field, "must be a JSON object")


def check_token_ids(field: str, ids, vocab_size: int) -> None:
    """Every id is a token of the model's vocabulary; the error names `field[index]`."""
    for j, token in enumerate(ids):
        if not is_int(token):
            raise ValidationError(f"{field}[{j}]", f"expected a token id (an integer), got {type(token).__name__}")
        if not 0 <= token < vocab_size:
            raise ValidationError(f"{field}[{j}]", f"{token} is not a token id (the vocabulary has {vocab_size} tokens)")


def resolve_params(request: GenerationRequest, defaults: GenerationParams, limits: Limits) -> GenerationParams:
    """The request's parameters over the servable's defaults, every one checked."""
    given = dict(request.params.given)
    for name, value in given.items():
        _check_type(name, value)
    if "logit_bias" in given:  # a map, or its (token, bias) pairs: pairs, one per token
        bias = given["logit_bias"]
        given["logit_bias"] = tuple((bias if isinstance(bias, dict) else dict(bias)).items())
    if "stop_token_ids" in given:
        given["stop_token_ids"] = tuple(dict.fromkeys(given["stop_token_ids"]))
    stop = given.get("stop", ())  # the request's own; the limits apply to these, not to the defaults
    p = dataclasses.replace(defaults, **{**given, "stop": tuple(dict.fromkeys((*stop, *defaults.stop)))})
    if p.max_new_tokens < (0 if request.prompt_logprobs is not None else 1):
        raise ValidationError("max_new_tokens", "must be at least 1 (0 only with prompt logprobs)")
    if p.max_new_tokens > limits.max_new_tokens_cap:
        raise ValidationError("max_new_tokens",
                              f"{p.max_new_tokens} is above this server's cap of {limits.max_new_tokens_cap}")
    if p.min_new_tokens < 0:
        raise ValidationError("min_new_tokens", "must be at least 0")
    if p.min_new_tokens > p.max_new_tokens:
        raise ValidationError("min_new_tokens", f"{p.min_new_tokens} is above max_new_tokens ({p.max_new_tokens})")

    check_values(p, request.n)

    if len(stop) > limits.max_stop_strings:
        raise ValidationError("stop", f"{len(stop)} given, at most {limits.max_stop_strings}")
    for i, s in enumerate(stop):
        if not s:
            raise ValidationError(f"stop[{i}]", "must not be empty")
        if len(s) > limits.max_stop_length:
            raise ValidationError(f"stop[{i}]", f"longer than {limits.max_stop_length} characters")

    # Sampling when asked, or when a sampling parameter is set and do_sample is left unset; temperature 0
    # means greedy, as in most serving APIs.
    do_sample = given.get("do_sample", defaults.do_sample or bool(SAMPLING & given.keys()))
    p = dataclasses.replace(p, do_sample=do_sample and p.temperature != 0)
    # ignore_eos as vLLM's benchmarks mean it: every answer runs to max_new_tokens.
    return dataclasses.replace(p, min_new_tokens=p.max_new_tokens) if p.ignore_eos else p


def openai_defaults(servable: GenerationParams, model_file: Mapping[str, Any],
                    limits: Limits) -> tuple[GenerationParams, dict[str, Any]]:
    """The defaults of a request on the OpenAI API, and what of them came from the model: the MODEL_FILE_FIELDS
    its generation_config.json (`model_file`; {} to ignore it) writes, over the servable's. Sampling unless the
    temperature is 0: OpenAI's API has no do_sample, the servable's is for gRPC and KServe. A model's max_new_tokens
    above the server's cap is lowered to it. Raises ValidationError naming the file's key for a value no request
    could send."""
    taken = {name: model_file[name] for name in MODEL_FILE_FIELDS if model_file.get(name) is not None}
    for name, value in taken.items():
        _check_type(name, value)
    check_values(dataclasses.replace(GenerationParams(), **taken))
    if taken.get("max_new_tokens", 1) < 1:
        raise ValidationError("max_new_tokens", "must be at least 1")
    if taken.get("max_new_tokens", 0) > limits.max_new_tokens_cap:
        taken["max_new_tokens"] = limits.max_new_tokens_cap
    return dataclasses.replace(servable, **taken, do_sample=True), taken


def check_values(p: GenerationParams, n: int = 1) -> None:
    """Each sampling parameter within its range (a seed leaves room for `n` samples: sample i's is seed + i)."""
    if not math.isfinite(p.temperature) or p.temperature < 0:
        raise ValidationError("temperature", "must be a finite number >= 0")
    if not math.isfinite(p.top_p) or not 0 < p.top_p <= 1:
        raise ValidationError("top_p", "must be in (0, 1]")
    if p.top_k < 0:
        raise ValidationError("top_k", "must be at least 0 (0: no top-k filtering)")
    if not math.isfinite(p.repetition_penalty) or p.repetition_penalty <= 0:
        raise ValidationError("repetition_penalty", "must be a finite number > 0")
    for name in ("presence_penalty", "frequency_penalty"):
        if not math.isfinite(getattr(p, name)) or not -2 <= getattr(p, name) <= 2:
            raise ValidationError(name, "must be in [-2, 2]")
    if not math.isfinite(p.min_p) or not 0 <= p.min_p <= 1:
        raise ValidationError("min_p", "must be in [0, 1]")
    if len(p.logit_bias) > MAX_LOGIT_BIAS:
        raise ValidationError("logit_bias", f"{len(p.logit_bias)} tokens given, at most {MAX_LOGIT_BIAS}")
    for token, bias in p.logit_bias:
        if not math.isfinite(bias) or not -100 <= bias <= 100:
            raise ValidationError("logit_bias", f"the bias of token {token} must be in [-100, 100]")
    if len(p.stop_token_ids) > MAX_STOP_TOKEN_IDS:
        raise ValidationError("stop_token_ids", f"{len(p.stop_token_ids)} given, at most {MAX_STOP_TOKEN_IDS}")
    if p.seed is not None and not 0 <= p.seed <= MAX_SEED - (n - 1):
        samples = f" (sample i of n={n} samples with seed + i)" if n > 1 else ""
        raise ValidationError("seed", f"must be in [0, {MAX_SEED - (n - 1)}]{samples}")


def is_int(value) -> bool:
    """An integer, and not a boolean (which Python counts as one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _check_type(name: str, value) -> None:
    """In-process callers are held to the parameter's type as the transports are (a number is no boolean; stop
    is a list of strings, not one string)."""
    kind = KINDS[name]
    if kind is dict:  # logit_bias: token id -> number, as a map or as pairs
        pairs = value.items() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else None
        if pairs is None or not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in pairs):
            raise ValidationError(name, f"expected a map of token id to number, got {type(value).__name__}")
        if len(pairs) > MAX_LOGIT_BIAS:
            raise ValidationError(name, f"{len(pairs)} tokens given, at most {MAX_LOGIT_BIAS}")
        for token, bias in pairs:
            if not is_int(token) or not (is_int(bias) or isinstance(bias, float)):
                raise ValidationError(name, "expected a map of token id (an integer) to number, got "
                                            f"{str(token)[:20]!r}: {str(bias)[:20]}")
        return
    if kind is list:  # stop_token_ids
        if not isinstance(value, (list, tuple)) or not all(is_int(t) for t in value):
            raise ValidationError(name, "expected a list of token ids (integers)")
        if len(value) > MAX_STOP_TOKEN_IDS:
            raise ValidationError(name, f"{len(value)} given, at most {MAX_STOP_TOKEN_IDS}")
        return
    ok = {int: is_int(value), float: is_int(value) or isinstance(value, float), bool: isinstance(value, bool),
          tuple: isinstance(value, (tuple, list)) and all(isinstance(s, str) for s in value)}[kind]
    if not ok:
        expected = {int: "an integer", float: "a number", bool: "a boolean", tuple: "a list of strings"}[kind]
        raise ValidationError(name, f"expected {expected}, got {type(value).__name__}")


def check_sampling_tokens(params: GenerationParams, vocab_size: int) -> None:
    """logit_bias's and stop_token_ids' tokens are in the model's vocabulary."""
    for token, _ in params.logit_bias:
        if not 0 <= token < vocab_size:
            raise ValidationError("logit_bias", f"{token} is not a token id (the vocabulary has {vocab_size} tokens)")
    check_token_ids("stop_token_ids", params.stop_token_ids, vocab_size)


def check_lengths(field: str, token_counts: list[int], params: GenerationParams, limits: Limits, context_length: int) -> None:
    """Each prompt, plus its new tokens, must fit the prompt limit and the model's context."""
    for i, n in enumerate(token_counts):
        if n > limits.max_prompt_tokens:
            raise ValidationError(f"{field}[{i}]", f"{n} tokens, above this server's limit of {limits.max_prompt_tokens}")
        if n + params.max_new_tokens > context_length:
            raise ValidationError(
                f"{field}[{i}]",
                f"{n} prompt tokens + max_new_tokens {params.max_new_tokens} exceed the model's context of {context_length}",
            )


def check_cache(field: str, token_counts: list[int], params: GenerationParams, num_blocks: int, block_size: int) -> None:
    """Each prompt, with room for max_new_tokens, must fit the whole KV cache (each is admitted on its own, so the
    prompts of a request need not fit at once)."""
    for i, n in enumerate(token_counts):
        if math.ceil(n / block_size) > num_blocks:
            raise ValidationError(f"{field}[{i}]", f"{n} tokens do not fit this server's KV cache "
                                                   f"({num_blocks} blocks of {block_size} tokens)")
    longest = max(token_counts)
    need = math.ceil((longest + params.max_new_tokens) / block_size)
    if need > num_blocks:
        raise ValidationError("max_new_tokens", f"a prompt of {longest} tokens with max_new_tokens "
                                                f"{params.max_new_tokens} needs {need} KV-cache blocks; this server's "
                                                f"cache holds {num_blocks} blocks of {block_size} tokens")
