"""pass@k in the report: the curve of pass@k against k per arm, and the claim "RL squeezes".

The evaluation writes `pass_at_<k>` per run and split when the suite sets `eval.pass_at_k`
(`compare/stages/evaluate.py`: the unbiased estimator of Chen et al. 2021 over the task's pass rule). RL
that only sharpens what its start can already do raises pass@1 and leaves pass@k at large k where it was,
or lowers it (Yue et al. 2025, "Does reinforcement learning really incentivize reasoning capacity beyond
the base model?"; "RL squeezes, SFT expands", ICLR 2026). Each RL arm is compared with the arm it starts
from (its recipe up to the RL stage, reward models left out): the base model for RM → PPO or GRPO, SFT for
SFT → RM → PPO.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from compare.metrics import mean_ci
from compare.report.roles import Roles
from compare.report.series import per_seed
from compare.report.stats import paired_difference
from compare.report.verdicts import (
    CONTRADICTED,
    INCONCLUSIVE,
    SUPPORTED,
    Claim,
    decide,
    diff_text,
    missing,
    reading,
)
from compare.stages import RECIPE_STAGES, Role

COLUMN = re.compile(r"pass_at_(\d+)$")
KEY = "pass_at_k"
TEXT = (
    "RL raises pass@1 but not pass@k at large k: it sharpens what its start can already do (at the largest "
    "k, its start solves more)."
)


def pass_ks(results: pd.DataFrame) -> list[int]:
    """The k with a `pass_at_<k>` column that holds a number, ascending."""
    found = [int(m[1]) for c in results.columns if (m := COLUMN.match(c)) and results[c].notna().any()]
    return sorted(found)


def rl_starts(roles: Roles, present: set[str]) -> list[tuple[str, str]]:
    """(RL arm, the arm it starts from): every arm whose last stage is online RL (not an oracle), with the
    arm whose recipe is its recipe up to that stage without reward models, when the suite has one."""
    by_recipe = {roles.arms[a].recipe: a for a in reversed(roles.names)}  # the first of equal recipes
    pairs = []
    for arm in roles.policies:
        kind = roles.arms[arm]
        if kind.last is not Role.ONLINE_RL or kind.oracle:
            continue
        start = tuple(k for k in kind.recipe[:-1] if RECIPE_STAGES[k].role is not Role.REWARD_MODEL)
        if start in by_recipe and by_recipe[start] in present and arm in present:
            pairs.append((arm, by_recipe[start]))
    return pairs


def claims(results: pd.DataFrame, roles: Roles) -> list[Claim]:
    """One claim per RL arm (`pass_at_k[<arm>]`), or one row that says what it needs."""
    ks = pass_ks(results)
    if len(ks) < 2:
        return [missing(KEY, TEXT, "needs pass@k at two k or more (eval.pass_at_k)")]
    pairs = rl_starts(roles, set(results["arm"]))
    if not pairs:
        return [
            missing(KEY, TEXT, "needs an online-RL arm and the arm it starts from (the base model, or SFT)")
        ]
    splits = [x for x in roles.split_order(results["split"]) if x == "id" or x in roles.shifts]
    return [claim(results, roles, rl, start, ks[0], ks[-1], splits) for rl, start in pairs]


def on_split(results: pd.DataFrame, rl: str, start: str, low: int, high: int, split: str):
    """(verdict, p-value, the two differences) on one split, from two seed-paired differences RL − start,
    each by the one rule (`decide`): above its start at the smallest k and below it at the largest is
    supported (p: the larger of the two, both must hold); above it at the largest k is contradicted (it
    reaches answers its start does not); anything else inconclusive."""
    d_low, d_high = (
        paired_difference(
            per_seed(results, rl, f"pass_at_{k}", split), per_seed(results, start, f"pass_at_{k}", split)
        )
        for k in (low, high)
    )
    raises, squeezes = decide(d_low), decide(d_high, positive_supports=False)
    if raises.verdict == SUPPORTED and squeezes.verdict == SUPPORTED:
        return SUPPORTED, max(raises.p_value, squeezes.p_value), d_low, d_high
    if squeezes.verdict == CONTRADICTED:
        return CONTRADICTED, squeezes.p_value, d_low, d_high
    return INCONCLUSIVE, max(raises.p_value, squeezes.p_value), d_low, d_high


def claim(
    results: pd.DataFrame, roles: Roles, rl: str, start: str, low: int, high: int, splits: list[str]
) -> Claim:
    """Decided on ID prompts and on each named shift (`on_split`), combined as `decide_any` combines tests:
    supported when some split supports it and none contradicts it, contradicted the other way round, the
    p-value the deciding split's times the number of splits (Bonferroni). A split where both reach pass@k
    = 1 at the largest k (an easy ID) cannot decide; a harder shift can."""
    key = f"{KEY}[{rl}]"
    found = {split: on_split(results, rl, start, low, high, split) for split in splits}
    sides = {v for v, *_ in found.values()} & {SUPPORTED, CONTRADICTED}
    ps = [p for _, p, *_ in found.values() if not math.isnan(p)]
    if len(sides) == 1:
        verdict = sides.pop()
        p = min(1.0, min(p for v, p, *_ in found.values() if v == verdict) * len(found))
    else:
        verdict, p = INCONCLUSIVE, min(1.0, min(ps) * len(found)) if ps else math.nan
    parts, reads = [], []
    for split, (_, _, d_low, d_high) in found.items():
        label = roles.split_label(split)
        parts.append(
            f"{label}: "
            + diff_text(d_low, rl, start, f"pass@{low}")
            + "; "
            + diff_text(d_high, rl, start, f"pass@{high}")
        )
        reads.append(
            f"{label}: " + reading(d_low, f"at k = {low}, {rl}", "above", "below", start).rstrip(".") + "; "
            + reading(d_high, f"at k = {high},", "above", "below", "it").rstrip(".")
        )  # fmt: skip
    deciding = next((d for v, _, d, _ in found.values() if v == verdict), found[splits[0]][2])
    compared = f"RL, here: {rl}; its start, here: {start}"
    return Claim(key, TEXT, verdict, " | ".join(parts), reading=". ".join(reads) + f" ({len(found)} splits "
                 f"tested; the p-value is Bonferroni-multiplied by {len(found)}).", compared=compared,
                 p_value=p, effect=deciding)  # fmt: skip


def statements(results: pd.DataFrame, roles: Roles, rule: str) -> list[str]:
    """What the pass@k section says: the rule, and each arm's pass@k at the smallest and largest k."""
    ks = pass_ks(results)
    if not ks:
        return []
    lines = [
        "pass@k: the chance that at least one of k samples of a prompt passes, by the unbiased estimator of "
        f"Chen et al. (2021) over {ks[-1]} or more samples per prompt; mean ± 95% interval over seeds, ID "
        f"prompts. A pass: {rule}. RL that only sharpens what its start can do raises pass@1 and not "
        "pass@k at large k (Yue et al. 2025).",
        "",
    ]
    for arm in roles.policies:
        lo, hi = (mean_ci(list(per_seed(results, arm, f"pass_at_{k}").values())) for k in (ks[0], ks[-1]))
        if lo[2]:
            lines.append(f"- **{roles.label(arm)}**: pass@{ks[0]} {_ci(lo)}, pass@{ks[-1]} {_ci(hi)}.")
    return lines


def _ci(m: tuple[float, float, int]) -> str:
    return f"{m[0]:.3f}" if math.isnan(m[1]) else f"{m[0]:.3f} ± {m[1]:.3f}"


def figure(results: pd.DataFrame, roles: Roles, path: Path) -> Path | None:
    """pass@k against k (log2 axis) per arm, one panel per split: mean ± 95% interval over seeds."""
    import matplotlib.ticker

    from compare.report.canvas import panels, save

    ks = pass_ks(results)
    if len(ks) < 2:
        return None
    splits = roles.split_order(results["split"])
    fig, axes = panels(len(splits), 3.6, 3.0, sharey=True)
    for ax, split in zip(axes, splits):
        for arm in roles.policies:
            stats = [mean_ci(list(per_seed(results, arm, f"pass_at_{k}", split).values())) for k in ks]
            if not any(n for _, _, n in stats):
                continue
            means = [m for m, _, _ in stats]
            halves = [0.0 if math.isnan(h) else h for _, h, _ in stats]
            style = "--" if roles.is_oracle(arm) else "-"
            ax.errorbar(ks, means, yerr=halves, fmt=f"o{style}", ms=3, capsize=2, label=roles.label(arm))
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_title(roles.split_label(split), fontsize="medium")
        ax.set_xlabel("k (log scale)")
        ax.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("pass@k")
    axes[-1].legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle("pass@k against k: does a method expand what is solved, or sharpen it?", fontsize="medium")
    return save(fig, path)
