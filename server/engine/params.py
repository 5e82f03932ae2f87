"""Servable settings the engine needs: generation defaults, limits, scheduling."""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class GenerationParams:
    """The generation parameters, the one list of them: the servable's defaults, and a request's parameters
    once resolved (its own values over these defaults, see validation.resolve_params).

    The gRPC request (proto/llm.proto) has a field of the same name for each; the OpenAI API renames a few
    (server/http/schema.py).
    """

    max_new_tokens: int = 256
    min_new_tokens: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k filtering
    repetition_penalty: float = 1.0  # transformers' rule, over the prompt and the answer
    # OpenAI's additive rule over the tokens generated so far: a token's score loses frequency_penalty per time it
    # was generated, and presence_penalty once if it was (-2..2).
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: tuple[tuple[int, float], ...] = ()  # (token id, -100..100) added to its score, before everything
    min_p: float = 0.0  # tokens less likely than min_p times the most likely one are not drawn (0: off)
    do_sample: bool = False
    seed: int | None = None  # None: every sampled prompt draws its own
    # A request's stop strings are added to these, not put in their place. The defaults hold the model's
    # end-of-answer markers (its manifest's stop strings).
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()  # more tokens that end the answer, as end-of-sequence does
    # The matched stop string (or stop token's text) stays in the text, and the ending token in the logprobs.
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False  # end-of-sequence tokens do not end the answer: it runs to max_new_tokens (benchmarks)
    speculation: bool = True  # False: no speculation's proposals for this request (when the servable turns it on)


PARAMETERS = tuple(f.name for f in fields(GenerationParams))


@dataclass(frozen=True)
class Limits:
    max_batch: int = 0  # sequences running at once (and prompts x n per call); 0: as many as the KV cache holds
    # average requests (kv_cache.default_max_batch)
    max_waiting: int = 64  # calls waiting to start (one per call, whatever its prompts and n); more: RESOURCE_EXHAUSTED
    max_prompt_tokens: int = 4096
    max_new_tokens_cap: int = 2048
    max_stop_strings: int = 8
    max_stop_length: int = 64  # characters
    max_logprobs: int = 20  # most likely alternatives reported per token (OpenAI's top_logprobs bound)


@dataclass(frozen=True)
class SchedulerConfig:
    max_step_tokens: int = 256  # prompt tokens run per step (longer prompts run in chunks beside the decodes)
    # A burst of prompts starts as many per step as keep their mean time to first token lowest, from the steps'
    # measured cost (pacing.py); false: every prompt admitted shares the next step.
    pacing: bool = True
    # Compiled copies of the model, each a step size's: OpenVINO's CPU plugin pays 5-10 ms (a 1-token step's worth)
    # whenever a graph runs a token count other than its last, so a step goes to the copy that last ran its size
    # (paged_model.py). Each copy holds its own prepared weights (about the model file's size: 135 MB for the INT8
    # default, gigabytes for a 7B model) and buffers for the largest step it ran: 1 (one graph for every step)
    # unless the servable asks.
    graphs: int = 1


@dataclass(frozen=True)
class SpeculationConfig:
    """Prompt-lookup speculation (speculation.py): a decoding prompt proposes up to `max_tokens` tokens that
    followed an earlier occurrence of its last `max_ngram` down to `min_ngram` tokens (0: off), in steps that
    hold fewer than `max_step_tokens` tokens with them."""

    max_tokens: int = 0
    min_ngram: int = 2  # a single token's earlier occurrence seldom predicts what follows it (open answers)
    max_ngram: int = 3
    max_step_tokens: int = 8


@dataclass(frozen=True)
class KVCacheConfig:
    """The paged engine's KV cache: `blocks`, or `gb`; neither: room for max_batch sequences (8 when max_batch comes
    from the cache) of the model's whole context, at most DEFAULT_KV_CACHE_GB (memory is touched only as blocks are
    used).
    `prefix_caching`: a prompt starts from the cached blocks of an earlier sequence it shares a prefix with.
    `reuse_answers`: blocks of generated tokens join the cache too (a conversation's next turn reuses its answers'
    KV). Their KV was computed a token at a time, on other kernels than a prompt's chunk, so a turn read from them
    may differ by rounding from the same text sent fresh: None (the default) reuses them except in
    batch-invariant mode."""

    blocks: int = 0
    gb: float = 0.0
    prefix_caching: bool = True
    reuse_answers: bool | None = None


DEFAULT_KV_CACHE_GB = 1.0
