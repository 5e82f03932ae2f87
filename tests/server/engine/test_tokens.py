"""Per-row token rules: stop strings, what is held back, sampling, repetition penalty."""
import torch

from server.engine.tokens import apply_repetition_penalty, held_back, sample, stop_position


def test_stop_position_finds_the_earliest_stop_from_where_sending_left_off():
    assert stop_position("Hello world. Bye.", (".", "Bye"), start=0) == 11
    assert stop_position("Hello world", (".",), start=0) == -1
    assert stop_position("Hello world", (), start=0) == -1
    # A stop string straddling what was already checked is still found.
    assert stop_position("abc<|end|>", ("<|end|>",), start=5) == 3


def test_held_back_keeps_a_possible_stop_prefix():
    assert held_back("The answer is <|e", ("<|end|>",)) == 3
    assert held_back("The answer is", ("<|end|>",)) == 0
    assert held_back("Paris. The", ("The end",)) == 3
    assert held_back("x", ("xy", "x")) == 1


def test_sample_is_reproducible_with_a_seeded_generator_and_respects_top_k():
    scores = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    a = [sample(scores, 1.0, 0, 1.0, torch.Generator().manual_seed(7)) for _ in range(3)]
    assert len(set(a)) == 1
    top3 = set(torch.topk(scores, 3).indices.tolist())
    g = torch.Generator().manual_seed(1)
    assert {sample(scores, 5.0, 3, 1.0, g) for _ in range(200)} <= top3


def test_top_p_keeps_the_smallest_set_reaching_p():
    scores = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    g = torch.Generator().manual_seed(3)
    assert {sample(scores, 1.0, 0, 0.7, g) for _ in range(300)} == {0, 1}
    assert {sample(scores, 1.0, 0, 0.01, g) for _ in range(50)} == {0}


def test_repetition_penalty_lowers_seen_tokens_either_sign():
    scores = torch.tensor([2.0, -2.0, 1.0])
    apply_repetition_penalty(scores, torch.tensor([0, 1]), 2.0)
    assert scores.tolist() == [1.0, -4.0, 1.0]
