"""Pure metric functions against hand-computed values."""

import math

import pytest

from compare.metrics import distinct_n, mean_ci, pairwise_accuracy, sampled_kl, t_quantile


def test_mean_ci_t_interval():
    mean, half, n = mean_ci([1.0, 2.0, 3.0])
    # sd = 1, t_{0.975, 2} = 4.302653 -> half-width 4.302653 / sqrt(3)
    assert (mean, n) == (2.0, 3) and half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert math.isnan(mean_ci([5.0])[1]) and mean_ci([5.0])[0] == 5.0
    assert mean_ci([])[2] == 0
    assert mean_ci([1.0, float("nan"), 3.0])[0] == 2.0


def test_t_quantile_from_scipy():
    # the printed table's values, and a row the old hand-written table rounded (df 11: 2.201, not 2.228)
    assert t_quantile(1) == pytest.approx(12.706, abs=1e-3) and t_quantile(4) == pytest.approx(
        2.776, abs=1e-3
    )
    assert t_quantile(11) == pytest.approx(2.201, abs=1e-3) and t_quantile(10_000) == pytest.approx(
        1.960, abs=1e-3
    )
    assert t_quantile(4, level=0.90) == pytest.approx(2.132, abs=1e-3)
    assert math.isnan(t_quantile(0))


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
