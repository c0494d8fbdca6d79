"""Pure metric functions against hand-computed values."""

import math

import pytest

from compare.metrics import distinct_n, mean_ci, pairwise_accuracy, sampled_kl


def test_mean_ci_t_interval():
    mean, half, n = mean_ci([1.0, 2.0, 3.0])
    # sd = 1, t_{0.975, 2} = 4.303 -> half-width 4.303 / sqrt(3)
    assert (mean, n) == (2.0, 3) and half == pytest.approx(4.303 / math.sqrt(3))
    assert math.isnan(mean_ci([5.0])[1]) and mean_ci([5.0])[0] == 5.0
    assert mean_ci([])[2] == 0
    assert mean_ci([1.0, float("nan"), 3.0])[0] == 2.0


def test_distinct_n():
    # bigrams: (a b) (b a) (a b) | (a b) -> 2 distinct of 4
    assert distinct_n(["a b a b", "a b"], 2) == 0.5
    assert distinct_n(["a b c"], 1) == 1.0
    assert distinct_n(["a"], 2) == 0.0


def test_sampled_kl_and_pairwise_accuracy():
    assert sampled_kl([-1.0, -2.0], [-1.5, -3.0]) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        sampled_kl([-1.0], [-1.0, -2.0])
    # pairs: right, wrong, gold tie (skipped)
    assert pairwise_accuracy([1.0, 0.0, 3.0], [0.0, 1.0, 2.0], [2.0, 2.0, 1.0], [1.0, 1.0, 1.0]) == 0.5
    assert math.isnan(pairwise_accuracy([1.0], [0.0], [1.0], [1.0]))
