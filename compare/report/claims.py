"""The comparison's findings, computed from saved results: per-axis statements and the claims table.

Every sentence here is built from numbers in `results.csv` / `training_logs.csv`; a claim is called
supported or contradicted only when a seed-paired 95% interval excludes zero, otherwise inconclusive,
and "not measured" when the suite has no runs that bear on it. The arms a claim compares are found by
role (`compare/report/roles.py`), never by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from compare.metrics import mean_ci
from compare.report.roles import Column, Roles
from compare.report.series import (
    curve,
    fmt,
    frontier_points,
    heldout_curves,
    per_seed,
    strength_columns,
    summary,
    sweep_values,
)
from compare.report.stats import budget_to_reach, crossover, fit_rl, paired_difference
from compare.report.tables import SHIFTS, split_name

SUPPORTED, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED = (
    "supported",
    "contradicted",
    "inconclusive",
    "not measured",
)


@dataclass
class Claim:
    claim: str
    verdict: str
    evidence: str


def verdict(diff: dict, positive_supports: bool = True) -> str:
    """From a paired difference: supported if it is significantly of the claimed sign."""
    if diff["n"] < 2 or not diff["significant"]:
        return INCONCLUSIVE
    return SUPPORTED if (diff["mean"] > 0) == positive_supports else CONTRADICTED


def diff_text(diff: dict, a: str, b: str, what: str) -> str:
    if diff["n"] == 0:
        return "no shared seeds"
    mark = "significant" if diff["significant"] else "not significant"
    return (
        f"{what} {a} − {b} = {fmt(diff['mean'], diff['half_width'])} over {diff['n']} paired seeds ({mark})"
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
        _claim_overoptimisation(logs, roles),
        _claim_frontier(results, roles),
        _claim_dpo_vs_preferred(results, roles),
        *(_claim_shift(results, pref, sft, split) for split in ("ood_opener", "ood_format")),
        _claim_forgetting(results, roles),
        _claim_best_of_n_kl(results, roles),
        _claim_bias_needed(logs, results, roles),
        _claim_curated_demonstrations(results, roles),
        _claim_dpo_overoptimises(results, roles),
        _claim_online_beats_offline(results, roles),
    ]


def _missing(text: str, why: str) -> Claim:
    return Claim(text, NOT_MEASURED, why)


def _claim_data_needs(results, pref, sft) -> Claim:
    text = "SFT needs more labelled data than RLHF for the same quality."
    col = Column.BUDGET
    if not (pref and sft) or len(sweep_values(results, col)) < 2:
        return _missing(text, "needs SFT and a preference arm over a budget sweep")
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
        return _missing(text, "needs a flip-rate sweep and a demonstrator-quality sweep")
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
        return _missing(text, "needs SFT and a preference arm")
    gap = {
        arm: {
            s: v - per_seed(results, arm, "gold_reward", "ood").get(s, math.nan)
            for s, v in per_seed(results, arm, "gold_reward", "id").items()
        }
        for arm in (sft, pref)
    }
    d = paired_difference(gap[sft], gap[pref])
    evidence = f"gap {sft} {summary(gap[sft])}, {pref} {summary(gap[pref])}; " + diff_text(
        d, sft, pref, "gap"
    )
    return Claim(text, verdict(d), evidence)


def _claim_diversity(results, pref, sft) -> Claim:
    text = "RLHF reduces output diversity compared with SFT (distinct-2 across prompts)."
    if not (pref and sft):
        return _missing(text, "needs SFT and a preference arm")
    metric = "distinct_2_across" if "distinct_2_across" in results else "distinct_2"
    d = paired_difference(per_seed(results, sft, metric), per_seed(results, pref, metric))
    return Claim(text, verdict(d), diff_text(d, sft, pref, metric))


def _claim_beyond_demonstrator(results, pref, sft) -> Claim:
    text = "Preference learning can exceed the demonstrator's quality while SFT is capped by it."
    if not (pref and sft) or "demonstrator_gold" not in results:
        return _missing(text, "needs SFT, a preference arm and the demonstrator's gold reward")
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


def _claim_overoptimisation(logs, roles: Roles) -> Claim:
    text = "Optimising a proxy reward model past a point lowers the gold reward."
    if logs.empty or "heldout/gold" not in logs:
        return _missing(text, "needs an online-RL arm against a reward model (training curves)")
    rl_arms = [a for a in logs["arm"].unique() if not roles.is_oracle(a)]  # an oracle has no proxy
    for arm in rl_arms:
        rows = logs[(logs["arm"] == arm) & logs["heldout/gold"].notna() & logs["heldout/proxy"].notna()]
        if rows.empty:
            continue
        peak_minus_final = peak_minus_final_gold(rows)
        d = paired_difference(peak_minus_final, {s: 0.0 for s in peak_minus_final})
        curves = heldout_curves(logs, arm)
        fit = fit_rl(np.sqrt(np.clip(curves["kl"], 0, None)), curves["gold"]) if len(curves) >= 3 else None
        peak = ""
        if fit is not None and not math.isnan(fit["kl_peak"]):
            reached = float(curves["kl"].max())
            peak = (
                f"; the fitted gold curve (Gao et al.) peaks at KL ≈ {fit['kl_peak']:.2f}"
                if fit["kl_peak"] <= reached
                else f"; the fitted gold curve still rises at the largest KL reached ({reached:.2f})"
            )
        evidence = (
            f"{arm}: held-out gold at the best step (chosen on the other seeds) minus at the end of training "
            f"{summary(peak_minus_final)}{peak}"
        )
        return Claim(
            text, SUPPORTED if d["n"] >= 2 and d["significant"] and d["mean"] > 0 else INCONCLUSIVE, evidence
        )
    return _missing(text, "no online-RL training curves with a reward model")


def peak_minus_final_gold(rows: pd.DataFrame) -> dict[int, float]:
    """Per seed: held-out gold at the step where the *other* seeds' mean gold peaks, minus at the end.

    Taking each seed's own best step would be positive from noise alone (a maximum is never below the
    last value); choosing the step on the other seeds (leave one out) makes the difference zero on
    average when gold does not really fall. One seed alone: its own best step.
    """
    return peak_minus_last(
        {seed: g.groupby("step")["heldout/gold"].mean() for seed, g in rows.groupby("seed")}
    )


def peak_minus_last(by_seed: dict[int, pd.Series]) -> dict[int, float]:
    """Per seed, gold at the x (step, n) where the other seeds' mean peaks minus gold at the largest x."""
    out = {}
    for seed, gold in by_seed.items():
        others = [c for s, c in by_seed.items() if s != seed]
        mean = pd.concat(others, axis=1).mean(axis=1) if others else gold
        best = mean.idxmax()
        if best in gold.index:
            out[seed] = float(gold[best] - gold.sort_index().iloc[-1])
    return out


def _claim_bias_needed(logs, results, roles: Roles) -> Claim:
    """AlpacaFarm (Dubois et al. 2023): over-optimisation appears when labels are biased or noisy."""
    text = "Over-optimisation appears only when the labels are biased or noisy (AlpacaFarm)."
    column = next(
        (
            c
            for c in (Column.LENGTH_BIAS, Column.STYLE_BIAS, Column.LABEL_NOISE)
            if c in logs and logs[c].nunique() > 1
        ),
        None,
    )
    if column is None or "heldout/gold" not in logs:
        return _missing(text, "needs online-RL training curves over a sweep of a labeller bias or noise")
    rl = [a for a in logs["arm"].unique() if not roles.is_oracle(a)]
    bon = roles.selection
    strength = roles.strength_columns(bon, results.columns) if bon else []
    drop = {}
    for level in sorted(logs[column].dropna().unique()):
        rows = logs[(logs["arm"].isin(rl)) & np.isclose(logs[column].astype(float), float(level))]
        rows = rows[rows["heldout/gold"].notna() & rows["heldout/proxy"].notna()]
        per_seed_drop = peak_minus_final_gold(rows) if not rows.empty else {}
        if strength and column in results:  # best-of-n over its n: gold at the best n minus at the largest
            sel = results[(results["arm"] == bon) & (results["split"] == "id")]
            sel = sel[np.isclose(sel[column].astype(float), float(level))]
            curves = {seed: g.groupby(strength[0])["gold_reward"].mean() for seed, g in sel.groupby("seed")}
            per_seed_drop = peak_minus_last(curves)  # best-of-n's sweep of n, where there is one
        if per_seed_drop:
            drop[level] = paired_difference(per_seed_drop, dict.fromkeys(per_seed_drop, 0.0))
    if len(drop) < 2:
        return _missing(text, "needs training curves at two or more levels")
    clean, biased = min(drop), [lv for lv in drop if lv != min(drop)]
    falls = {lv: d["n"] >= 2 and d["significant"] and d["mean"] > 0 for lv, d in drop.items()}
    evidence = "; ".join(
        f"{column.rsplit('.', 1)[-1]} {lv:g}: gold at the peak minus at the end {fmt(d['mean'], d['half_width'])} "
        f"(n={d['n']}{', significant' if falls[lv] else ''})"
        for lv, d in drop.items()
    )
    if falls[clean]:
        return Claim(text, CONTRADICTED, evidence + f" — gold falls at {clean:g} too")
    if any(falls[lv] for lv in biased):
        return Claim(text, SUPPORTED, evidence)
    return Claim(text, INCONCLUSIVE, evidence)


def dominated_share(points: list[tuple[float, float]], by: list[tuple[float, float]]) -> float:
    """Share of `points` for which some point of `by` has no more KL and at least as much gold."""
    if not points or not by:
        return math.nan
    return sum(any(k2 <= k and g2 >= g for k2, g2 in by) for k, g in points) / len(points)


def _claim_dpo_vs_preferred(results, roles: Roles) -> Claim:
    text = "DPO beats SFT on the chosen responses of the same comparisons (preferred-FT)."
    dpo, control = roles.dpo, roles.imitation_control
    if not (dpo and control):
        return _missing(text, "needs dpo and preferred_ft arms")
    d = paired_difference(per_seed(results, dpo, "gold_reward"), per_seed(results, control, "gold_reward"))
    return Claim(text, verdict(d), diff_text(d, dpo, control, "ID gold"))


def _claim_shift(results, pref, sft, split: str) -> Claim:
    """The OOD claim on another named shift: a smaller ID − shift gap for the preference arm than for SFT."""
    text = f"RLHF holds up better than SFT under {SHIFTS[split]} (smaller ID − {split_name(split)} gap)."
    if not (pref and sft) or split not in set(results["split"]):
        return _missing(text, f"needs SFT, a preference arm and the {split} split")
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
    """RL's Razor (Shenfeld et al. 2025): RL forgets less of a prior ability than SFT."""
    text = "RL forgets less than SFT: the base model's prior ability is better kept (RL's Razor)."
    rl, sft = roles.online_rl, roles.imitation
    if not (rl and sft) or "prior" not in set(results["split"]):
        return _missing(text, "needs SFT, an online-RL arm and a prior-ability split")
    d = paired_difference(
        per_seed(results, rl, "gold_reward", "prior"), per_seed(results, sft, "gold_reward", "prior")
    )
    gains = ", ".join(f"{a} {summary(per_seed(results, a, 'gold_reward'))}" for a in (rl, sft))
    evidence = diff_text(d, rl, sft, "prior-ability gold") + f"; ID gold {gains}"
    if "forward_kl_train" in results:
        kls = ", ".join(f"{a} {summary(per_seed(results, a, 'forward_kl_train'))}" for a in (rl, sft))
        evidence += f"; KL(base ‖ π) on training prompts {kls}"
    return Claim(text, verdict(d), evidence)


def _claim_curated_demonstrations(results, roles: Roles) -> Claim:
    """LIMA (Zhou et al. 2023): few good demonstrations beat many mediocre ones bought with the same units."""
    text = (
        "A few curated demonstrations beat many mediocre ones at equal cost (LIMA): SFT on the best "
        "demonstrator at the highest price per demonstration vs the worst at the lowest."
    )
    sft, q, c = roles.imitation, Column.DEMONSTRATOR_QUALITY, Column.COST_RATIO
    if not sft or q not in results or c not in results:
        return _missing(text, "needs SFT with a sweep of demonstrator quality and of a demonstration's cost")
    rows = results[(results["arm"] == sft) & (results["split"] == "id")]
    qualities, costs = sweep_values(rows, q), sweep_values(rows, c)
    if len(qualities) < 2 or len(costs) < 2:
        return _missing(text, "needs at least two demonstrator qualities and two demonstration costs")
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


def by_strength(results, roles: Roles, arm: str) -> dict[int, pd.Series]:
    """Per seed, ID gold at each strength setting of `arm`, indexed by that setting's mean KL over seeds
    (so the last entry is the setting that moved furthest from the base); {} without a strength sweep."""
    keys = strength_columns(results, roles, arm)
    rows = results[(results["arm"] == arm) & (results["split"] == "id")]
    if not keys or rows.empty:
        return {}
    kl = rows.groupby(keys)["kl_to_base"].mean()
    out = {}
    for seed, group in rows.groupby("seed"):
        gold = group.groupby(keys)["gold_reward"].mean()
        out[seed] = pd.Series(gold.values, index=kl.loc[gold.index].values).sort_index()
    return out


def _claim_dpo_overoptimises(results, roles: Roles) -> Claim:
    """Rafailov et al. 2024: direct alignment over-optimises too; weaker regularisation (smaller beta, more
    KL) past a point lowers the gold reward."""
    text = "DPO over-optimises too: past a point, a smaller β (more KL) lowers the gold reward."
    dpo = roles.dpo
    curves = by_strength(results, roles, dpo) if dpo else {}
    if len(next(iter(curves.values()), ())) < 3:
        return _missing(text, "needs a DPO arm with at least three β settings")
    drop = peak_minus_last(curves)
    d = paired_difference(drop, {s: 0.0 for s in drop})
    mean = pd.concat(curves.values(), axis=1).mean(axis=1)
    where = (
        f"the mean gold peaks at KL {mean.idxmax():.2f} of the {mean.index.max():.2f} reached"
        if mean.idxmax() < mean.index.max()
        else f"the mean gold still rises at the largest KL reached ({mean.index.max():.2f})"
    )
    evidence = (
        f"{dpo}: ID gold at the best β (chosen on the other seeds) minus at the β with the most KL "
        f"{summary(drop)}; {where}"
    )
    return Claim(text, SUPPORTED if d["significant"] and d["mean"] > 0 else INCONCLUSIVE, evidence)


def gold_at_kl(curve: pd.Series, kl: float) -> float:
    """Gold at `kl` on a curve indexed by KL (sorted), linearly interpolated; nan outside its range."""
    xs, ys = curve.index.to_numpy(float), curve.to_numpy(float)
    if len(xs) == 0 or kl < xs[0] or kl > xs[-1]:
        return math.nan
    return float(np.interp(kl, xs, ys))


def at_equal_kl(results, roles: Roles, a: str, b: str) -> tuple[dict | None, str, bool]:
    """Seed-paired ID gold of `a` minus `b` at one KL to the base that both reach: (difference, what was
    compared, whether it may decide the claim).

    Each arm's curve is its ID gold at each strength setting, indexed by that setting's mean KL over seeds
    (`by_strength`; an arm without a sweep is one point). The common KL is the middle of the KL range both
    curves cover (a one-point arm's own KL, when the other's range covers it); each seed's gold there is
    interpolated on its own curve. Without a common KL (no sweeps, or ranges that do not overlap), the
    difference is of ID gold where each arm ended, and it decides only when the arm with more gold also
    has no more KL (it then does at least as well at equal KL, gold rising with KL); gold per nat of KL
    would not do, as it favours whichever arm moved less. (None, why, False) when there is nothing to
    compare.
    """
    curves = {arm: by_strength(results, roles, arm) or _one_point(results, arm) for arm in (a, b)}
    if not all(curves.values()):
        return None, "no ID results for both arms", False
    means = {arm: pd.concat(c.values(), axis=1).mean(axis=1) for arm, c in curves.items()}
    low = max(m.index.min() for m in means.values())
    high = min(m.index.max() for m in means.values())
    if low <= high and max(len(m) for m in means.values()) >= 2:
        kl = (low + high) / 2
        at = {arm: {s: gold_at_kl(c, kl) for s, c in curves[arm].items()} for arm in curves}
        return paired_difference(at[a], at[b]), f"ID gold at KL {kl:.2f} (interpolated)", True
    end = {arm: {s: float(c.iloc[-1]) for s, c in curves[arm].items()} for arm in curves}
    kl_a, kl_b = (float(means[arm].index[-1]) for arm in (a, b))
    d = paired_difference(end[a], end[b])
    decisive = d["significant"] and (kl_a <= kl_b if d["mean"] > 0 else kl_a >= kl_b)
    what = (
        f"no common KL ({a} at KL {kl_a:.2f}, {b} at {kl_b:.2f}; decided only if the arm with more gold "
        "has no more KL): ID gold"
    )
    return d, what, decisive


def _one_point(results, arm: str) -> dict[int, pd.Series]:
    """An arm without a strength sweep as a one-point curve per seed, at its mean KL over seeds (and
    over any other settings it was run at)."""
    rows = results[(results["arm"] == arm) & (results["split"] == "id")]
    if rows.empty:
        return {}
    kl = float(rows["kl_to_base"].mean())
    return {seed: pd.Series([g["gold_reward"].mean()], index=[kl]) for seed, g in rows.groupby("seed")}


def _equal_kl_claim(text: str, results, roles: Roles, a: str | None, b: str | None, needs: str) -> Claim:
    if not (a and b):
        return _missing(text, needs)
    d, what, decisive = at_equal_kl(results, roles, a, b)
    if d is None:
        return _missing(text, what)
    return Claim(text, verdict(d) if decisive else INCONCLUSIVE, diff_text(d, a, b, what))


def _claim_frontier(results, roles: Roles) -> Claim:
    """Rafailov et al. 2023: DPO's gold–KL frontier lies above PPO's."""
    text = "DPO's reward–KL frontier dominates PPO's (more gold at equal KL)."
    dpo, ppo = roles.dpo, roles.online_rl
    if not (dpo and ppo) or len(frontier_points(results, roles, dpo)) < 2:
        return _missing(text, "needs a DPO arm with a β sweep and an online-RL arm")
    claim = _equal_kl_claim(text, results, roles, dpo, ppo, "")
    points = {arm: frontier_points(results, roles, arm) or [] for arm in (dpo, ppo)}
    if len(points[ppo]) >= 2:
        claim.evidence += (
            f"; of the seed-mean points, {dominated_share(points[ppo], points[dpo]):.0%} of {ppo}'s are "
            f"dominated by {dpo}'s and {dominated_share(points[dpo], points[ppo]):.0%} of {dpo}'s by {ppo}'s"
        )
    return claim


def _claim_best_of_n_kl(results, roles: Roles) -> Claim:
    """Gao et al. 2022: best-of-n buys more gold per nat of KL than RL against the same kind of reward model."""
    text = "Best-of-n is more KL-efficient than RL (more gold at equal KL)."
    return _equal_kl_claim(
        text, results, roles, roles.selection, roles.online_rl, "needs a best-of-n arm and an online-RL arm"
    )


def _claim_online_beats_offline(results, roles: Roles) -> Claim:
    """Tang et al. 2024: online preference optimisation beats offline at the same KL from the reference."""
    text = "Online preference learning beats offline at equal KL (online DPO vs DPO)."
    return _equal_kl_claim(
        text, results, roles, roles.online_preference, roles.dpo, "needs a DPO arm and an online DPO arm"
    )
