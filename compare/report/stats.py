"""Statistics for the report as pure functions: plain lists / numpy arrays in, numbers out.

- `paired_difference`: arm A minus arm B, paired by seed, with its 95% t-interval (fairness rule 4);
- `bootstrap_ci`: percentile bootstrap interval for statistics without a t-interval;
- `fit_bon`, `fit_rl`: Gao et al. 2022 over-optimisation curves, gold reward against d = sqrt(KL);
- `crossover`, `budget_to_reach`: single numbers read off learning curves over the annotation budget.

The t quantiles come from `compare.metrics.t_quantile_975` so that every interval in the report uses
the same table. scipy is optional: only the p-value of `paired_difference` uses it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from compare.metrics import mean_ci


def paired_difference(a_by_seed: Mapping[int, float], b_by_seed: Mapping[int, float]) -> dict:
    """Mean difference a - b over seeds run by both arms, with its 95% t-interval and a paired t-test.

        delta_s = a_s - b_s for s in seeds(a) & seeds(b)
        mean = 1/n sum_s delta_s,   half_width = t_{0.975, n-1} * sd(delta) / sqrt(n)
        t = mean / (sd(delta) / sqrt(n)),   p = 2 * P(T_{n-1} > |t|)   (two-sided paired t-test)

    Pairing by seed removes what the arms share under one seed (same data draw, same eval prompts),
    so the interval is usually much narrower than the difference of two unpaired intervals.
    Seeds present in only one arm are left out; a nan difference is left out as `mean_ci` does.

    `significant` is decided by the interval (it excludes 0, n >= 2) with the project's t table, which
    rounds between rows towards the larger quantile; the p-value uses scipy's exact t distribution, so
    `significant` implies p < 0.05 but a p just under 0.05 may come with `significant` False.
    With zero spread the interval has width 0, and p is 0 if the mean is not 0, else 1.

    Returns:
        {"mean", "half_width", "n", "significant", "p_value", "seeds"}: half_width is nan for n < 2,
        p_value is nan for n < 2 or when scipy is not installed; "seeds" lists the paired seeds used.
    """
    seeds = sorted(set(a_by_seed) & set(b_by_seed))
    pairs = [(s, float(a_by_seed[s]) - float(b_by_seed[s])) for s in seeds]
    pairs = [(s, d) for s, d in pairs if not math.isnan(d)]
    diffs = [d for _, d in pairs]
    mean, half_width, n = mean_ci(diffs)
    significant = n >= 2 and abs(mean) > half_width
    return {
        "mean": mean,
        "half_width": half_width,
        "n": n,
        "significant": bool(significant),
        "p_value": _paired_t_p_value(diffs),
        "seeds": [s for s, _ in pairs],
    }


def _paired_t_p_value(diffs: Sequence[float]) -> float:
    """Two-sided p-value of the one-sample t-test of mean(diffs) = 0; nan without scipy or for n < 2."""
    n = len(diffs)
    if n < 2:
        return math.nan
    try:
        from scipy.stats import t as student_t
    except ImportError:
        return math.nan
    mean = float(np.mean(diffs))
    sd = float(np.std(diffs, ddof=1))
    if sd == 0.0:  # t = +-inf or 0/0; scipy would warn and answer nan
        return 0.0 if mean != 0.0 else 1.0
    t_stat = mean / (sd / math.sqrt(n))
    return float(2.0 * student_t.sf(abs(t_stat), df=n - 1))


def bootstrap_ci(
    values: Sequence[float],
    stat: Callable[[np.ndarray], float] = np.mean,
    n_boot: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of `stat(values)` (Efron & Tibshirani 1993, ch. 13).

        draw n_boot resamples x*_b of size n with replacement;  theta*_b = stat(x*_b)
        interval = (2.5th percentile, 97.5th percentile) of theta*_1..B

    Deterministic under `seed` (numpy's default_rng). nan values are left out, as in `mean_ci`.
    For a mean over a handful of seeds prefer `mean_ci`: the percentile bootstrap is too narrow for
    small n. Use this for statistics without a closed-form interval (medians, win rates, ratios).

    Args:
        values: the sample.
        stat: array -> number, applied to each resample (default: the mean).
        n_boot: number of resamples.
        seed: seed of the resampling.

    Returns:
        (low, high); (nan, nan) for an empty sample.
    """
    xs = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if xs.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    indices = rng.integers(0, xs.size, size=(n_boot, xs.size))
    thetas = np.array([stat(xs[row]) for row in indices], dtype=float)
    low, high = np.percentile(thetas, [2.5, 97.5])
    return float(low), float(high)


# --- Gao et al. 2022, "Scaling Laws for Reward Model Overoptimization", eq. (1) and (2) -------------
#
# With d = sqrt(KL(policy || base)) and R the gold reward gained over the base policy:
#   best-of-n:  R_bon(d) = d (alpha - beta d)        dR/dd = alpha - 2 beta d = 0  ->  d* = alpha / (2 beta)
#                                                    R* = alpha^2 / (4 beta)
#   RL:         R_RL(d)  = d (alpha - beta log d)    dR/dd = alpha - beta log d - beta = 0
#                                                    ->  d* = exp(alpha / beta - 1),  R* = beta d*
# Both are maxima only when beta > 0 (d2R/dd2 = -2 beta and -beta / d). Both are linear in
# (alpha, beta), so ordinary least squares on the features (d, -d^2) or (d, -d log d) fits them.


def _fit_gain_curve(
    d: npt.ArrayLike, r: npt.ArrayLike, r0: float | None, feature: Callable[[np.ndarray], np.ndarray]
) -> tuple[float, float, float]:
    """Least squares of r - r0 = alpha * d - beta * feature(d) over the points with d > 0."""
    d = np.asarray(d, dtype=float)
    r = np.asarray(r, dtype=float)
    if d.shape != r.shape or d.ndim != 1:
        raise ValueError(f"d and r must be 1-D of one length, got shapes {d.shape} and {r.shape}")
    if np.any(d < 0):
        raise ValueError("d = sqrt(KL) must be >= 0")
    if r0 is None:  # gold reward of the base policy, if the data hold it
        r0 = float(np.mean(r[d == 0])) if np.any(d == 0) else 0.0
    # a point at d = 0 has features (0, 0): it says nothing about alpha and beta, only about r0
    keep = d > 0
    d, gain = d[keep], r[keep] - r0
    design = np.stack([d, -feature(d)], axis=1)
    if len(d) < 2 or np.linalg.matrix_rank(design) < 2:
        return r0, math.nan, math.nan
    (alpha, beta), *_ = np.linalg.lstsq(design, gain, rcond=None)
    return r0, float(alpha), float(beta)


def _fit_result(r0: float, alpha: float, beta: float, d_peak: float, gain_peak: float) -> dict:
    return {
        "alpha": alpha,
        "beta": beta,
        "r0": r0,
        "d_peak": d_peak,
        "kl_peak": d_peak**2,
        "r_peak": r0 + gain_peak,
    }


def fit_bon(d: npt.ArrayLike, r: npt.ArrayLike, r0: float | None = None) -> dict:
    """Fit best-of-n's gold reward R(d) = d (alpha - beta d) + r0, d = sqrt(KL) (Gao et al. 2022, eq. 1).

    The curve is fitted to the gain r - r0 over the base policy, since the real gold reward of the base
    model is not 0. Choice of r0: the given value; else the mean r at d = 0 when the data hold such
    points (best-of-1 is the base policy itself); else 0, i.e. r is taken to be a gain already.
    Points at d = 0 only set r0: the model predicts a gain of exactly 0 there.

    Peak: d* = alpha / (2 beta), R(d*) = alpha^2 / (4 beta); nan when there is no peak at d > 0
    (beta <= 0: the curve never turns down; alpha <= 0: it only goes down).

    Args:
        d: sqrt(KL to the base) of each point, >= 0 (for best-of-n, KL = log n - (n - 1) / n).
        r: gold reward of each point.
        r0: gold reward at d = 0 to subtract (see above).

    Returns:
        {"alpha", "beta", "r0", "d_peak", "kl_peak" (= d_peak^2), "r_peak" (= r0 + R(d*), in r's units)};
        alpha and beta nan with fewer than two distinct d > 0.
    """
    r0, alpha, beta = _fit_gain_curve(d, r, r0, lambda x: x**2)
    if not (beta > 0 and alpha > 0):
        return _fit_result(r0, alpha, beta, math.nan, math.nan)
    return _fit_result(r0, alpha, beta, alpha / (2 * beta), alpha**2 / (4 * beta))


def fit_rl(d: npt.ArrayLike, r: npt.ArrayLike, r0: float | None = None) -> dict:
    """Fit RL's gold reward R(d) = d (alpha - beta log d) + r0, d = sqrt(KL) (Gao et al. 2022, eq. 2).

    Fitted on the points with d > 0 (log d is undefined at 0); r0 is chosen as in `fit_bon` (given; else
    the mean r at d = 0, the policy before RL; else 0).

    Peak: d* = exp(alpha / beta - 1), R(d*) = beta d*; nan when beta <= 0 (no maximum).

    Returns:
        {"alpha", "beta", "r0", "d_peak", "kl_peak" (= d_peak^2), "r_peak" (= r0 + R(d*), in r's units)};
        alpha and beta nan with fewer than two distinct d > 0.
    """
    r0, alpha, beta = _fit_gain_curve(d, r, r0, lambda x: x * np.log(x))
    if not beta > 0:
        return _fit_result(r0, alpha, beta, math.nan, math.nan)
    d_peak = math.exp(alpha / beta - 1)
    return _fit_result(r0, alpha, beta, d_peak, beta * d_peak)


# --- reading single numbers off curves over the budget ------------------------------------------------


def _sorted_curve(xs: npt.ArrayLike, *ys: npt.ArrayLike) -> tuple[np.ndarray, ...]:
    """xs and ys as float arrays sorted by x; drops points where any y is nan; x must be > 0 and unique."""
    xs = np.asarray(xs, dtype=float)
    ys = tuple(np.asarray(y, dtype=float) for y in ys)
    if any(y.shape != xs.shape for y in ys) or xs.ndim != 1:
        raise ValueError("xs and the curves must be 1-D of one length")
    if np.any(xs <= 0):
        raise ValueError("x must be > 0: the curve is interpolated on a log-x axis")
    order = np.argsort(xs, kind="stable")
    xs, ys = xs[order], tuple(y[order] for y in ys)
    if np.any(np.diff(xs) == 0):
        raise ValueError("x values must be unique")
    keep = ~np.any([np.isnan(y) for y in ys], axis=0)
    return (xs[keep], *(y[keep] for y in ys))


def _first_x_where(xs: np.ndarray, gaps: np.ndarray, strict: bool) -> float:
    """First x at which `gaps` becomes > 0 (strict) or >= 0, linearly interpolated in log x; nan if never.

    Between the last point before (gap g0 < 0, or <= 0) and the first point at (gap g1) the crossing is
    at fraction t = -g0 / (g1 - g0) of the way in log x: x = exp(log x0 + t (log x1 - log x0)).
    """
    hits = np.flatnonzero(gaps > 0 if strict else gaps >= 0)
    if hits.size == 0:
        return math.nan
    i = int(hits[0])
    if i == 0:
        return float(xs[0])
    g0, g1 = gaps[i - 1], gaps[i]
    t = -g0 / (g1 - g0)
    return float(math.exp(math.log(xs[i - 1]) + t * (math.log(xs[i]) - math.log(xs[i - 1]))))


def crossover(xs: npt.ArrayLike, ys_a: npt.ArrayLike, ys_b: npt.ArrayLike) -> float:
    """First x at which curve b overtakes curve a (b > a), interpolated linearly on a log-x axis.

        gap(x) = b(x) - a(x);  i = first point with gap > 0
        x* = exp(log x_{i-1} + t (log x_i - log x_{i-1})),  t = -gap_{i-1} / (gap_i - gap_{i-1})

    E.g. xs = annotation budgets, a = SFT's gold reward, b = DPO's: the budget at which preference-based
    training overtakes SFT. Points are sorted by x; points where a or b is nan are dropped.

    Returns:
        x*; xs[0] when b is already ahead at the smallest x (it overtook at or before it, the data cannot
        say where); nan when b never gets ahead.
    """
    xs, ys_a, ys_b = _sorted_curve(xs, ys_a, ys_b)
    return _first_x_where(xs, ys_b - ys_a, strict=True)


def budget_to_reach(xs: npt.ArrayLike, ys: npt.ArrayLike, fraction: float, baseline: float = 0.0) -> float:
    """Smallest x at which y reaches `fraction` of its best, interpolated linearly on a log-x axis.

        target = baseline + fraction * (max(y) - baseline);  x* = first crossing of y >= target

    With the default baseline 0 this is `fraction * max(y)`, for sentences such as "DPO reached 90% of
    its best gold reward at 200 units". Gold rewards may be negative, where a fraction of max(y) means
    nothing; pass the base model's gold reward as `baseline` to ask for a fraction of the best *gain*.
    Points are sorted by x; nan points are dropped.

    Args:
        xs: budgets (> 0).
        ys: the curve, e.g. mean gold reward over seeds at each budget.
        fraction: in (0, 1].
        baseline: the level counted as 0 (see above).

    Returns:
        x*; xs[0] when the first point already reaches the target; nan when max(y) <= baseline or the
        curve is empty.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    xs, ys = _sorted_curve(xs, ys)
    if ys.size == 0 or ys.max() <= baseline:
        return math.nan
    target = baseline + fraction * (ys.max() - baseline)
    return _first_x_where(xs, ys - target, strict=False)
