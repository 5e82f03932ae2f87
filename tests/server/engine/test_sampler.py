"""Token choice for a whole step: the rules as array operations, pinned by their distributions."""
from types import SimpleNamespace

import numpy as np
import pytest

from server.engine.params import GenerationParams
from server.engine.sampler import apply_repetition_penalty, choose_tokens, generator, log_softmax, sample


def row(prompt=(5,), output=(), logprobs=None, **params):
    p = GenerationParams(**params)
    return SimpleNamespace(params=p, prompt_ids=list(prompt), output_ids=list(output), logprobs=logprobs,
                           generator=generator(p.seed) if p.do_sample else None)


def draws(logits, n, **params):
    params = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, **params}
    logits = np.tile(np.asarray(logits, dtype=np.float32), (n, 1))
    g = generator(params.pop("seed", 0))
    return sample(logits, np.full(n, params["temperature"], np.float32), np.full(n, params["top_k"]),
                  np.full(n, params["top_p"]), [g] * n).tolist()


def test_greedy_is_the_argmax_of_every_row_at_once():
    logits = np.array([[0, 3, 1], [2, 0, 1]], dtype=np.float32)
    assert choose_tokens(logits, [row(), row()], eos=[2])[0] == [1, 0]


def test_top_k_two_draws_only_the_two_best_and_both_appear():
    logits = np.log(np.array([0.1, 0.35, 0.05, 0.3, 0.2]))
    assert set(draws(logits, 400, top_k=2)) == {1, 3}


def test_top_p_keeps_exactly_the_nucleus():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert set(draws(logits, 400, top_p=0.7)) == {0, 1}  # 0.5 < 0.7 <= 0.8
    assert set(draws(logits, 400, top_p=0.81)) == {0, 1, 2}
    assert set(draws(logits, 50, top_p=0.01)) == {0}


def test_frequencies_follow_the_distribution():
    probs = np.array([0.6, 0.3, 0.1])
    got = np.bincount(draws(np.log(probs), 4000), minlength=3) / 4000
    assert np.abs(got - probs).max() < 0.03


@pytest.mark.parametrize(("proposed", "top_k"), [(3, 0), (2, 0), (2, 3), (1, 0)])
def test_a_proposed_token_taken_by_the_rejection_rule_leaves_every_tokens_probability(proposed, top_k):
    """Chi-square over 4000 fixed seeds: the draws with a proposal follow the distribution without one, whether
    the proposal is likely (1, 3), unlikely (2) or outside the top-k (2 with top_k=3: never taken)."""
    probs = np.array([0.1, 0.35, 0.05, 0.3, 0.2])
    n = 4000
    want = probs * (probs >= np.sort(probs)[-top_k]) if top_k else probs
    want = want / want.sum()
    logits = np.tile(np.log(probs).astype(np.float32), (n, 1))
    got = sample(logits, np.ones(n, np.float32), np.full(n, top_k), np.ones(n), [generator(s) for s in range(n)],
                 np.full(n, proposed))
    counts = np.bincount(got, minlength=5)
    kept = want > 0
    assert (counts[~kept] == 0).all()
    chi2 = (((counts - n * want)[kept]) ** 2 / (n * want[kept])).sum()
    assert chi2 < 18.47  # the 0.999 quantile at 4 degrees of freedom (fewer here with top-k: stricter)


def test_a_seed_repeats_and_rows_draw_from_their_own_generators():
    logits = np.random.default_rng(0).normal(size=(1, 1000)).astype(np.float32)

    def run(seed, mates):
        rows = [row(do_sample=True, seed=seed)] + [row(do_sample=True) for _ in range(mates)]
        out = []
        for _ in range(20):
            out.append(choose_tokens(np.repeat(logits, len(rows), axis=0), rows, eos=[])[0][0])
        return out

    assert run(7, 0) == run(7, 3) != run(8, 0)


def test_temperature_near_zero_is_greedy():
    logits = np.array([[0.0, 2.0, 1.0]], dtype=np.float32)
    assert choose_tokens(logits, [row(do_sample=True, temperature=1e-30, seed=1)], eos=[])[0] == [1]


def test_min_new_tokens_forbids_the_end_until_reached():
    logits = np.array([[0, 5, 1], [0, 5, 1]], dtype=np.float32)
    early, late = row(min_new_tokens=2, output=[0]), row(min_new_tokens=2, output=[0, 0])
    assert choose_tokens(logits, [early, late], eos=[1])[0] == [2, 1]


def test_repetition_penalty_lowers_seen_tokens_either_sign_once():
    logits = np.array([[2.0, -2.0, 1.0], [2.0, -2.0, 1.0]], dtype=np.float32)
    apply_repetition_penalty(logits, [1], [row(prompt=[0, 1, 0], repetition_penalty=2.0)])
    assert logits.tolist() == [[2.0, -2.0, 1.0], [1.0, -4.0, 1.0]]


def test_logprobs_are_the_models_own_with_the_best_alternatives():
    logits = np.array([[1.0, 3.0, 2.0, 0.0]], dtype=np.float32)
    expected = log_softmax(logits.copy())[0]
    # The penalty changes the choice, not the reported distribution.
    tokens, logprobs = choose_tokens(logits, [row(prompt=[1], repetition_penalty=10.0, logprobs=2)], eos=[])
    assert tokens == [2]
    lp = logprobs[0]
    assert lp.token_id == 2 and np.isclose(lp.logprob, expected[2])
    assert [t for t, _ in lp.top] == [1, 2] and np.allclose([v for _, v in lp.top], expected[[1, 2]])
    assert choose_tokens(np.zeros((1, 4), np.float32), [row()], eos=[])[1] == [None]


def chi_square(draws_, want):
    """Pearson's statistic of integer draws against the distribution `want` (tokens it gives 0 must never come)."""
    n, kept = len(draws_), want > 0
    counts = np.bincount(draws_, minlength=len(want))
    assert (counts[~kept] == 0).all()
    return (((counts - n * want)[kept]) ** 2 / (n * want[kept])).sum()


def sampled(logits, n, output=(), **params):
    """n draws through choose_tokens, one row per fixed seed, every row with the same history."""
    rows = [row(output=output, do_sample=True, seed=s, **params) for s in range(n)]
    return choose_tokens(np.tile(np.asarray(logits, dtype=np.float32), (n, 1)), rows, eos=[])[0]


def test_min_p_samples_from_the_distribution_it_defines():
    """Chi-square over 4000 fixed seeds: min_p 0.3 drops tokens under 0.3 x the best one's probability (0.4 x 0.3 =
    0.12: 0.1 and 0.05 go) and the rest keep their ratios."""
    probs = np.array([0.4, 0.3, 0.1, 0.15, 0.05])
    want = np.where(probs >= 0.3 * probs.max(), probs, 0.0)
    assert chi_square(sampled(np.log(probs), 4000, min_p=0.3), want / want.sum()) < 16.27  # 0.999, 3 d.o.f.


def test_penalties_sample_from_the_distribution_they_define():
    """Chi-square over 4000 fixed seeds: token 1 generated twice and token 2 once lose frequency x count + presence
    from their scores; the draws follow the softmax of the penalised scores."""
    logits = np.log(np.array([0.1, 0.35, 0.05, 0.3, 0.2]))
    scores = logits - np.array([0, 0.5 * 2 + 0.25, 0.5 + 0.25, 0, 0])
    want = np.exp(scores) / np.exp(scores).sum()
    got = sampled(logits, 4000, output=[1, 2, 1], frequency_penalty=0.5, presence_penalty=0.25)
    assert chi_square(got, want) < 18.47  # 0.999, 4 d.o.f.


def test_openai_penalties_count_only_generated_tokens_row_by_row():
    logits = np.zeros((3, 4), dtype=np.float32)
    rows = [row(prompt=[3, 3], output=[0, 0, 1], frequency_penalty=1.0, presence_penalty=0.5),
            row(output=[2], presence_penalty=-1.0), row(output=[0])]
    choose_tokens(logits, rows, eos=[])
    assert logits.tolist() == [[-2.5, -1.5, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 0]]


def test_logit_bias_moves_greedy_choices_and_leaves_logprobs_raw():
    logits = np.array([[1.0, 3.0, 2.0], [1.0, 3.0, 2.0]], dtype=np.float32)
    raw = log_softmax(logits.copy())
    tokens, logprobs = choose_tokens(logits, [row(logit_bias=((1, -100.0),), logprobs=0),
                                              row(logit_bias=((0, 5.0), (2, -1.0)))], eos=[])
    assert tokens == [2, 0]
    assert np.isclose(logprobs[0].logprob, raw[0, 2])  # the model's own distribution (vLLM's raw_logprobs)


def test_penalties_apply_to_greedy_rows_too():
    logits = np.array([[0.0, 2.0, 1.0]], dtype=np.float32)
    assert choose_tokens(logits, [row(output=[1], frequency_penalty=1.5)], eos=[])[0] == [2]


def test_stop_token_ids_wait_for_min_new_tokens_as_the_end_of_sequence_does():
    logits = np.array([[0, 5, 1], [0, 5, 1]], dtype=np.float32)
    early = row(min_new_tokens=2, output=[0], stop_token_ids=(1,))
    late = row(min_new_tokens=2, output=[0, 0], stop_token_ids=(1,))
    assert choose_tokens(logits, [early, late], eos=[])[0] == [2, 1]
