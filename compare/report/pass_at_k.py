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
from compare.report.series import per_seed, summary
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
    return [claim(results, rl, start, ks[0], ks[-1]) for rl, start in pairs]


def claim(results: pd.DataFrame, rl: str, start: str, low: int, high: int) -> Claim:
    """Decided on ID prompts by two seed-paired differences RL − start, each by the one rule (`decide`):
    at the smallest k it must be above its start, at the largest below it. Supported when both hold (the
    p-value is the larger of the two: both must pass); contradicted when RL is significantly above its
    start at the largest k (it reaches answers its start does not); otherwise inconclusive."""
    key = f"{KEY}[{rl}]"
    d_low = paired_difference(
        per_seed(results, rl, f"pass_at_{low}"), per_seed(results, start, f"pass_at_{low}")
    )
    d_high = paired_difference(
        per_seed(results, rl, f"pass_at_{high}"), per_seed(results, start, f"pass_at_{high}")
    )
    raises = decide(d_low)  # supported: RL above its start at the smallest k
    squeezes = decide(d_high, positive_supports=False)  # supported: below it at the largest k
    if raises.verdict == SUPPORTED and squeezes.verdict == SUPPORTED:
        verdict, p = SUPPORTED, max(raises.p_value, squeezes.p_value)
    elif squeezes.verdict == CONTRADICTED:
        verdict, p = CONTRADICTED, squeezes.p_value
    else:
        verdict, p = INCONCLUSIVE, max(raises.p_value, squeezes.p_value)
    evidence = (
        diff_text(d_low, rl, start, f"pass@{low}")
        + "; "
        + diff_text(d_high, rl, start, f"pass@{high}")
        + f"; pass@{high} {rl} {summary(per_seed(results, rl, f'pass_at_{high}'))}, "
        f"{start} {summary(per_seed(results, start, f'pass_at_{high}'))}"
    )
    read = (
        reading(d_low, f"At k = {low}, {rl}", "above", "below", start).rstrip(".")
        + "; "
        + reading(d_high, f"at k = {high}, {rl}", "above", "below", start)
    )
    compared = f"RL, here: {rl}; its start, here: {start}"
    return Claim(key, TEXT, verdict, evidence, reading=read, compared=compared, p_value=p, effect=d_low)


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

    from compare.report.figures import _save, panels

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
        ax.set_xlabel("k (samples per prompt, log scale)")
        ax.set_ylim(-0.02, 1.02)
    axes[0].set_ylabel("pass@k")
    axes[-1].legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.suptitle("pass@k against k: does a method expand what is solved, or sharpen it?", fontsize="medium")
    return _save(fig, path)
