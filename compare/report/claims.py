"""The comparison's findings, computed from saved results: per-axis statements and the claims table.

Every sentence here is built from numbers in `results.csv` / `training_logs.csv`; a claim is called
supported or contradicted only when a seed-paired 95% interval excludes zero, otherwise inconclusive,
and "not measured" when the suite has no runs that bear on it. The arms a claim compares are found by
role (`compare/report/roles.py`), never by name.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from compare.metrics import mean_ci
from compare.report.kl_claims import (
    arm_curves,
    at_equal_kl,
    claim_best_of_n_kl,
    claim_bias_needed,
    claim_dpo_overoptimises,
    claim_frontier,
    claim_online_beats_offline,
    claim_overoptimisation,
    common_level,
    values_at,
)
from compare.report.roles import Column, Roles
from compare.report.series import (
    curve,
    fmt,
    per_seed,
    summary,
    sweep_values,
)
from compare.report.stats import budget_to_reach, crossover, paired_difference
from compare.report.tables import SHIFTS, split_name
from compare.report.verdicts import (  # noqa: F401  (the verdicts are part of this module's interface)
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_MEASURED,
    SUPPORTED,
    Claim,
    diff_text,
    missing,
    verdict,
)


# -- per-axis statements ---------------------------------------------------------------------------------
def data_needs_statements(results: pd.DataFrame, roles: Roles) -> list[str]:
    col = Column.BUDGET
    budgets = sweep_values(results, col)
    if len(budgets) < 2:
        return []
    lines = []
    base_arm = roles.base
    base = mean_ci(list(per_seed(results, base_arm, "gold_reward").values()))[0] if base_arm else 0.0
    for arm in roles.names:
        xs, ys, _ = curve(results, arm, col)
        if len(xs) >= 2 and not roles.is_base(arm):
            b90 = budget_to_reach(xs, ys, 0.9, baseline=base)
            best = max(ys)
            reach = f"{b90:.0f} units" if not math.isnan(b90) else "no budget in the sweep"
            lines.append(
                f"**{arm}** reached 90% of its best gain over the base model (best ID gold {best:.3f}) at {reach}."
            )
    sft, pref = roles.imitation, roles.preference
    if sft and pref:
        xs, sft_y, _ = curve(results, sft, col)
        xs2, pref_y, _ = curve(results, pref, col)
        if xs == xs2 and len(xs) >= 2:
            x = crossover(xs, sft_y, pref_y)
            lines.append(
                f"{pref} overtakes SFT at about {x:.0f} units." if not math.isnan(x) else
                f"{pref} does not overtake SFT within the budgets swept ({', '.join(f'{b:g}' for b in xs)})."
            )  # fmt: skip
    return lines


def generalisation_statements(results: pd.DataFrame, roles: Roles) -> list[str]:
    lines = []
    splits = set(results["split"])
    for arm in roles.names:
        ids = per_seed(results, arm, "gold_reward", "id")
        parts = []
        for split in SHIFTS:
            if split not in splits:
                continue
            gap = paired_difference(ids, per_seed(results, arm, "gold_reward", split))
            if gap["n"]:
                parts.append(f"ID − {split_name(split)} gold gap {fmt(gap['mean'], gap['half_width'])}")
        if parts:
            n = paired_difference(ids, per_seed(results, arm, "gold_reward", "ood"))["n"]
            lines.append(f"**{arm}**: " + "; ".join(parts) + f" (n={n}).")
    return lines


def forgetting_statements(results: pd.DataFrame, roles: Roles) -> list[str]:
    """What each arm kept of the base model's prior ability, against its forward KL on training prompts."""
    if "prior" not in set(results["split"]) or roles.base is None:
        return []
    base = per_seed(results, roles.base, "gold_reward", "prior")
    lines = []
    for arm in roles.names:
        if arm == roles.base:
            continue
        d = paired_difference(per_seed(results, arm, "gold_reward", "prior"), base)
        kl = summary(per_seed(results, arm, "forward_kl_train")) if "forward_kl_train" in results else "–"
        if d["n"]:
            lines.append(
                f"**{arm}**: prior ability (counting) {fmt(d['mean'], d['half_width'])} against the base; "
                f"KL(base ‖ π) on training prompts {kl}."
            )
    return lines


# -- claims ----------------------------------------------------------------------------------------------
def check_claims(results: pd.DataFrame, logs: pd.DataFrame, roles: Roles) -> list[Claim]:
    """The claims table; `roles` selects among the arms that have results (`Roles.of(suite, present)`)."""
    pref, sft = roles.preference, roles.imitation
    return [
        _claim_data_needs(results, pref, sft),
        _claim_noise(results, pref, sft),
        _claim_ood(results, pref, sft),
        _claim_diversity(results, pref, sft),
        _claim_beyond_demonstrator(results, pref, sft),
        claim_overoptimisation(logs, roles),
        claim_frontier(results, roles),
        _claim_dpo_vs_preferred(results, roles),
        *(_claim_shift(results, pref, sft, split) for split in shift_claims(results)),
        _claim_forgetting(results, roles),
        claim_best_of_n_kl(results, roles),
        claim_bias_needed(logs, results, roles),
        _claim_curated_demonstrations(results, roles),
        claim_dpo_overoptimises(results, roles),
        claim_online_beats_offline(results, roles),
    ]


def _claim_data_needs(results, pref, sft) -> Claim:
    text = "SFT needs more labelled data than RLHF for the same quality."
    col = Column.BUDGET
    if not (pref and sft) or len(sweep_values(results, col)) < 2:
        return missing(text, "needs SFT and a preference arm over a budget sweep")
    wins, losses, parts = [], [], []
    for b in sweep_values(results, col):
        d = paired_difference(
            per_seed(results, pref, "gold_reward", **{col: b}),
            per_seed(results, sft, "gold_reward", **{col: b}),
        )
        parts.append(f"{b:g}: {fmt(d['mean'], d['half_width'])}")
        if d["n"] >= 2 and d["significant"]:
            (wins if d["mean"] > 0 else losses).append(b)
    v = INCONCLUSIVE
    if wins and not losses:
        v = SUPPORTED
    elif losses and not wins:
        v = CONTRADICTED
    return Claim(text, v, f"ID gold {pref} − {sft} by budget: " + "; ".join(parts))


def _drop(results, arm, col, best_first: bool) -> dict[int, float]:
    values = sweep_values(results[results["arm"] == arm], col)
    if len(values) < 2:
        return {}
    hi, lo = (values[0], values[-1]) if best_first else (values[-1], values[0])
    good, bad = (
        per_seed(results, arm, "gold_reward", **{col: hi}),
        per_seed(results, arm, "gold_reward", **{col: lo}),
    )
    return {s: good[s] - bad[s] for s in good.keys() & bad.keys()}


def _claim_noise(results, pref, sft) -> Claim:
    text = "RLHF tolerates noisy feedback better than SFT tolerates bad demonstrations."
    noise_col, quality_col = Column.LABEL_NOISE, Column.DEMONSTRATOR_QUALITY
    if not (pref and sft) or noise_col not in results or quality_col not in results:
        return missing(text, "needs a flip-rate sweep and a demonstrator-quality sweep")
    pref_drop = _drop(results, pref, noise_col, best_first=True)  # clean labels -> noisiest
    sft_drop = _drop(results, sft, quality_col, best_first=False)  # best demonstrator -> worst
    d = paired_difference(sft_drop, pref_drop)
    evidence = (
        f"gold lost from cleanest to noisiest labels, {pref}: {summary(pref_drop)}; from best to worst "
        f"demonstrator, {sft}: {summary(sft_drop)}; " + diff_text(d, f"{sft} loss", f"{pref} loss", "")
    )
    return Claim(text, verdict(d), evidence)


def _claim_ood(results, pref, sft) -> Claim:
    text = "RLHF generalises better out of distribution than SFT (smaller ID − OOD gap)."
    if not (pref and sft):
        return missing(text, "needs SFT and a preference arm")
    return _gap_claim(text, results, pref, sft, "ood")


def _claim_diversity(results, pref, sft) -> Claim:
    text = "RLHF reduces output diversity compared with SFT (distinct-2 across prompts)."
    if not (pref and sft):
        return missing(text, "needs SFT and a preference arm")
    metric = "distinct_2_across" if "distinct_2_across" in results else "distinct_2"
    d = paired_difference(per_seed(results, sft, metric), per_seed(results, pref, metric))
    return Claim(text, verdict(d), diff_text(d, sft, pref, metric))


def _claim_beyond_demonstrator(results, pref, sft) -> Claim:
    text = "Preference learning can exceed the demonstrator's quality while SFT is capped by it."
    if not (pref and sft) or "demonstrator_gold" not in results:
        return missing(text, "needs SFT, a preference arm and the demonstrator's gold reward")
    demo = per_seed(results, sft, "demonstrator_gold")
    d_pref = paired_difference(per_seed(results, pref, "gold_reward"), demo)
    d_sft = paired_difference(per_seed(results, sft, "gold_reward"), demo)
    pref_above = d_pref["significant"] and d_pref["mean"] > 0
    sft_above = d_sft["significant"] and d_sft["mean"] > 0
    v = (
        SUPPORTED
        if pref_above and not sft_above
        else (CONTRADICTED if sft_above and not pref_above else INCONCLUSIVE)
    )
    evidence = (
        f"demonstrator ID gold {summary(demo)}; "
        + diff_text(d_pref, pref, "demonstrator", "")
        + "; "
        + diff_text(d_sft, sft, "demonstrator", "")
    )
    return Claim(text, v, evidence)


def _claim_dpo_vs_preferred(results, roles: Roles) -> Claim:
    text = "DPO beats SFT on the chosen responses of the same comparisons (preferred-FT)."
    dpo, control = roles.dpo, roles.imitation_control
    if not (dpo and control):
        return missing(text, "needs dpo and preferred_ft arms")
    d = paired_difference(per_seed(results, dpo, "gold_reward"), per_seed(results, control, "gold_reward"))
    return Claim(text, verdict(d), diff_text(d, dpo, control, "ID gold"))


# the shifts of `reviews` are always in the table (not measured elsewhere); a task's other named shifts
# (arithmetic's rule variant and held-out template) join it when its results have them
ALWAYS_CLAIMED_SHIFTS = ("ood_opener", "ood_format")


def shift_claims(results: pd.DataFrame) -> list[str]:
    """The named shifts with a claim of their own: `ood` has the main OOD claim."""
    present = set(results["split"])
    extra = [s for s in SHIFTS if s not in ("ood", *ALWAYS_CLAIMED_SHIFTS) and s in present]
    return [*ALWAYS_CLAIMED_SHIFTS, *extra]


def _claim_shift(results, pref, sft, split: str) -> Claim:
    """The OOD claim on another named shift: a smaller ID − shift gap for the preference arm than for SFT."""
    text = f"RLHF holds up better than SFT under {SHIFTS[split]} (smaller ID − {split_name(split)} gap)."
    if not (pref and sft) or split not in set(results["split"]):
        return missing(text, f"needs SFT, a preference arm and the {split} split")
    return _gap_claim(text, results, pref, sft, split)


def _gap_claim(text: str, results, pref: str, sft: str, split: str) -> Claim:
    """Decided on each seed's ID − `split` gold gap, SFT's minus the preference arm's (positive: RLHF
    holds up better)."""
    gap = {
        arm: {
            s: v - per_seed(results, arm, "gold_reward", split).get(s, math.nan)
            for s, v in per_seed(results, arm, "gold_reward", "id").items()
        }
        for arm in (sft, pref)
    }
    d = paired_difference(gap[sft], gap[pref])
    evidence = f"gap {sft} {summary(gap[sft])}, {pref} {summary(gap[pref])}; " + diff_text(
        d, sft, pref, "gap"
    )
    return Claim(text, verdict(d), evidence)


def _claim_forgetting(results, roles: Roles) -> Claim:
    """RL's Razor (Shenfeld et al. 2025): at equal gain on the new task, RL forgets less of a prior ability
    than SFT. Decided at one ID gold that both arms reach across their strength sweeps (SFT's epochs, the
    RL arm's KL coefficient; `kl_claims.at_equal_kl` with ID gold as the x); arms that end at different
    gains are compared where they ended, shown but not deciding: more gain usually costs more of the rest.
    """
    text = (
        "RL forgets less than SFT at equal gain: the base model's prior ability is better kept (RL's Razor)."
    )
    rl, sft = roles.online_rl, roles.imitation
    if not (rl and sft) or "prior" not in set(results["split"]):
        return missing(text, "needs SFT, an online-RL arm and a prior-ability split")
    d, what, decisive = at_equal_kl(results, roles, rl, sft, x="gold_reward", split="prior")
    if d is None:
        return missing(text, what)
    evidence = diff_text(d, rl, sft, what)
    if not decisive:  # why it does not decide: the gains
        evidence += "; ID gold " + ", ".join(
            f"{a} {summary(per_seed(results, a, 'gold_reward'))}" for a in (rl, sft)
        )
    if "forward_kl_train" in results:  # RL's Razor: the forward KL predicts forgetting
        kl = {a: arm_curves(results, roles, a, "gold_reward", "id", "forward_kl_train") for a in (rl, sft)}
        level = (
            common_level(pd.concat(c.values(), axis=1).mean(axis=1) for c in kl.values())
            if decisive
            else None
        )
        kls = ", ".join(
            f"{a} {summary(values_at(kl[a], level) if level is not None else per_seed(results, a, 'forward_kl_train'))}"
            for a in (rl, sft)
        )
        evidence += f"; KL(base ‖ π) on training prompts{' there' if level is not None else ''} {kls}"
    return Claim(text, verdict(d) if decisive else INCONCLUSIVE, evidence)


def _claim_curated_demonstrations(results, roles: Roles) -> Claim:
    """LIMA (Zhou et al. 2023): few good demonstrations beat many mediocre ones bought with the same units."""
    text = (
        "A few curated demonstrations beat many mediocre ones at equal cost (LIMA): SFT on the best "
        "demonstrator at the highest price per demonstration vs the worst at the lowest."
    )
    sft, q, c = roles.imitation, Column.DEMONSTRATOR_QUALITY, Column.COST_RATIO
    if not sft or q not in results or c not in results:
        return missing(text, "needs SFT with a sweep of demonstrator quality and of a demonstration's cost")
    rows = results[(results["arm"] == sft) & (results["split"] == "id")]
    qualities, costs = sweep_values(rows, q), sweep_values(rows, c)
    if len(qualities) < 2 or len(costs) < 2:
        return missing(text, "needs at least two demonstrator qualities and two demonstration costs")
    pins = {"curated": {q: qualities[-1], c: costs[-1]}, "mediocre": {q: qualities[0], c: costs[0]}}
    budgets = sweep_values(rows, Column.BUDGET)
    if budgets:  # at one budget: the largest, where both buy the most
        pins = {k: {**v, Column.BUDGET: budgets[-1]} for k, v in pins.items()}
    gold = {k: per_seed(results, sft, "gold_reward", **v) for k, v in pins.items()}
    counts = {k: per_seed(results, sft, "n_demonstrations", **v) for k, v in pins.items()}
    d = paired_difference(gold["curated"], gold["mediocre"])
    evidence = (
        f"{sft}: {np.mean(list(counts['curated'].values())):.0f} demonstrations of quality {qualities[-1]:g} "
        f"at {costs[-1]:g} units vs {np.mean(list(counts['mediocre'].values())):.0f} of quality "
        f"{qualities[0]:g} at {costs[0]:g}; " + diff_text(d, "curated", "mediocre", "ID gold")
    )
    return Claim(text, verdict(d), evidence)
