"""The base-size ladder (experiments/scale.yaml, docs/scale.md): when a suite's grid sweeps the size of the
built-in base model, every claim is decided again at each size on that size's runs alone, and the
policies' rankings by ID and OOD gold are compared between sizes with Kendall's tau.

Arms at different sizes are never compared with each other: each size is its own comparison, with its own
base model, and a verdict "holds" only when every size decides it the same way. A pair of policies is an
*inversion* when one size orders it one way and another size decides it (a seed-paired 95% interval that
excludes zero) the other way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

import pandas as pd

from compare.report.claims import check_claims
from compare.report.roles import Column, Roles
from compare.report.series import fmt, policy_groups
from compare.report.stats import Difference, paired_difference
from compare.report.tables import table_cell
from compare.report.verdicts import CONTRADICTED, LEVEL, MARKERS, NOT_MEASURED, SUPPORTED

HELD, FLIPPED, SOME, UNDECIDED = (
    "held at every size",
    "flipped",
    "decided at some sizes",
    "decided at no size",
)


# -- pure functions ---------------------------------------------------------------------------------------
def size_columns(results: pd.DataFrame) -> list[str]:
    """The grid columns of the base model's size (`Column.BASE_SIZE`) that this suite sweeps."""
    return [c for c in Column.BASE_SIZE if c in results and results[c].nunique() > 1]


def size_label(columns: Sequence[str], values: Sequence[float]) -> str:
    """`n_embd=64`, or `n_layer=2, n_embd=64` when both are swept."""
    return ", ".join(f"{c.rsplit('.', 1)[-1]}={v:g}" for c, v in zip(columns, values))


def ranking(means: Mapping[str, float]) -> list[str]:
    """The names ordered best first (highest mean); nan last; ties in the given order."""
    order = list(means)
    return sorted(order, key=lambda k: (math.isnan(means[k]), -means[k] if not math.isnan(means[k]) else 0))


def kendall_tau(first: Mapping[str, float], second: Mapping[str, float]) -> tuple[float, float, int]:
    """(tau, two-sided p, n) of Kendall's tau-b (scipy.stats.kendalltau) between two scorings of the names
    both have (nan values left out): 1 when they order every pair the same, -1 when every pair reversed,

        tau_b = (C - D) / sqrt((C + D + T_1) (C + D + T_2))

    for C concordant and D discordant pairs, T_1, T_2 pairs tied in only one scoring; nan with fewer than
    two names or when a scoring is constant."""
    from scipy.stats import kendalltau

    names = [k for k in first if k in second and not (math.isnan(first[k]) or math.isnan(second[k]))]
    if len(names) < 2:
        return math.nan, math.nan, len(names)
    result = kendalltau([first[k] for k in names], [second[k] for k in names])
    return float(result.statistic), float(result.pvalue), len(names)


def pair_differences(scores: Mapping[str, Mapping[int, float]]) -> dict[tuple[str, str], Difference]:
    """Every pair (a, b), a before b in `scores`' order, with the seed-paired difference a − b of their
    per-seed scores ({name: {seed: value}})."""
    return {(a, b): paired_difference(scores[a], scores[b]) for a, b in combinations(scores, 2)}


@dataclass(frozen=True)
class Inversion:
    """Policies `ahead` and `behind` as ordered at size `ordered_at` (mean difference > 0 there), decided the
    other way at `decided_at` (its interval excludes zero there); `both_decided`: the order at
    `ordered_at` is significant too."""

    ahead: str
    behind: str
    ordered_at: str
    decided_at: str
    at_ordered: Difference
    at_decided: Difference  # ahead − behind at decided_at: significantly negative

    @property
    def both_decided(self) -> bool:
        return self.at_ordered.significant


def find_inversions(by_size: Mapping[str, Mapping[tuple[str, str], Difference]]) -> list[Inversion]:
    """The pairs one size orders one way and another decides the other way, from each size's
    `pair_differences`. A pair decided both ways is listed once (at the first size in `by_size`'s order);
    a pair only ordered at one size (mean ≠ 0, not significant) and decided the other way at another is
    listed from the ordering size."""
    sizes = list(by_size)
    found = []
    for pair in dict.fromkeys(p for diffs in by_size.values() for p in diffs):
        for here, there in ((s, t) for s in sizes for t in sizes if s != t):
            d_here, d_there = by_size[here].get(pair), by_size[there].get(pair)
            if d_here is None or d_there is None or d_here.n == 0 or d_here.mean == 0:
                continue
            if not d_there.significant or (d_there.mean > 0) == (d_here.mean > 0):
                continue
            if d_here.significant and sizes.index(here) > sizes.index(there):
                continue  # decided both ways: once
            a, b = pair if d_here.mean > 0 else pair[::-1]
            sign = 1 if d_here.mean > 0 else -1
            found.append(Inversion(a, b, here, there, _signed(d_here, sign), _signed(d_there, sign)))
    return found


def _signed(d: Difference, sign: int) -> Difference:
    return Difference(sign * d.mean, d.half_width, d.n, d.p_value, d.sd, d.seeds)


def across_sizes(verdicts: Sequence[str]) -> str:
    """What one claim's verdicts at every size say together: held (the same decided verdict at every size),
    flipped (supported at one size, contradicted at another), decided at some sizes only, or at none."""
    decided = {v for v in verdicts if v in (SUPPORTED, CONTRADICTED)}
    if len(decided) == 2:
        return FLIPPED
    if decided and all(v in decided for v in verdicts):
        return HELD
    return SOME if decided else UNDECIDED


# -- reading the results ----------------------------------------------------------------------------------
def sizes(results: pd.DataFrame) -> list[tuple[str, tuple[float, ...]]]:
    """(label, values) of every size in the results, smallest first."""
    cols = size_columns(results)
    if not cols:
        return []
    values = sorted(set(results[cols].dropna().itertuples(index=False, name=None)))
    return [(size_label(cols, v), tuple(float(x) for x in v)) for v in values]


def at_size(frame: pd.DataFrame, columns: Sequence[str], values: Sequence[float]) -> pd.DataFrame:
    """The rows of one size (a frame without the columns, e.g. empty training logs, as it is)."""
    if frame.empty or not all(c in frame for c in columns):
        return frame
    keep = pd.Series(True, index=frame.index)
    for c, v in zip(columns, values):
        keep &= frame[c].astype(float) == v
    return frame[keep]


def policy_scores(results: pd.DataFrame, roles: Roles, split: str) -> dict[str, dict[int, float]]:
    """{policy label: {seed: gold}} on one split, one entry per policy the tables show (an arm, or an arm
    at each of its strength settings), each seed's value its mean over the other grid values."""
    scores = {}
    for label, _, rows in policy_groups(results, roles):
        on = rows[(rows["split"] == split)].dropna(subset=["gold_reward"])
        if not on.empty:
            scores[label] = on.groupby("seed")["gold_reward"].mean().to_dict()
    return scores


def _mean(by_seed: Mapping[int, float]) -> float:
    return sum(by_seed.values()) / len(by_seed) if by_seed else math.nan


# -- the section ------------------------------------------------------------------------------------------
def ladder_section(results: pd.DataFrame, logs: pd.DataFrame | None, roles: Roles) -> list[str]:
    """report.md's "Base-size ladder" section; empty unless the grid sweeps the base model's size."""
    ladder = sizes(results)
    if len(ladder) < 2:
        return []
    cols = size_columns(results)
    logs = logs if logs is not None else pd.DataFrame()
    labels = [label for label, _ in ladder]
    per_size = {
        label: check_claims(at_size(results, cols, v), at_size(logs, cols, v), roles) for label, v in ladder
    }
    lines = [
        "## Base-size ladder: do the verdicts hold at every size?",
        "",
        f"This suite sweeps the base model's size ({', '.join(labels)}). Each size is its own comparison: "
        "every claim is decided again on that size's runs alone (Holm's correction over that size's "
        "claims), and arms are never compared across sizes. The claims table above pools the sizes (each "
        "seed's arms compared at the same size, then averaged over sizes), and so do the tables and "
        "figures above. A verdict **held** when every size decides it the same way (after correction), "
        "**flipped** when one size supports it and another contradicts it.",
        "",
        "### Verdicts per size",
        "",
        "| claim | compared | " + " | ".join(labels) + " | across sizes |",
        "|---|---|" + "---|" * len(labels) + "---|",
    ]
    keys = list(dict.fromkeys(c.key for claims in per_size.values() for c in claims))
    outcomes: dict[str, list[str]] = {}
    for key in keys:
        found = {label: next((c for c in per_size[label] if c.key == key), None) for label in labels}
        verdicts = [(c.corrected or c.verdict) if c else NOT_MEASURED for c in found.values()]
        if all(v == NOT_MEASURED for v in verdicts):
            continue
        first = next(c for c in found.values() if c)
        cells = [_verdict_cell(c) for c in found.values()]
        outcome = across_sizes(verdicts)
        outcomes.setdefault(outcome, []).append(f"`{key}`")
        lines.append(
            f"| {table_cell(first.claim)} | {table_cell(first.compared or '–')} | "
            + " | ".join(cells)
            + f" | **{outcome}** |"
        )
    lines += ["", _outcome_line(outcomes), ""]
    lines += _ranking_lines(results, roles, cols, ladder)
    return lines


def _outcome_line(outcomes: dict[str, list[str]]) -> str:
    parts = [
        f"{outcome}: {', '.join(outcomes[outcome])}"
        for outcome in (HELD, FLIPPED, SOME)
        if outcome in outcomes
    ]
    undecided = len(outcomes.get(UNDECIDED, []))
    if undecided:
        parts.append(f"{undecided} claim(s) decided at no size")
    return "In short: " + "; ".join(parts) + "."


def _verdict_cell(claim) -> str:
    if claim is None:
        return MARKERS[NOT_MEASURED]
    verdict = claim.corrected or claim.verdict
    raw = "" if verdict == claim.verdict else f" (before correction: {claim.verdict})"
    # the p-value of an undecided claim only when it is a test that fell short: a claim of two tests left
    # undecided by the other one (e.g. both arms below the demonstrator) has a small p that decides nothing
    shown = claim.p_value == claim.p_value and verdict != NOT_MEASURED
    shown = shown and (claim.decided or claim.p_value >= LEVEL)
    p = f", p = {claim.p_value:.2g}" if shown else ""
    return f"{MARKERS[verdict]}{p}{raw}"


def _ranking_lines(results, roles: Roles, cols, ladder) -> list[str]:
    splits = [s for s in ("id", "ood") if s in set(results["split"])]
    lines = [
        "### Rankings per size",
        "",
        "Each policy's gold reward at each size (mean over seeds, and over the grid values other than its "
        "strength setting), with its rank at that size (1 = best). Kendall's τ below compares the rankings "
        "of two sizes over the policies both have: 1 = the same order, −1 = reversed.",
        "",
    ]
    inversions, taus = [], []
    for split in splits:
        scores = {label: policy_scores(at_size(results, cols, v), roles, split) for label, v in ladder}
        means = {label: {p: _mean(s) for p, s in by.items()} for label, by in scores.items()}
        ranks = {label: {p: i + 1 for i, p in enumerate(ranking(m))} for label, m in means.items()}
        policies = list(dict.fromkeys(p for by in scores.values() for p in by))
        name = roles.split_label(split)
        lines += [
            f"**{name} gold** (rank at each size):",
            "",
            "| policy | " + " | ".join(scores) + " |",
            "|---|" + "---|" * len(scores) + "",
        ]
        for p in policies:
            cells = [
                f"{fmt(means[label][p], math.nan)} ({ranks[label][p]})" if p in means[label] else "–"
                for label in scores
            ]
            lines.append(f"| {table_cell(p)} | " + " | ".join(cells) + " |")
        lines += [""]
        for first, second in combinations(scores, 2):
            tau, p_value, n = kendall_tau(means[first], means[second])
            taus.append((name, first, second, tau, p_value, n))
        diffs = {label: pair_differences(by) for label, by in scores.items()}
        inversions += [(name, inv) for inv in find_inversions(diffs)]
    inversions.sort(key=lambda item: not item[1].both_decided)  # the strongest first, else as found
    lines += [
        "### Rank agreement between sizes",
        "",
        "| split | sizes | Kendall's τ | p | policies |",
        "|---|---|---|---|---|",
    ]
    for name, first, second, tau, p_value, n in taus:
        t = f"{tau:.2f}" if tau == tau else "–"
        p = f"{p_value:.2g}" if p_value == p_value else "–"
        lines.append(f"| {name} | {table_cell(first)} vs {table_cell(second)} | {t} | {p} | {n} |")
    lines += ["", "### Inversions", ""]
    if not inversions:
        lines += [
            "No pair of policies is ordered one way at one size and decided the other way (seed-paired "
            "95% interval) at another.",
            "",
        ]
        return lines
    both = sum(inv.both_decided for _, inv in inversions)
    lines += [
        f"{len(inversions)} pair(s) of policies ordered one way at one size and decided the other way "
        f"(seed-paired 95% interval excluding zero) at another, {both} of them **decided both ways** (the "
        "first order significant too)"
        + (
            "; the others are ordered at the first size by a difference its seeds do not decide."
            if both < len(inversions)
            else "."
        ),
        "",
    ]
    for name, inv in inversions:
        strength = "**decided both ways**" if inv.both_decided else "not decided there"
        lines.append(
            f"- {name} gold: {inv.ahead} ahead of {inv.behind} at {inv.ordered_at} "
            f"({fmt(inv.at_ordered.mean, inv.at_ordered.half_width)}, {strength}), behind at "
            f"{inv.decided_at} ({fmt(inv.at_decided.mean, inv.at_decided.half_width)})."
        )
    return lines + [""]
