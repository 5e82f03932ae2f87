"""One prompt's state inside the engine core (vLLM's Request): ids, resolved parameters, cache, a status."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from server.engine.params import GenerationParams
from server.engine.sampler import generator
from server.engine.types import FinishReason


class RequestStatus(enum.Enum):
    WAITING = enum.auto()
    RUNNING = enum.auto()
    FINISHED_STOPPED = enum.auto()  # an end-of-sequence token
    FINISHED_LENGTH = enum.auto()  # max_new_tokens
    FINISHED_ABORTED = enum.auto()  # cancelled, a stop string seen by the output side, or the engine closing
    FINISHED_FAILED = enum.auto()  # the model step failed

    @property
    def finished(self) -> bool:
        return self not in (RequestStatus.WAITING, RequestStatus.RUNNING)


FINISH_REASON = {
    RequestStatus.FINISHED_STOPPED: FinishReason.STOP,
    RequestStatus.FINISHED_LENGTH: FinishReason.LENGTH,
    RequestStatus.FINISHED_ABORTED: FinishReason.CANCELLED,
    RequestStatus.FINISHED_FAILED: FinishReason.UNSPECIFIED,
}


@dataclass(eq=False)
class Request:
    """One prompt (or one of its n samples), admitted on its own. The requests of one call share `call`: the
    output side groups their outputs (output.Submission), and the waiting queue's limit counts calls."""

    id: int
    call: int
    prompt_ids: list[int]
    params: GenerationParams
    logprobs: int | None = None  # None: none; N: the chosen token's and the N best alternatives'
    prompt_logprobs: int | None = None  # None: none; N: every prompt token's after the first, with N alternatives
    output_ids: list[int] = field(default_factory=list)  # every chosen token, an end-of-sequence one included
    status: RequestStatus = RequestStatus.WAITING
    computed: int = 0  # tokens already in the KV cache
    blocks: list[int] = field(default_factory=list)
    promised: int = 0  # private blocks promised at admission and not yet allocated
    block_keys: list[bytes] = field(default_factory=list)  # of its full blocks, prompt then generated
    cached_tokens: int = 0  # prompt tokens found in the prefix cache
    reads_cache: bool = True  # False: compute the whole prompt (prompt logprobs need every row)
    generator: np.random.Generator | None = None
    matcher: object | None = None  # its grammar's llguidance matcher, when the request has a constraint
    prompt_logprob_values: list = field(default_factory=list)  # sampler.TokenLogprob of prompt tokens 1.., so far
    admitted: float | None = None  # when a step admitted it (time.monotonic)
    speculate: int = 0  # how many tokens speculation may propose for it next (speculation.adapt), set at admission
    speculation_misses: int = 0  # its single-token proposals refused in a row (each doubles the wait after it)

    def __post_init__(self):
        if self.prompt_logprobs is not None:
            self.reads_cache = False
        if self.params.do_sample and self.generator is None:
            self.generator = generator(self.params.seed)

    def tokens(self, start: int, end: int) -> list[int]:
        """Tokens start..end of prompt + output."""
        prompt = self.prompt_ids
        return (prompt[start:end] + self.output_ids[max(0, start - len(prompt)):max(0, end - len(prompt))])

    def pending(self, n: int) -> list[int]:
        """The next `n` tokens not yet in the cache: the rest of the prompt, or the last chosen token."""
        prompt = self.prompt_ids
        if self.computed < len(prompt):
            return prompt[self.computed:self.computed + n]
        start = self.computed - len(prompt)
        return self.output_ids[start:start + n]
