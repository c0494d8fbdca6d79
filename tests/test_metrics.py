"""Pure metric functions against hand-computed values."""

import math

import pytest

from compare.metrics import (
    distinct_n,
    mean_ci,
    pairwise_accuracy,
    pass_at_k,
    pass_ks,
    sampled_kl,
    t_quantile,
)


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


def test_pass_at_k_unbiased_estimator():
    # 1 - C(n-c, k) / C(n, k), by hand
    assert pass_at_k(8, 3, 1) == pytest.approx(3 / 8)  # pass@1 is the share that passes
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # C(3,2)=3, C(4,2)=6
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # C(3,2)=3, C(5,2)=10
    assert pass_at_k(64, 1, 64) == 1.0  # every sample drawn: the one pass is among them
    assert pass_at_k(3, 2, 2) == 1.0  # fewer failures than k: a pass is always drawn
    assert pass_at_k(10, 0, 4) == 0.0
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 8)
    assert pass_ks(64) == [1, 2, 4, 8, 16, 32, 64]
    assert pass_ks(48) == [1, 2, 4, 8, 16, 32, 48]
    assert pass_ks(1) == [1]


def test_pass_at_means_the_estimate_over_prompts():
    from compare.stages.evaluate import pass_at

    # prompt 0: 1 pass in 4 (pass@1 1/4, pass@2 1 - C(3,2)/C(4,2) = 1/2, pass@4 1); prompt 1: none
    passed = [True, False, False, False] + [False] * 4
    assert pass_at(passed, 4, 4) == pytest.approx({"pass_at_1": 0.125, "pass_at_2": 0.25, "pass_at_4": 0.5})


def test_task_pass_rules():
    from compare.tasks import TASKS

    arithmetic = TASKS["arithmetic"]()
    prompt = "add 3 7 + 4 2 ="
    for completion, passes in (
        (" 7 9", True),
        (" 7 0", False),
        (" 0 9 , 0 7 so 7 9", True),
        (" 7 9 9", False),
    ):
        gold = arithmetic.gold(prompt, completion)
        assert arithmetic.passes(prompt, completion, gold) is passes
        assert passes == (gold.reward == 1.0)  # the verifier's pass is the gold ceiling
    reviews = TASKS["reviews"]()
    review = "book review : i waited a long time ."
    for completion, passes in (
        (" the writing is great . the characters is wonderful .", True),  # two aspects: 1.58
        (" the writing is great .", False),  # one: 1.42
    ):
        assert reviews.passes(review, completion, reviews.gold(review, completion)) is passes
    count = "count : four five"
    assert reviews.passes(count, " six seven eight .", reviews.gold(count, " six seven eight ."))
    assert not reviews.passes(count, " six seven nine .", reviews.gold(count, " six seven nine ."))
    assert not TASKS["imdb"].pass_rule  # a dataset task has none: eval.pass_at_k is refused at load
