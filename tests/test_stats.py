"""Statistics for the report against hand-computed values and closed forms."""

import math

import numpy as np
import pytest

from compare.report.stats import (
    against_zero,
    budget_to_reach,
    crossover,
    fit_bon,
    fit_rl,
    holm,
    paired_difference,
    seeds_to_decide,
)


def test_paired_difference_known_answer():
    # seeds 3 and 4 are unpaired and left out; differences 1, 2, 3: mean 2, sd 1
    a = {0: 1.0, 1: 2.0, 2: 3.0, 3: 99.0}
    b = {0: 0.0, 1: 0.0, 2: 0.0, 4: 5.0}
    result = paired_difference(a, b)
    assert result.n == 3 and result.seeds == (0, 1, 2) and result.mean == pytest.approx(2.0)
    # t_{0.975, 2} = 4.302653 (scipy, exact): half-width 4.3027 / sqrt(3) = 2.484 > 2: not significant
    assert result.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert result.sd == pytest.approx(1.0) and result.significant is False
    # t = 2 / (1 / sqrt 3) = 2 sqrt 3; for 2 degrees of freedom P(|T| > t) = 1 - t / sqrt(t^2 + 2)
    assert result.p_value == pytest.approx(1 - math.sqrt(6 / 7))
    assert result.low == pytest.approx(2.0 - result.half_width) and result.high == pytest.approx(
        2.0 + result.half_width
    )


def test_paired_difference_significant_and_degenerate():
    # differences 2, 3, 4: mean 3, sd 1, half-width 2.484 < 3: significant; t = 3 sqrt 3
    result = paired_difference({0: 2.0, 1: 3.0, 2: 4.0}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert result.significant is True and result.p_value == pytest.approx(1 - math.sqrt(27 / 29))
    one = paired_difference({0: 1.0}, {0: 0.0})
    assert one.n == 1 and not one.significant and math.isnan(one.half_width)
    assert math.isnan(one.p_value)
    # zero spread: the interval has width 0; p is 0 for a nonzero mean
    flat = paired_difference({0: 1.0, 1: 2.0}, {0: 0.0, 1: 1.0})
    assert flat.half_width == 0.0 and flat.significant and flat.p_value == 0.0
    assert paired_difference({0: 1.0}, {1: 1.0}).n == 0
    assert against_zero({0: 2.0, 1: 3.0, 2: 4.0}) == result


def test_interval_and_p_value_agree_at_every_n():
    """With scipy's t for both, "the interval excludes 0" is "p < 0.05", for any number of seeds (the
    old t table rounded between rows and could disagree)."""
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 11, 13, 17, 40, 70):
        for _ in range(30):
            diffs = rng.normal(0.5, 1.0, size=n)
            d = against_zero(dict(enumerate(diffs)))
            assert d.significant == (d.p_value < 0.05)


def test_holm_known_answer():
    # m = 4: sorted 0.01, 0.02, 0.03, 0.04 -> 0.04, 0.06, 0.06 (monotone), 0.06; nan stays out
    assert holm([0.03, 0.01, math.nan, 0.04, 0.02]) == pytest.approx(
        [0.06, 0.04, math.nan, 0.06, 0.06], nan_ok=True
    )
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([0.001]) == [0.001]
    assert holm([]) == []


def test_seeds_to_decide():
    # mean 1, sd 1: n = 7 is the first with t_{0.975, n-1} / sqrt(n) < 1 (2.447 / sqrt 7 = 0.925; n = 6: 1.049)
    assert seeds_to_decide(1.0, 1.0) == 7
    assert seeds_to_decide(-1.0, 1.0) == 7  # the sign does not matter
    assert seeds_to_decide(0.0, 1.0) is None and seeds_to_decide(1e-6, 1.0, most=100) is None
    assert seeds_to_decide(0.5, 0.0) == 2


def test_fit_bon_recovers_curve_and_peak():
    alpha, beta, r0 = 1.5, 0.4, -0.7
    d = np.linspace(0.0, 4.0, 9)
    fit = fit_bon(d, r0 + d * (alpha - beta * d), r0=r0)
    assert fit.alpha == pytest.approx(alpha, abs=1e-6) and fit.beta == pytest.approx(beta, abs=1e-6)
    assert fit.r0 == r0 and fit.d_max == 4.0
    # d* = alpha / (2 beta) = 1.875, R* = alpha^2 / (4 beta) = 1.40625
    assert fit.d_peak == pytest.approx(1.875) and fit.kl_peak == pytest.approx(1.875**2)
    assert fit.r_peak == pytest.approx(r0 + 1.40625) and fit.peak_inside
    grid = np.linspace(0.01, 4.0, 40_000)
    assert grid[np.argmax(fit.gold(grid))] == pytest.approx(fit.d_peak, abs=1e-3)
    assert fit.gold(np.array([0.0]))[0] == pytest.approx(r0)  # the curve starts at the start policy


def test_fit_rl_recovers_curve_and_peak():
    alpha, beta, r0 = 1.0, 0.5, 0.2
    d = np.concatenate([[0.0], np.linspace(0.25, 8.0, 12)])
    gain = np.zeros_like(d)
    gain[1:] = d[1:] * (alpha - beta * np.log(d[1:]))
    fit = fit_rl(d, r0 + gain, r0=r0)
    assert fit.alpha == pytest.approx(alpha, abs=1e-6) and fit.beta == pytest.approx(beta, abs=1e-6)
    # d* = exp(alpha / beta - 1) = e, R* = beta d* = e / 2
    assert fit.d_peak == pytest.approx(math.e) and fit.r_peak == pytest.approx(r0 + math.e / 2)
    assert fit.peak_inside  # e < 8, the largest d measured
    grid = np.linspace(0.01, 8.0, 80_000)
    assert grid[np.argmax(fit.gold(grid))] == pytest.approx(math.e, abs=1e-3)


def test_a_monotone_curve_without_a_point_at_zero_has_no_peak():
    """The bug of issue 20, on the example report's numbers: best-of-n's gold rises with n (0.844, 1.059,
    1.181 at measured KL 0.137, 0.513, 0.988; n = 2, 4, 8), with no n = 1 point. Forced through (0, 0),
    the fit turned down at KL 0.77, inside the data; from the start policy's gold (the base model's
    0.626) it still rises at the largest KL measured, and its peak lies far outside (KL ~ 14)."""
    d, gold = np.sqrt([0.137, 0.513, 0.988]), np.array([0.844, 1.059, 1.181])
    through_zero = fit_bon(d, gold, r0=0.0)
    assert through_zero.peak_inside and through_zero.kl_peak == pytest.approx(0.77, abs=0.01)  # the artefact
    fit = fit_bon(d, gold, r0=0.626)
    assert not fit.peak_inside and fit.kl_peak > 10
    assert np.all(np.diff(fit.gold(np.linspace(0, d.max(), 50))) > 0)  # rising over the measured range
    # PPO's first check sits at KL 2.4e-7, not 0: its gold (0.61) is the start, given explicitly
    d_rl = np.sqrt([2.4e-7, 0.5, 1.0, 2.0, 3.0])
    gold_rl = 0.61 + 0.3 * d_rl
    assert not fit_rl(d_rl, gold_rl, r0=0.61).peak_inside


def test_a_curve_with_a_real_peak_has_it_where_it_is():
    d = np.linspace(0.2, 3.0, 15)
    gold = 0.5 + d * (1.2 - 0.4 * d)  # peak at d = 1.5, inside
    fit = fit_bon(d, gold, r0=0.5)
    assert fit.peak_inside and fit.d_peak == pytest.approx(1.5)


def test_fits_without_a_peak():
    d = np.array([0.5, 1.0, 2.0, 3.0])
    rising = fit_bon(d, d * (1.0 + 0.2 * d), r0=0.0)  # beta = -0.2: never turns down
    assert rising.beta == pytest.approx(-0.2) and math.isnan(rising.d_peak) and not rising.peak_inside
    assert math.isnan(rising.r_peak)
    assert math.isnan(fit_rl(d, d * (1.0 + 0.3 * np.log(d)), r0=0.0).d_peak)
    assert not fit_bon([0.0, 1.0], [0.0, 1.0], r0=0.0).fitted  # one point with d > 0
    with pytest.raises(ValueError):
        fit_rl([-1.0, 1.0], [0.0, 0.0], r0=0.0)
    with pytest.raises(ValueError):
        fit_rl([1.0, 2.0], [0.0, 0.0], r0=math.nan)  # the start must be given


def test_crossover():
    # gaps b - a: -1, -1, +1 -> halfway between 100 and 1000 in log x: sqrt(100 * 1000)
    assert crossover([10, 100, 1000], [1, 2, 3], [0, 1, 4]) == pytest.approx(math.sqrt(1e5))
    # unsorted input is sorted; gaps -3, +1 -> t = 3/4 of the way from 1 to 10^4 in log10: 10^3
    assert crossover([1e4, 1], [0, 3], [1, 0]) == pytest.approx(1e3)
    assert math.isnan(crossover([1, 10], [1, 2], [0, 1]))  # never ahead
    assert math.isnan(crossover([1, 10], [1, 1], [1, 1]))  # a tie is not overtaking
    assert crossover([5, 50], [0, 0], [1, 1]) == 5.0  # ahead from the start
    with pytest.raises(ValueError):
        crossover([0, 10], [0, 0], [1, 1])


def test_budget_to_reach():
    # target 0.9 * 1 = 0.9; between (10, 0.5) and (100, 1): t = 0.4 / 0.5 = 0.8 -> 10^1.8
    assert budget_to_reach([1, 10, 100], [0.0, 0.5, 1.0], 0.9) == pytest.approx(10**1.8)
    assert budget_to_reach([1, 10, 100], [0.0, 0.5, 1.0], 0.5) == pytest.approx(10.0)
    assert budget_to_reach([1, 10, 100], [0.95, 0.5, 1.0], 0.9) == 1.0
    # negative rewards: a fraction of the gain over the baseline -1: target -1 + 0.5 * 1 = -0.5
    # between (10, -0.8) and (100, 0): t = 0.3 / 0.8 -> 10^(1 + 3/8)
    assert budget_to_reach([1, 10, 100], [-1.0, -0.8, 0.0], 0.5, baseline=-1.0) == pytest.approx(10**1.375)
    assert math.isnan(budget_to_reach([1, 10], [-2.0, -1.0], 0.9))
    with pytest.raises(ValueError):
        budget_to_reach([1, 10], [0.0, 1.0], 1.5)


def test_no_peak_between_the_start_and_the_first_point_and_no_convex_curve():
    # points only far from the start: a concave fit whose peak falls in the unmeasured gap is not a peak
    d = np.array([1.5, 1.7, 2.0, 2.2])
    fit = fit_rl(d, 0.6 + d * (1.0 - 1.5 * np.log(d)), r0=0.6)  # d* = exp(1/1.5 - 1) = 0.72 < 1.5
    assert fit.concave and 0 < fit.d_peak < 1.5 and not fit.peak_inside
    # gold flat near the start then rising: beta < 0, a convex curve with a dip no point shows
    convex = fit_rl(d, np.array([0.61, 0.55, 0.6, 0.7]), r0=0.58)
    assert convex.fitted and not convex.concave and not convex.peak_inside


def test_a_curve_is_drawn_only_where_it_turns_with_the_data():
    d = np.linspace(0.2, 3.0, 15)
    assert fit_bon(d, 0.5 + d * (1.2 - 0.4 * d), r0=0.5).drawable  # a peak at 1.5, inside the data
    assert fit_bon(d, 0.5 + d * (1.0 + 0.2 * d), r0=0.5).drawable  # convex but rising throughout
    far = np.array([1.5, 1.7, 2.0, 2.2])
    assert not fit_rl(far, 0.6 + far * (1.0 - 1.5 * np.log(far)), r0=0.6).drawable  # peak in the gap
    assert not fit_rl(far, np.array([0.61, 0.55, 0.6, 0.7]), r0=0.58).drawable  # a dip no point shows
