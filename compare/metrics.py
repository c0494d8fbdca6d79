"""Metrics as pure functions: plain lists in, numbers out; each tested against hand-computed values."""

from __future__ import annotations

import functools
import math
import statistics


@functools.lru_cache(maxsize=256)
def t_quantile(df: int, level: float = 0.95) -> float:
    """The two-sided `level` quantile of Student's t with `df` degrees of freedom, t_{(1+level)/2, df}
    (scipy.stats.t; imported on first use, as most commands never compute an interval); nan for df < 1."""
    if df < 1:
        return math.nan
    from scipy.stats import t as student_t

    return float(student_t.ppf((1 + level) / 2, df))


def mean_ci(values: list[float]) -> tuple[float, float, int]:
    """Mean, half-width of its 95% t-interval, and n. One value has an undefined (nan) interval."""
    xs = [v for v in values if v is not None and not math.isnan(v)]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, 0
    mean = statistics.fmean(xs)
    if n == 1:
        return mean, math.nan, 1
    return mean, t_quantile(n - 1) * statistics.stdev(xs) / math.sqrt(n), n


def distinct_n(texts: list[str], n: int = 2) -> float:
    """Distinct n-grams over all n-grams in `texts` (Li et al. 2016); 0 when there are none."""
    grams = [
        tuple(words[i : i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)
    ]
    return len(set(grams)) / len(grams) if grams else 0.0


def sampled_kl(policy_logprobs: list[float], base_logprobs: list[float]) -> float:
    """KL(policy || base) estimated from samples of the policy: mean of log p(y) - log q(y) per sequence."""
    if not policy_logprobs:
        return math.nan
    return statistics.fmean(p - q for p, q in zip(policy_logprobs, base_logprobs, strict=True))


def pairwise_accuracy(
    scores_a: list[float], scores_b: list[float], gold_a: list[float], gold_b: list[float]
) -> float:
    """How often the scorer orders a pair as the gold reward does; gold ties are skipped."""
    hits = [
        (sa - sb > 0) == (ga - gb > 0)
        for sa, sb, ga, gb in zip(scores_a, scores_b, gold_a, gold_b)
        if ga != gb
    ]
    return statistics.fmean(hits) if hits else math.nan


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimate of pass@k from n samples of one prompt, c of which pass (Chen et al. 2021,
    eq. 1): 1 − C(n−c, k) / C(n, k), the chance that k of the n drawn without replacement hold a pass.
    Computed as 1 − ∏_{i=n−c+1}^{n} (1 − k/i), which needs no large binomials. Needs 1 ≤ k ≤ n."""
    if not 1 <= k <= n or not 0 <= c <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n and 0 <= c <= n; got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def pass_ks(most: int) -> list[int]:
    """The k of a pass@k curve: 1, 2, 4, ... up to `most`, and `most` itself."""
    ks = [1 << i for i in range(most.bit_length()) if 1 << i <= most]
    return ks if ks[-1] == most else [*ks, most]
