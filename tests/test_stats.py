"""Statistics for the report against hand-computed values and closed forms."""

import math
import sys

import numpy as np
import pytest

from compare.report.stats import bootstrap_ci, budget_to_reach, crossover, fit_bon, fit_rl, paired_difference


def test_paired_difference_known_answer():
    # seeds 3 and 4 are unpaired and left out; differences 1, 2, 3: mean 2, sd 1
    a = {0: 1.0, 1: 2.0, 2: 3.0, 3: 99.0}
    b = {0: 0.0, 1: 0.0, 2: 0.0, 4: 5.0}
    result = paired_difference(a, b)
    assert result["n"] == 3 and result["seeds"] == [0, 1, 2] and result["mean"] == pytest.approx(2.0)
    # half-width t_{0.975,2} sd / sqrt(n) = 4.303 / sqrt(3) = 2.484 > 2: the interval holds 0
    assert result["half_width"] == pytest.approx(4.303 / math.sqrt(3))
    assert result["significant"] is False
    # t = 2 / (1 / sqrt 3), t^2 = 12; for 2 df the two-sided p is 1 - t / sqrt(2 + t^2) = 1 - sqrt(6/7)
    assert result["p_value"] == pytest.approx(1 - math.sqrt(6 / 7))


def test_paired_difference_significant_and_degenerate():
    # differences 2, 3, 4: mean 3 > 2.484; t^2 = 27 -> p = 1 - sqrt(27/29)
    result = paired_difference({0: 2.0, 1: 3.0, 2: 4.0}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert result["significant"] is True and result["p_value"] == pytest.approx(1 - math.sqrt(27 / 29))
    one = paired_difference({0: 1.0}, {0: 0.0})
    assert one["n"] == 1 and not one["significant"] and math.isnan(one["half_width"])
    assert math.isnan(one["p_value"])
    # zero spread: interval of width 0 around 1
    flat = paired_difference({0: 1.0, 1: 2.0}, {0: 0.0, 1: 1.0})
    assert flat["half_width"] == 0.0 and flat["significant"] and flat["p_value"] == 0.0
    assert paired_difference({0: 1.0}, {1: 1.0})["n"] == 0


def test_paired_difference_without_scipy(monkeypatch):
    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # import raises ImportError
    result = paired_difference({0: 2.0, 1: 3.0, 2: 4.0}, {0: 0.0, 1: 0.0, 2: 0.0})
    assert math.isnan(result["p_value"]) and result["significant"] is True


def test_bootstrap_ci():
    values = [0.3, 1.2, 0.7, 2.5, 1.1, 0.9, 1.6, 0.4]
    low, high = bootstrap_ci(values)
    assert (low, high) == bootstrap_ci(values, seed=0)  # deterministic
    assert (low, high) != bootstrap_ci(values, seed=1)
    assert low < np.mean(values) < high
    # two values: resampled means 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4 -> percentiles 0 and 1
    assert bootstrap_ci([0.0, 1.0]) == (0.0, 1.0)
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert bootstrap_ci([1.0, 5.0, 9.0], stat=np.median, n_boot=500)[1] <= 9.0
    assert all(math.isnan(v) for v in bootstrap_ci([]))


def test_fit_bon_recovers_curve_and_peak():
    alpha, beta, r0 = 1.5, 0.4, -0.7
    d = np.linspace(0.0, 4.0, 9)  # d = 0 is present: r0 is read from it
    fit = fit_bon(d, r0 + d * (alpha - beta * d))
    assert fit["alpha"] == pytest.approx(alpha, abs=1e-6) and fit["beta"] == pytest.approx(beta, abs=1e-6)
    assert fit["r0"] == pytest.approx(r0)
    # d* = alpha / (2 beta) = 1.875, R* = alpha^2 / (4 beta) = 1.40625
    assert fit["d_peak"] == pytest.approx(1.875) and fit["kl_peak"] == pytest.approx(1.875**2)
    assert fit["r_peak"] == pytest.approx(r0 + 1.40625)
    grid = np.linspace(0.01, 4.0, 40_000)
    assert grid[np.argmax(grid * (alpha - beta * grid))] == pytest.approx(fit["d_peak"], abs=1e-3)
    # without a d = 0 point r0 defaults to 0, and an explicit r0 is subtracted
    d_pos = d[1:]
    assert fit_bon(d_pos, d_pos * (alpha - beta * d_pos))["alpha"] == pytest.approx(alpha, abs=1e-6)
    explicit = fit_bon(d_pos, 3.0 + d_pos * (alpha - beta * d_pos), r0=3.0)
    assert explicit["beta"] == pytest.approx(beta, abs=1e-6) and explicit["r_peak"] == pytest.approx(4.40625)


def test_fit_rl_recovers_curve_and_peak():
    alpha, beta, r0 = 1.0, 0.5, 0.2
    d = np.concatenate([[0.0], np.linspace(0.25, 8.0, 12)])
    gain = np.zeros_like(d)
    gain[1:] = d[1:] * (alpha - beta * np.log(d[1:]))
    fit = fit_rl(d, r0 + gain)
    assert fit["alpha"] == pytest.approx(alpha, abs=1e-6) and fit["beta"] == pytest.approx(beta, abs=1e-6)
    # d* = exp(alpha / beta - 1) = e, R* = beta d* = e / 2
    assert fit["d_peak"] == pytest.approx(math.e) and fit["r_peak"] == pytest.approx(r0 + math.e / 2)
    grid = np.linspace(0.01, 8.0, 80_000)
    curve = grid * (alpha - beta * np.log(grid))
    assert grid[np.argmax(curve)] == pytest.approx(math.e, abs=1e-3)
    assert curve.max() == pytest.approx(math.e / 2, abs=1e-6)


def test_fits_without_a_peak():
    d = np.array([0.5, 1.0, 2.0, 3.0])
    rising = fit_bon(d, d * (1.0 + 0.2 * d))  # beta = -0.2: never turns down
    assert rising["beta"] == pytest.approx(-0.2) and math.isnan(rising["d_peak"])
    assert math.isnan(rising["r_peak"])
    assert math.isnan(fit_rl(d, d * (1.0 + 0.3 * np.log(d)))["d_peak"])
    assert math.isnan(fit_bon([0.0, 1.0], [0.0, 1.0])["alpha"])  # one point with d > 0
    with pytest.raises(ValueError):
        fit_rl([-1.0, 1.0], [0.0, 0.0])


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
