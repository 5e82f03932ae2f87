"""Grammar-constrained token choice with llguidance: JSON schemas, regular expressions, Lark grammars, any JSON
object.

A constrained prompt carries its own matcher (`llguidance.LLMatcher`, a parser over the tokenizer's bytes).
Each step the core hands the sampler the step's constrained rows (`StepGrammars`). A greedy row whose own best
token its grammar accepts takes it as it is: a mask could only have lowered other tokens. Only the other rows
(sampling ones, and greedy ones whose best token is refused) get their forbidden tokens filled, together
(llguidance's executor, off the GIL), and set to -inf. Filling a mask costs about a hundred times what checking
one token does, and a model that writes JSON mostly proposes what its grammar allows. `Grammars.advance` then
feeds each matcher its chosen token. End-of-sequence is allowed only where
the grammar may end. As vLLM's guidance backend, except that llguidance's tokenizer is built from the
`tokenizers` JSON we already hold (llguidance.hf would import transformers, and with it PyTorch).
"""
from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from server.engine.errors import ValidationError
from server.engine.types import Constraint

# Compact JSON with the spaces models write after ',' and ':'; no free whitespace, which a small model at a high
# temperature can repeat until max_tokens.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
CACHE_SIZE = 128  # compiled grammars kept, least recently used out


class Grammars:
    """One loaded model's grammar machinery: llguidance's tokenizer (built on first use: about 1 s), compiled
    grammars cached by constraint, and the executor that fills a step's masks together."""

    def __init__(self, make_tokenizer: Callable[[], object], cache_size: int = CACHE_SIZE):
        self._make_tokenizer = make_tokenizer
        self._tokenizer = None
        self._executor = None
        self._cache: OrderedDict[tuple, object] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()  # requests are validated on several threads

    @classmethod
    def for_tokenizer(cls, tokenizer, vocab_size: int, eos_token_ids: Sequence[int]) -> Grammars:
        """For a `tokenizers` backend (ours, tokenizer.py) or a transformers fast tokenizer; vocab_size: the
        width of the model's logits."""
        def make():
            import llguidance

            backend = getattr(tokenizer, "backend", None) or getattr(tokenizer, "backend_tokenizer", None)
            if backend is None:
                raise ValidationError("constraint", "this model's tokenizer has no tokenizer.json; structured "
                                                    "output needs one")
            return llguidance.LLTokenizer(backend.to_str(), n_vocab=vocab_size, eos_token=list(eos_token_ids))
        return cls(make)

    def matcher(self, constraint: Constraint):
        """A fresh matcher for `constraint`; raises ValidationError naming the constraint's field with the library's
        reason when it does not compile."""
        import llguidance

        field, key = constraint.field, (constraint.field, constraint.value)
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = self._make_tokenizer()
            compiled = self._cache.get(key)
            if compiled is not None:
                self._cache.move_to_end(key)
                return compiled.deep_copy()
        try:
            if constraint.regex is not None:
                grammar = llguidance.LLMatcher.grammar_from_regex(constraint.regex)
            elif constraint.grammar is not None:
                grammar = llguidance.LLMatcher.grammar_from_lark(constraint.grammar)
            else:
                schema = _schema(constraint)
                grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)
        except ValueError as exc:
            raise ValidationError(field, str(exc)) from None
        compiled = llguidance.LLMatcher(self._tokenizer, grammar, log_level=0)
        if compiled.is_error():
            raise ValidationError(field, _one_line(compiled.get_error()))
        with self._lock:
            self._cache[key] = compiled
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return compiled.deep_copy()

    def step(self, matchers: dict[int, object], width: int) -> StepGrammars:
        """The step's constrained rows: {row of the step's logits: its matcher}; width: the logits'."""
        return StepGrammars(self, matchers, width)

    def banned(self, matchers: Sequence, width: int) -> np.ndarray:
        """The tokens each matcher forbids at its next step, as a bool array [matchers, width] (width: the logits';
        ids beyond the tokenizer's are always banned). Banned rather than allowed: the sampler writes -inf where
        this is True, in place, with no negation pass."""
        import llguidance.numpy as lln

        if self._executor is None:
            import llguidance

            self._executor = llguidance.LLExecutor()
        bits = lln.allocate_token_bitmask(len(matchers), self._tokenizer.vocab_size)
        lln.fill_next_token_bitmask_par(self._executor, [(m, i) for i, m in enumerate(matchers)], bits)
        banned = np.unpackbits(np.invert(bits).view(np.uint8), axis=1, bitorder="little").view(bool)
        banned = banned[:, :self._tokenizer.vocab_size]
        if banned.shape[1] >= width:
            return banned[:, :width]
        return np.pad(banned, ((0, 0), (0, width - banned.shape[1])), constant_values=True)

    def advance(self, pairs: Sequence[tuple[object, int]], eos: Sequence[int]) -> list[str | None]:
        """Feed each matcher its chosen token (an end-of-sequence one ends the answer: nothing to feed); per pair
        None, or the grammar's error, for a matcher that is or goes wrong (that request fails, no other)."""
        for m, t in pairs:  # a few microseconds each: not worth the executor's threads
            if t not in eos and not m.is_error():
                m.consume_token(t)
        return ["the output broke its grammar: " + _one_line(m.get_error()) if m.is_error() else None
                for m, _ in pairs]


class StepGrammars:
    """One step's constrained rows, as the sampler sees them (sampler.choose_tokens)."""

    def __init__(self, grammars: Grammars, matchers: dict[int, object], width: int):
        self._grammars, self._matchers, self._width = grammars, matchers, width
        self.rows = sorted(matchers)

    def allows(self, row: int, token: int) -> bool:
        """Whether `row`'s grammar accepts `token` next, as its mask would say. Where the grammar forces bytes
        (a key's quotes, a separator) the mask also refuses tokens that would spell them otherwise, so there
        the answer is no and the mask decides."""
        m = self._matchers[row]
        return not m.compute_ff_bytes() and m.validate_tokens([token]) == 1

    def banned(self, rows: Sequence[int]) -> np.ndarray:
        """The forbidden tokens of these rows, [len(rows), width] (Grammars.banned)."""
        return self._grammars.banned([self._matchers[r] for r in rows], self._width)


def _schema(constraint: Constraint) -> str:
    if constraint.json_object:
        return '{"type": "object"}'
    try:
        schema = json.loads(constraint.json_schema)
    except ValueError as exc:
        raise ValidationError(constraint.field, f"not valid JSON: {exc}") from None
    if not isinstance(schema, (dict, bool)):
        raise ValidationError(constraint.field, "a JSON schema is an object (or true/false)")
    return constraint.json_schema


def _one_line(message: str) -> str:
    """llguidance's message without its multi-line excerpts: the first line and the line that says what is wrong."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    said = [line for line in lines[1:] if line.startswith("error:")]
    return " ".join(lines[:1] + said) or "grammar error"
