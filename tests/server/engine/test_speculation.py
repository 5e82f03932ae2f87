"""The proposal length's rule (speculation.adapt): earned from 1, halved on refusal, ever rarer retries."""
from server.engine.speculation import RETRY_AFTER, adapt


def steps_until_it_proposes(k, misses):
    n = 0
    while k <= 0:
        k, misses = adapt(k, 0, 0, 4, misses)
        n += 1
    return n, k, misses


def test_the_length_grows_with_kept_runs_up_to_the_limit_and_halves_on_refused_ones():
    k, misses = 1, 0
    for _ in range(5):
        k, misses = adapt(k, k, k, 4, misses)
    assert (k, misses) == (4, 0)
    assert adapt(4, 4, 2, 4, 0) == (4, 0)  # partly kept: as it was
    assert adapt(4, 4, 0, 4, 0) == (2, 0)
    assert adapt(2, 2, 0, 4, 0) == (1, 0)
    assert adapt(3, 0, 0, 4, 0) == (3, 0)  # nothing proposed (no match): as it was


def test_each_refused_single_token_doubles_the_wait_and_a_kept_one_resets_it():
    waits = []
    k, misses = 1, 0
    for _ in range(5):
        k, misses = adapt(k, 1, 0, 4, misses)  # its one token refused
        n, k, misses = steps_until_it_proposes(k, misses)
        waits.append(n)
        assert k == 1
    assert waits == [RETRY_AFTER + 1, 2 * RETRY_AFTER + 1, 4 * RETRY_AFTER + 1, 8 * RETRY_AFTER + 1,
                     8 * RETRY_AFTER + 1]
    assert adapt(1, 1, 1, 4, misses) == (2, 0)
