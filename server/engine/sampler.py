"""Token choice for a whole step, in numpy: every rule is an array operation over the step's logits.

As TGI's HeterogeneousNextTokenChooser: one step holds requests with different parameters, so each rule
(logit bias, repetition, presence and frequency penalties, min_new_tokens, temperature, min-p, top-k, top-p) takes
a column of per-row values and runs once over the rows that need it; only the draw is per row, from that row's own
seeded generator. The rules that change scores (bias, penalties) run before the argmax, so greedy rows, grammars
and speculation's proposals see them too; logprobs report the model's raw distribution (vLLM's raw_logprobs).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NEG_INF = np.float32(-np.inf)


@dataclass(frozen=True)
class TokenLogprob:
    """The chosen token's log-probability under the model's own distribution, and the `top` best ones."""

    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


def choose_tokens(logits: np.ndarray, rows: Sequence, eos: Sequence[int], grammars=None,
                  proposals: Sequence[int | None] | None = None) -> tuple[list[int], list[TokenLogprob | None]]:
    """The next token of each row of `logits` [rows, vocab] (changed in place), and its logprob where asked.

    A row is anything with `params` (resolved GenerationParams), `prompt_ids`, `output_ids`, `generator`
    (a numpy Generator when sampling) and `logprobs` (None, or how many alternatives to report). `grammars`
    (grammar.StepGrammars) constrains its `rows`: a greedy one keeps its best token where `allows` says its
    grammar accepts it (a mask could only lower the others); the rest choose among what `banned` leaves them.
    `proposals`: per row, speculation's proposed token or None; a sampling row takes it by the rejection rule
    (`sample`), so that its draw follows the same distribution as without one.
    """
    wanted = [i for i, r in enumerate(rows) if r.logprobs is not None]
    raw = log_softmax(logits[wanted]) if wanted else None  # the model's distribution, before any rule
    biased = [i for i, r in enumerate(rows) if r.params.logit_bias]
    if biased:
        apply_logit_bias(logits, biased, [rows[i] for i in biased])
    penalised = [i for i, r in enumerate(rows) if r.params.repetition_penalty != 1.0]
    if penalised:
        apply_repetition_penalty(logits, penalised, [rows[i] for i in penalised])
    penalised = [i for i, r in enumerate(rows) if r.output_ids and (r.params.presence_penalty or r.params.frequency_penalty)]
    if penalised:
        apply_openai_penalties(logits, penalised, [rows[i] for i in penalised])
    early = [i for i, r in enumerate(rows) if len(r.output_ids) < r.params.min_new_tokens]
    eos = list(eos)
    held = logits[np.ix_(early, eos)].copy() if early and eos and grammars is not None else None
    if early and eos:
        logits[np.ix_(early, eos)] = NEG_INF  # too early to end
    stopping = [(i, t) for i in early for t in rows[i].params.stop_token_ids]
    if stopping:
        logits[tuple(np.array(stopping).T)] = NEG_INF  # a row's own stop tokens end it too: too early as well
    tokens = logits.argmax(axis=1)
    if grammars is not None:
        masked = [i for i in grammars.rows if rows[i].params.do_sample or not grammars.allows(i, int(tokens[i]))]
        if masked:
            _mask(logits, masked, grammars.banned(masked), early, eos, held)
            tokens[masked] = logits[masked].argmax(axis=1)
    sampling = [i for i, r in enumerate(rows) if r.params.do_sample]
    if sampling:
        p = [rows[i].params for i in sampling]
        tokens[sampling] = sample(
            logits[sampling],
            np.array([x.temperature for x in p], dtype=np.float32),
            np.array([x.top_k for x in p], dtype=np.int64),
            np.array([x.top_p for x in p], dtype=np.float64),
            [rows[i].generator for i in sampling],
            None if proposals is None else np.array([-1 if proposals[i] is None else proposals[i] for i in sampling]),
            np.array([x.min_p for x in p], dtype=np.float64),
        )
    chosen = tokens.tolist()
    logprobs: list[TokenLogprob | None] = [None] * len(rows)
    for j, i in enumerate(wanted):
        logprobs[i] = _logprob(raw[j], chosen[i], rows[i].logprobs)
    return chosen, logprobs


def _mask(logits: np.ndarray, masked: Sequence[int], banned: np.ndarray, early: Sequence[int], eos: list[int],
          held: np.ndarray | None) -> None:
    """Set each masked row's banned tokens to -inf. A grammar that may only end now ends the answer,
    min_new_tokens or not: such a row gets back the end-of-sequence scores (`held`) that `early` took."""
    for i, ban in zip(masked, banned):
        np.copyto(logits[i], NEG_INF, where=ban)
    if held is None:
        return
    where = {row: j for j, row in enumerate(early)}
    for i, ban in zip(masked, banned):
        allowed_eos = ~ban[eos]
        if i in where and np.count_nonzero(~ban) == np.count_nonzero(allowed_eos):
            logits[i, eos] = np.where(allowed_eos, held[where[i]], NEG_INF)


def apply_repetition_penalty(logits: np.ndarray, which: Sequence[int], rows: Sequence) -> None:
    """transformers' rule (a seen token's score divided by the penalty, or multiplied when negative), for
    every (row, seen token) pair at once; a token seen twice gets the same new value twice."""
    seen = [np.fromiter((*r.prompt_ids, *r.output_ids), dtype=np.int64) for r in rows]
    counts = [len(s) for s in seen]
    at_row = np.repeat(np.asarray(which, dtype=np.int64), counts)
    at_token = np.concatenate(seen)
    penalty = np.repeat(np.array([r.params.repetition_penalty for r in rows], dtype=np.float32), counts)
    picked = logits[at_row, at_token]
    logits[at_row, at_token] = np.where(picked < 0, picked * penalty, picked / penalty)


def apply_logit_bias(logits: np.ndarray, which: Sequence[int], rows: Sequence) -> None:
    """OpenAI's logit_bias: each (row, token) pair's bias added to its score, for every pair at once (a row's
    tokens are distinct)."""
    counts = [len(r.params.logit_bias) for r in rows]
    at_row = np.repeat(np.asarray(which, dtype=np.int64), counts)
    pairs = np.array([pair for r in rows for pair in r.params.logit_bias], dtype=np.float64)
    logits[at_row, pairs[:, 0].astype(np.int64)] += pairs[:, 1].astype(np.float32)


def apply_openai_penalties(logits: np.ndarray, which: Sequence[int], rows: Sequence) -> None:
    """OpenAI's rule over the generated tokens: score - frequency_penalty * count - presence_penalty * (count > 0),
    each (row, token generated) pair once, with its count, for every row at once."""
    vocab = logits.shape[1]
    keys = np.concatenate([j * vocab + np.fromiter(r.output_ids, dtype=np.int64) for j, r in enumerate(rows)])
    keys, counts = np.unique(keys, return_counts=True)
    row, token = np.divmod(keys, vocab)  # row: the position in `rows`
    frequency = np.array([r.params.frequency_penalty for r in rows], dtype=np.float32)[row]
    presence = np.array([r.params.presence_penalty for r in rows], dtype=np.float32)[row]
    logits[np.asarray(which, dtype=np.int64)[row], token] -= frequency * counts.astype(np.float32) + presence


def sample(logits: np.ndarray, temperature: np.ndarray, top_k: np.ndarray, top_p: np.ndarray,
           generators: Sequence[np.random.Generator], proposed: np.ndarray | None = None,
           min_p: np.ndarray | None = None) -> np.ndarray:
    """One token per row: temperature, then min-p (tokens under min_p times the best one's probability go), then
    top-k, then nucleus (top-p) over what is left, then one uniform draw per row from that row's generator, by the
    inverse of the kept tokens' cumulative distribution (vLLM's order).

    `proposed`: per row a token proposed without a model (speculation), or -1. Such a row takes it when its
    draw falls under its probability p, and otherwise draws again from the rest (p without it, renormalized):
    speculative sampling's rule for a proposal that is certain rather than drawn, so every token keeps exactly
    its probability."""
    rows, vocab = logits.shape
    scaled = logits / temperature[:, None]
    k = np.where((top_k > 0) & (top_k < vocab), top_k, vocab)
    width = int(k.max())
    # Only the best `width` candidates matter; rank them, best first (a partial sort when every row has a top-k).
    if width < vocab:
        candidates = np.argpartition(-scaled, width - 1, axis=1)[:, :width]
        values = np.take_along_axis(scaled, candidates, axis=1)
    else:
        candidates, values = None, scaled
    order = np.argsort(-values, axis=1, kind="stable")
    values = np.take_along_axis(values, order, axis=1)
    candidates = order if candidates is None else np.take_along_axis(candidates, order, axis=1)
    keep = np.arange(width)[None, :] < k[:, None]
    best = values[:, :1]
    with np.errstate(invalid="ignore", over="ignore"):
        probs = np.where(keep, np.exp((values - best).astype(np.float64)), 0.0)
    if min_p is not None:  # probs are still relative to the best token's
        keep &= probs >= min_p[:, None]
        probs = np.where(keep, probs, 0.0)
    probs /= probs.sum(axis=1, keepdims=True)
    cumulative = np.cumsum(probs, axis=1)
    keep &= cumulative - probs < top_p[:, None]  # the smallest set whose mass reaches top_p
    probs = np.where(keep, probs, 0.0)
    cumulative = np.cumsum(probs, axis=1)
    draws = np.array([g.random() for g in generators]) * cumulative[:, -1]
    taken = np.zeros(rows, dtype=bool)
    if proposed is not None and (proposed >= 0).any():
        own = (candidates == proposed[:, None]) & (proposed[:, None] >= 0)
        taken = draws < (probs * own).sum(axis=1)
        refused = np.flatnonzero((proposed >= 0) & ~taken)
        if len(refused):
            probs[refused] = np.where(own[refused], 0.0, probs[refused])
            cumulative[refused] = np.cumsum(probs[refused], axis=1)
            draws[refused] = np.array([generators[i].random() for i in refused]) * cumulative[refused, -1]
    position = np.minimum((cumulative <= draws[:, None]).sum(axis=1), width - 1)
    tokens = np.where(taken, proposed if proposed is not None else 0, candidates[np.arange(rows), position])
    # A tiny temperature overflowed the scores: take the limit, the most likely token.
    broken = ~np.isfinite(best[:, 0]) | ~np.isfinite(cumulative[:, -1])
    if broken.any():
        tokens[broken] = logits[broken].argmax(axis=1)
    return tokens


def log_softmax(logits: np.ndarray) -> np.ndarray:
    top = logits.max(axis=1, keepdims=True)
    shifted = logits - top
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def prompt_logprobs(logits: np.ndarray, next_ids: Sequence[int], top: int) -> list[TokenLogprob]:
    """Each row's logprob of the token that actually came next (a prompt's own), with `top` alternatives."""
    rows = log_softmax(logits)
    return [_logprob(row, token, top) for row, token in zip(rows, next_ids)]


def _logprob(row: np.ndarray, token: int, top: int) -> TokenLogprob:
    best: tuple[tuple[int, float], ...] = ()
    if top > 0:
        ids = np.argpartition(-row, top - 1)[:top]
        ids = ids[np.argsort(-row[ids], kind="stable")]
        best = tuple((int(i), float(row[i])) for i in ids)
    return TokenLogprob(token, float(row[token]), best)


def generator(seed: int | None) -> np.random.Generator:
    """A row's own generator: seeded, the same draws every time; unseeded, fresh entropy."""
    return np.random.default_rng(seed)
