"""Statistics for the report as pure functions: plain lists / numpy arrays in, numbers out.

- `paired_difference`: arm A minus arm B, paired by seed, with its 95% t-interval (fairness rule 4);
- `fit_bon`, `fit_rl`: Gao et al. 2022 over-optimisation curves, gold reward against d = sqrt(KL);
- `crossover`, `budget_to_reach`: single numbers read off learning curves over the annotation budget.

- `holm`: adjusted p-values when the report decides many claims at once;
- `seeds_to_decide`: how many seeds an effect of the observed size and spread would need.

Every interval and p-value uses Student's t from scipy (`compare.metrics.t_quantile`), so "the 95%
interval excludes 0" and "p < 0.05" are the same statement.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from compare.metrics import mean_ci, t_quantile


@dataclass(frozen=True)
class Difference:
    """A seed-paired mean difference with its 95% t-interval and two-sided paired t-test.

    `significant`: the interval excludes 0 (n >= 2), which with scipy's t is the same as p < 0.05.
    half_width and p_value are nan for n < 2; with zero spread the interval has width 0 and p is 0 if
    the mean is not 0, else 1.
    """

    mean: float
    half_width: float
    n: int
    p_value: float
    sd: float
    seeds: tuple[int, ...] = ()

    @property
    def significant(self) -> bool:
        return self.n >= 2 and abs(self.mean) > self.half_width

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def paired_difference(a_by_seed: Mapping[int, float], b_by_seed: Mapping[int, float]) -> Difference:
    """Mean difference a - b over seeds run by both arms, with its 95% t-interval and a paired t-test.

        delta_s = a_s - b_s for s in seeds(a) & seeds(b)
        mean = 1/n sum_s delta_s,   half_width = t_{0.975, n-1} * sd(delta) / sqrt(n)
        t = mean / (sd(delta) / sqrt(n)),   p = 2 * P(T_{n-1} > |t|)   (two-sided paired t-test)

    Pairing by seed removes what the arms share under one seed (same data draw, same eval prompts),
    so the interval is usually much narrower than the difference of two unpaired intervals.
    Seeds present in only one arm are left out; a nan difference is left out as `mean_ci` does.
    """
    seeds = sorted(set(a_by_seed) & set(b_by_seed))
    pairs = [(s, float(a_by_seed[s]) - float(b_by_seed[s])) for s in seeds]
    pairs = [(s, d) for s, d in pairs if not math.isnan(d)]
    diffs = [d for _, d in pairs]
    mean, half_width, n = mean_ci(diffs)
    sd = float(np.std(diffs, ddof=1)) if n >= 2 else math.nan
    return Difference(mean, half_width, n, _paired_t_p_value(diffs), sd, tuple(s for s, _ in pairs))


def against_zero(by_seed: Mapping[int, float]) -> Difference:
    """The one-sample version: the mean of per-seed values against 0 (e.g. a per-seed drop)."""
    return paired_difference(by_seed, dict.fromkeys(by_seed, 0.0))


def _paired_t_p_value(diffs: Sequence[float]) -> float:
    """Two-sided p-value of the one-sample t-test of mean(diffs) = 0; nan for n < 2."""
    n = len(diffs)
    if n < 2:
        return math.nan
    from scipy.stats import t as student_t

    mean = float(np.mean(diffs))
    sd = float(np.std(diffs, ddof=1))
    if sd == 0.0:  # t = +-inf or 0/0; scipy would warn and answer nan
        return 0.0 if mean != 0.0 else 1.0
    t_stat = mean / (sd / math.sqrt(n))
    return float(2.0 * student_t.sf(abs(t_stat), df=n - 1))


# --- Gao et al. 2022, "Scaling Laws for Reward Model Overoptimization", eq. (1) and (2) -------------
#
# With d = sqrt(KL(policy || start)) and R the gold reward gained over the policy the method started from:
#   best-of-n:  R_bon(d) = d (alpha - beta d)        dR/dd = alpha - 2 beta d = 0  ->  d* = alpha / (2 beta)
#                                                    R* = alpha^2 / (4 beta)
#   RL:         R_RL(d)  = d (alpha - beta log d)    dR/dd = alpha - beta log d - beta = 0
#                                                    ->  d* = exp(alpha / beta - 1),  R* = beta d*
# Both are maxima only when beta > 0 (d2R/dd2 = -2 beta and -beta / d). Both are linear in
# (alpha, beta), so ordinary least squares on the features (d, -d^2) or (d, -d log d) fits them.
# Both predict a gain of exactly 0 at d = 0, so the curve passes through the start policy's gold r0,
# which the caller passes in, measured on the same prompts: a curve forced through 0 instead draws
# peaks that are not in the data.


@dataclass(frozen=True)
class GaoFit:
    """A fitted Gao et al. curve: gold(d) = r0 + d (alpha - beta f(d)), d = sqrt(KL), and its peak.

    `d_peak` is where the fitted curve turns down (nan when it never does); `peak_inside` says whether
    that lies inside the measured range of d (between the smallest and the largest d > 0 measured), the
    only case in which a report may show a peak. A peak beyond the largest d measured is an
    extrapolation, and one between the start and the first point measured is not in the data either:
    the report says "still rising at the largest KL reached" instead. `concave`: beta > 0, the only case
    in which the form has the shape Gao et al. fit (it rises, then may turn down); with beta <= 0 it is
    convex and has a minimum that no data need show, so the report draws no curve.
    """

    form: str  # "rl" or "bon"
    alpha: float
    beta: float
    r0: float
    d_peak: float
    r_peak: float
    d_max: float  # the largest d measured
    d_min: float = math.nan  # the smallest d > 0 measured

    @property
    def kl_peak(self) -> float:
        return self.d_peak**2

    @property
    def fitted(self) -> bool:
        return not (math.isnan(self.alpha) or math.isnan(self.beta))

    @property
    def concave(self) -> bool:
        return self.fitted and self.beta > 0

    @property
    def peak_inside(self) -> bool:
        low = 0.0 if math.isnan(self.d_min) else self.d_min
        return not math.isnan(self.d_peak) and low <= self.d_peak <= self.d_max

    @property
    def drawable(self) -> bool:
        """Whether the curve from the start (d = 0) to the largest d measured turns only where the data
        do: it rises or falls throughout, or turns down at a peak inside the measured range. A minimum
        anywhere, or a peak between the start and the first point, is a feature no data show."""
        if not self.fitted or not self.d_max > 0:
            return False
        steps = np.diff(self.gold(np.linspace(0.0, self.d_max, 400)))
        turns = np.flatnonzero(np.diff(np.sign(steps[np.abs(steps) > 1e-12])))
        if turns.size == 0:
            return True
        return turns.size == 1 and self.concave and self.peak_inside

    @property
    def shape(self) -> str | None:
        """What the fitted curve does over the measured range, for the report to say: "undrawn" (it would
        turn where nothing was measured), "peak" (a peak inside), "falls" or "rises" at the largest d;
        None when it could not be fitted."""
        if not self.fitted:
            return None
        if not self.drawable:
            return "undrawn"
        if self.peak_inside:
            return "peak"
        end = self.gold(np.array([0.995 * self.d_max, self.d_max]))
        return "falls" if end[1] < end[0] else "rises"

    def gold(self, d: npt.ArrayLike) -> np.ndarray:
        """The fitted gold reward at d (d > 0 for the RL form; 0 gives r0)."""
        d = np.asarray(d, dtype=float)
        f = d**2 if self.form == "bon" else d * np.log(np.where(d > 0, d, 1.0))
        return self.r0 + self.alpha * d - self.beta * f


def _fit_gain_curve(
    d: npt.ArrayLike, r: npt.ArrayLike, r0: float, feature
) -> tuple[float, float, float, float]:
    """Least squares of r - r0 = alpha * d - beta * feature(d) over the points with d > 0; (alpha, beta,
    largest d, smallest d > 0)."""
    d = np.asarray(d, dtype=float)
    r = np.asarray(r, dtype=float)
    if d.shape != r.shape or d.ndim != 1:
        raise ValueError(f"d and r must be 1-D of one length, got shapes {d.shape} and {r.shape}")
    if np.any(d < 0):
        raise ValueError("d = sqrt(KL) must be >= 0")
    if not math.isfinite(r0):
        raise ValueError(f"r0 (the start policy's gold reward) must be a finite number, got {r0}")
    keep = (d > 0) & ~np.isnan(r)  # a point at d = 0 has features (0, 0): it only restates r0
    d_max = float(d.max()) if d.size else math.nan
    d, gain = d[keep], r[keep] - r0
    d_min = float(d.min()) if d.size else math.nan
    design = np.stack([d, -feature(d)], axis=1)
    if len(d) < 2 or np.linalg.matrix_rank(design) < 2:
        return math.nan, math.nan, d_max, d_min
    (alpha, beta), *_ = np.linalg.lstsq(design, gain, rcond=None)
    return float(alpha), float(beta), d_max, d_min


def fit_bon(d: npt.ArrayLike, r: npt.ArrayLike, r0: float) -> GaoFit:
    """Fit best-of-n's gold reward R(d) = r0 + d (alpha - beta d), d = sqrt(KL) (Gao et al. 2022, eq. 1).

    `r0` is the gold reward of the policy best-of-n samples from (best-of-1: the base model, or the SFT
    start), measured on the same prompts; it is passed in, never guessed, since best-of-n's sweep need
    not hold n = 1. Points at d = 0 only restate r0.

    Peak: d* = alpha / (2 beta), R(d*) = r0 + alpha^2 / (4 beta); nan when there is no peak at d > 0
    (beta <= 0: the curve never turns down; alpha <= 0: it only goes down).
    alpha and beta are nan with fewer than two distinct d > 0.
    """
    alpha, beta, d_max, d_min = _fit_gain_curve(d, r, r0, lambda x: x**2)
    if not (beta > 0 and alpha > 0):
        return GaoFit("bon", alpha, beta, r0, math.nan, math.nan, d_max, d_min)
    return GaoFit("bon", alpha, beta, r0, alpha / (2 * beta), r0 + alpha**2 / (4 * beta), d_max, d_min)


def fit_rl(d: npt.ArrayLike, r: npt.ArrayLike, r0: float) -> GaoFit:
    """Fit RL's gold reward R(d) = r0 + d (alpha - beta log d), d = sqrt(KL) (Gao et al. 2022, eq. 2).

    `r0` is the gold reward of the policy RL started from (the base model or an SFT warm start; PPO's
    first held-out check, before any update), measured on the same prompts. Fitted on the points with
    d > 0 (log d is undefined at 0; a check before any update sits at d ~ 0 and only restates r0).

    Peak: d* = exp(alpha / beta - 1), R(d*) = r0 + beta d*; nan when beta <= 0 (no maximum).
    alpha and beta are nan with fewer than two distinct d > 0.
    """
    alpha, beta, d_max, d_min = _fit_gain_curve(d, r, r0, lambda x: x * np.log(x))
    if not beta > 0:
        return GaoFit("rl", alpha, beta, r0, math.nan, math.nan, d_max, d_min)
    d_peak = math.exp(min(alpha / beta - 1, 700.0))  # exp overflows past e^709: no peak in any range
    return GaoFit("rl", alpha, beta, r0, d_peak, r0 + beta * d_peak, d_max, d_min)


# --- many claims in one report --------------------------------------------------------------------------


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979): family-wise error control over m tests.

        sort p ascending: p_(1) <= ... <= p_(m)
        adjusted p_(i) = min(1, max_{j <= i} (m - j + 1) p_(j))

    A test is rejected at level a after the correction when its adjusted p < a. nan p-values (tests
    that could not be run) are left nan and do not count in m.
    """
    indexed = [(p, i) for i, p in enumerate(p_values) if not math.isnan(p)]
    m = len(indexed)
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(indexed)):
        running = max(running, (m - rank) * p)
        adjusted[i] = min(1.0, running)
    return adjusted


def seeds_to_decide(mean: float, sd: float, level: float = 0.95, most: int = 1000) -> int | None:
    """About how many seeds a paired t-interval needs to exclude 0 if the effect and its spread stay as
    observed: the smallest n with t_{(1+level)/2, n-1} * sd / sqrt(n) < |mean|; None beyond `most` or for
    an effect of 0 (nothing to decide)."""
    if not (math.isfinite(mean) and math.isfinite(sd)) or mean == 0:
        return None
    if sd == 0:
        return 2
    for n in range(2, most + 1):
        if t_quantile(n - 1, level) * sd / math.sqrt(n) < abs(mean):
            return n
    return None


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
