"""Claims about gold reward against KL to the base: over-optimisation (a proxy optimised past its peak,
and whether that needs biased labels), and which method buys more gold at equal KL (DPO's frontier
against PPO's, best-of-n against RL, online against offline DPO). Listed in docs/claims.md.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd

from compare.report.roles import Column, Roles
from compare.report.series import (
    fmt,
    frontier_points,
    heldout_curves,
    heldout_points,
    strength_columns,
    summary,
)
from compare.report.stats import Difference, against_zero, fit_rl, paired_difference, seeds_to_decide
from compare.report.verdicts import (
    CONTRADICTED,
    INCONCLUSIVE,
    SUPPORTED,
    Claim,
    Decision,
    decide,
    decide_any,
    diff_text,
    missing,
    reading,
)


def by_strength(
    results, roles: Roles, arm: str, x: str = "kl_to_base", split: str = "id", y: str = "gold_reward"
) -> dict[int, pd.Series]:
    """Per seed, `y` (gold) on `split` at each strength setting of `arm`, indexed by that setting's ID `x`
    (KL to the base by default; ID gold for a comparison at equal gain), mean over seeds, so the last entry
    is the setting that went furthest; {} without a strength sweep."""
    keys = strength_columns(results, roles, arm)
    rows = results[results["arm"] == arm]
    at_id, at_split = rows[rows["split"] == "id"], rows[rows["split"] == split]
    if not keys or at_id.empty or at_split.empty:
        return {}
    xs = at_id.groupby(keys)[x].mean()
    out = {}
    for seed, group in at_split.groupby("seed"):
        gold = group.groupby(keys)[y].mean()
        curve = pd.Series(gold.values, index=xs.loc[gold.index].values)
        out[seed] = curve.groupby(level=0).mean().sort_index()  # settings at the same x: one point
    return out


def follows_strength(results, roles: Roles, arm: str, x: str = "kl_to_base") -> bool:
    """Whether `arm`'s mean ID `x` moves one way along its strength setting (more KL, or more gain, the
    weaker the regularisation). If it zigzags (SFT past its best epoch, say), a curve indexed by x joins
    settings that are not neighbours, and nothing read off it is a comparison at equal x. True without
    a sweep, and with more than one swept setting (no one order to check)."""
    keys = strength_columns(results, roles, arm)
    if len(keys) != 1:
        return True
    rows = results[(results["arm"] == arm) & (results["split"] == "id")]
    steps = np.diff(rows.groupby(keys[0])[x].mean().sort_index().to_numpy(float))
    return bool(np.all(steps >= 0) or np.all(steps <= 0))


def gold_at_kl(curve: pd.Series, kl: float) -> float:
    """Gold at `kl` on a curve indexed by KL (or any x, sorted), linearly interpolated; nan outside its range."""
    xs, ys = curve.index.to_numpy(float), curve.to_numpy(float)
    if len(xs) == 0 or kl < xs[0] or kl > xs[-1]:
        return math.nan
    return float(np.interp(kl, xs, ys))


def at_equal_kl(
    results, roles: Roles, a: str, b: str, x: str = "kl_to_base", split: str = "id"
) -> tuple[Difference | None, str, bool]:
    """Seed-paired ID gold of `a` minus `b` at one KL to the base that both reach: (difference, what was
    compared, whether it may decide the claim).

    Each arm's curve is its ID gold at each strength setting, indexed by that setting's mean KL over seeds
    (`by_strength`; an arm without a sweep is one point). The common KL is the middle of the KL range both
    curves cover (a one-point arm's own KL, when the other's range covers it); each seed's gold there is
    interpolated on its own curve. Without a common KL (no sweeps, or ranges that do not overlap), the
    difference is of ID gold where each arm ended, shown but never deciding: even "more gold at less
    KL" says nothing about equal KL when the other arm may be past its peak, and gold per nat of KL
    favours whichever arm moved less. (None, why, False) when there is nothing to compare.

    With `x="gold_reward"` and another `split`, the same at equal gain: gold on `split` (the prior
    ability) of both arms at one ID gold that both reach.
    """
    curves = {arm: arm_curves(results, roles, arm, x, split) for arm in (a, b)}
    if not all(curves.values()):
        return None, f"no {split} results for both arms", False
    what, at = ("ID gold", "KL") if x == "kl_to_base" else (f"{split} gold", "ID gold")
    means = {arm: pd.concat(c.values(), axis=1).mean(axis=1) for arm, c in curves.items()}
    level = common_level(means.values())
    zigzag = [arm for arm in (a, b) if not follows_strength(results, roles, arm, x)]
    if level is not None and not zigzag:
        values = {arm: values_at(curves[arm], level) for arm in curves}
        return paired_difference(values[a], values[b]), f"{what} at {at} {level:.2f} (interpolated)", True
    end = {arm: {s: float(c.iloc[-1]) for s, c in curves[arm].items()} for arm in curves}
    x_a, x_b = (float(means[arm].index[-1]) for arm in (a, b))
    d = paired_difference(end[a], end[b])
    if level is not None:  # a common x, but a curve that zigzags along its strength setting
        where = (
            f"{' and '.join(zigzag)}: {at} does not move one way along the strength setting "
            f"(not a comparison at equal {at}): {what} where each ended"
        )
    else:
        where = f"no common {at} ({a} at {at} {x_a:.2f}, {b} at {x_b:.2f}; not a comparison at equal {at}): {what}"
    return d, where, False


def arm_curves(
    results, roles: Roles, arm: str, x: str, split: str, y: str = "gold_reward"
) -> dict[int, pd.Series]:
    """`by_strength`, or for an arm without a sweep its one point per seed."""
    return by_strength(results, roles, arm, x, split, y) or _one_point(results, arm, x, split, y)


def common_level(means) -> float | None:
    """The middle of the x range that every seed-mean curve covers; None when they do not overlap or no
    curve has two points (then nothing is compared at an equal x)."""
    means = list(means)
    low, high = max(m.index.min() for m in means), min(m.index.max() for m in means)
    return (low + high) / 2 if low <= high and max(len(m) for m in means) >= 2 else None


def values_at(curves: dict[int, pd.Series], level: float) -> dict[int, float]:
    """Per seed, its curve interpolated at `level`."""
    return {seed: gold_at_kl(c, level) for seed, c in curves.items()}


def _one_point(
    results, arm: str, x: str = "kl_to_base", split: str = "id", y: str = "gold_reward"
) -> dict[int, pd.Series]:
    """An arm without a strength sweep as a one-point curve per seed, at its mean ID `x` over seeds (and
    over any other settings it was run at)."""
    rows = results[results["arm"] == arm]
    at_id, at_split = rows[rows["split"] == "id"], rows[rows["split"] == split]
    if at_id.empty or at_split.empty:
        return {}
    level = float(at_id[x].mean())
    return {seed: pd.Series([g[y].mean()], index=[level]) for seed, g in at_split.groupby("seed")}


def _equal_kl_claim(
    key: str, text: str, results, roles: Roles, a: str | None, b: str | None, needs: str
) -> Claim:
    if not (a and b):
        return missing(key, text, needs)
    d, what, decisive = at_equal_kl(results, roles, a, b)
    if d is None:
        return missing(key, text, what)
    where = "at " + what.split(" at ", 1)[-1] if decisive else "where each ended (no common KL: not decided)"
    read = reading(d, f"{a}'s ID gold is", "higher than", "lower than", f"{b}'s {where}")
    evidence = diff_text(d, a, b, what)
    if not decisive:
        return Claim(key, text, INCONCLUSIVE, evidence, reading=read, compared=f"{a} vs {b}", effect=d)
    decision = decide(d)
    need = seeds_to_decide(d.mean, d.sd) if decision.verdict == INCONCLUSIVE else None
    return Claim(key, text, decision.verdict, evidence, reading=read, compared=f"{a} vs {b}",
                 p_value=decision.p_value, seeds_needed=need, effect=d)  # fmt: skip


def claim_frontier(results, roles: Roles) -> Claim:
    """Rafailov et al. 2023: DPO's gold–KL frontier lies above PPO's."""
    key, text = "frontier", "DPO's reward–KL frontier dominates PPO's (more gold at equal KL)."
    dpo, ppo = roles.dpo, roles.online_rl
    if not (dpo and ppo) or len(frontier_points(results, roles, dpo)) < 2:
        return missing(key, text, "needs a DPO arm with a β sweep and an online-RL arm")
    claim = _equal_kl_claim(key, text, results, roles, dpo, ppo, "")
    points = {arm: frontier_points(results, roles, arm) or [] for arm in (dpo, ppo)}
    if len(points[ppo]) >= 2:
        claim = replace(claim, evidence=claim.evidence + (
            f"; of the seed-mean points, {dominated_share(points[ppo], points[dpo]):.0%} of {ppo}'s are "
            f"dominated by {dpo}'s and {dominated_share(points[dpo], points[ppo]):.0%} of {dpo}'s by {ppo}'s"
        ))  # fmt: skip
    return claim


def claim_best_of_n_kl(results, roles: Roles) -> Claim:
    """Gao et al. 2022: best-of-n buys more gold per nat of KL than RL against the same kind of reward model."""
    key, text = "best_of_n_kl", "Best-of-n is more KL-efficient than RL (more gold at equal KL)."
    return _equal_kl_claim(
        key,
        text,
        results,
        roles,
        roles.selection,
        roles.online_rl,
        "needs a best-of-n arm and an online-RL arm",
    )


def claim_online_beats_offline(results, roles: Roles) -> Claim:
    """Tang et al. 2024: online preference optimisation beats offline at the same KL from the reference."""
    key, text = "online", "Online preference learning beats offline at equal KL (online DPO vs DPO)."
    return _equal_kl_claim(
        key, text, results, roles, roles.online_preference, roles.dpo, "needs a DPO arm and an online DPO arm"
    )


def dominated_share(points: list[tuple[float, float]], by: list[tuple[float, float]]) -> float:
    """Share of `points` for which some point of `by` has no more KL and at least as much gold."""
    if not points or not by:
        return math.nan
    return sum(any(k2 <= k and g2 >= g for k2, g2 in by) for k, g in points) / len(points)


def claim_overoptimisation(logs, roles: Roles) -> Claim:
    """Gao et al. 2022: optimising a proxy past a point lowers the gold reward. Decided on each seed's
    held-out gold at the best step (chosen on the other seeds) minus at the end; it cannot be contradicted:
    gold still rising at the end says the run stopped before the point, not that there is none."""
    key, text = "overoptimisation", "Optimising a proxy reward model past a point lowers the gold reward."
    if logs.empty or "heldout/gold" not in logs:
        return missing(key, text, "needs an online-RL arm against a reward model (training curves)")
    rl_arms = [a for a in logs["arm"].unique() if not roles.is_oracle(a)]  # an oracle has no proxy
    for arm in rl_arms:
        groups = [(label, rows[rows["heldout/proxy"].notna()]) for label, rows in heldout_points(logs, arm)]
        groups = [(label, rows) for label, rows in groups if not rows.empty]
        if not groups:
            continue
        tests, parts = [], []
        for label, rows in groups:  # each setting on its own: curves of different settings never averaged
            drop = peak_minus_final_gold(rows)
            d = against_zero(drop)
            tests.append((label, d))
            parts.append(
                f"{label + ': ' if label else ''}{summary(drop)}{_fitted_peak(heldout_curves(logs, arm, rows))}"
            )
        label, d = min(tests, key=lambda t: t[1].p_value if not math.isnan(t[1].p_value) else 2.0)
        falls = [lb for lb, t in tests if decide(t, can_contradict=False).verdict == SUPPORTED]
        decision = decide_any([t for _, t in tests], can_contradict=False)  # each setting a test
        evidence = (
            f"{arm}: held-out gold at the best step (chosen on the other seeds) minus at the end of training, "
            + "; ".join(parts)
        )
        where = f" at {label}" if label else ""
        read = reading(
            d, f"{arm}'s held-out gold at its best step{where} is", "above", "below", "its gold at the end"
        )
        if len(tests) > 1:
            read += f" Gold falls significantly at {', '.join(falls) or 'no setting'} of {len(tests)} (Bonferroni over them)."
        need = seeds_to_decide(d.mean, d.sd) if not falls and d.mean > 0 else None
        return Claim(key, text, decision.verdict, evidence, reading=read, compared=f"online RL, here: {arm}",
                     p_value=decision.p_value, can_contradict=False, seeds_needed=need, effect=d)  # fmt: skip
    return missing(key, text, "no online-RL training curves with a reward model")


def _fitted_peak(curves: pd.DataFrame) -> str:
    """Where Gao et al.'s curve, fitted from the start policy's gold (the first check), peaks: inside the
    KL measured, or not at all there."""
    if len(curves) < 3:
        return ""
    fit = fit_rl(np.sqrt(np.clip(curves["kl"], 0, None)), curves["gold"], r0=float(curves["gold"].iloc[0]))
    return {
        None: "",
        "undrawn": " (Gao et al.'s form would turn where no check was made: no fit reported)",
        "peak": f" (the fitted gold curve peaks at KL ≈ {fit.kl_peak:.2f})",
        "rises": f" (the fitted gold curve still rises at the largest KL reached, {float(curves['kl'].max()):.2f})",
        "falls": " (the fitted gold curve falls over the whole KL range measured)",
    }[fit.shape]


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


def claim_bias_needed(logs, results, roles: Roles) -> Claim:
    """AlpacaFarm (Dubois et al. 2023): over-optimisation appears when labels are biased or noisy.
    Supported when gold falls significantly (peak minus end) at some biased level and not with clean
    labels; contradicted when it falls with clean labels (a level of 0). The p-value is the deciding
    level's, Bonferroni-multiplied by the number of biased levels when it is one of them."""
    key, text = (
        "bias_needed",
        "Over-optimisation appears only when the labels are biased or noisy (AlpacaFarm).",
    )
    column = next(
        (
            c
            for c in (Column.LENGTH_BIAS, Column.STYLE_BIAS, Column.LABEL_NOISE)
            if c in logs and logs[c].nunique() > 1
        ),
        None,
    )
    if column is None or "heldout/gold" not in logs:
        return missing(key, text, "needs online-RL training curves over a sweep of a labeller bias or noise")
    curves = logs[logs["heldout/gold"].notna() & logs["heldout/proxy"].notna()]
    rl = [a for a in curves["arm"].unique() if not roles.is_oracle(a)]  # the arms with held-out curves
    bon = roles.selection
    strength = roles.strength_columns(bon, results.columns) if bon else []
    drop = {}
    use_bon = bool(strength) and column in results
    source = (
        f"{bon} across its {strength[0].rsplit('.', 1)[-1]}"
        if use_bon
        else f"{', '.join(rl)} during training"
    )
    for level in sorted(logs[column].dropna().unique()):
        rows = logs[(logs["arm"].isin(rl)) & np.isclose(logs[column].astype(float), float(level))]
        rows = rows[rows["heldout/gold"].notna() & rows["heldout/proxy"].notna()]
        per_seed_drop = peak_minus_final_gold(rows) if not rows.empty else {}
        if use_bon:  # best-of-n over its n: gold at the best n minus at the largest
            sel = results[(results["arm"] == bon) & (results["split"] == "id")]
            sel = sel[np.isclose(sel[column].astype(float), float(level))]
            curves = {seed: g.groupby(strength[0])["gold_reward"].mean() for seed, g in sel.groupby("seed")}
            per_seed_drop = peak_minus_last(curves)  # best-of-n's sweep of n, where there is one
        if per_seed_drop:
            drop[level] = against_zero(per_seed_drop)
    if len(drop) < 2:
        return missing(key, text, "needs training curves at two or more levels")
    clean, biased = min(drop), [lv for lv in drop if lv != min(drop)]
    falls = {lv: decide(d, can_contradict=False).verdict == SUPPORTED for lv, d in drop.items()}
    name = column.rsplit(".", 1)[-1]
    evidence = f"{source}: " + "; ".join(
        f"{name} {lv:g}: gold at the peak minus at the end {fmt(d.mean, d.half_width)} "
        f"(n={d.n}{', significant' if falls[lv] else ''})"
        for lv, d in drop.items()
    )
    falling = [lv for lv in biased if falls[lv]]
    if falls[clean] and clean == 0:  # a lowest level above 0 is not clean labels
        decision, evidence = (
            Decision(CONTRADICTED, drop[clean].p_value),
            evidence + f" — gold falls at {clean:g} too",
        )
    elif falling:
        best = min(falling, key=lambda lv: drop[lv].p_value)
        decision = Decision(SUPPORTED, min(1.0, drop[best].p_value * len(biased)))
    else:
        ps = [d.p_value for lv, d in drop.items() if lv in biased and not math.isnan(d.p_value)]
        decision = Decision(INCONCLUSIVE, min(1.0, min(ps) * len(biased)) if ps else math.nan)
    read = (
        f"Gold falls significantly from its peak at {name} "
        + (", ".join(f"{lv:g}" for lv in drop if falls[lv]) or "no level")
        + f" of {', '.join(f'{lv:g}' for lv in drop)} ({source})."
    )
    deciding = (
        drop[clean]
        if decision.verdict == CONTRADICTED
        else min((drop[lv] for lv in biased), key=lambda d: d.p_value if not math.isnan(d.p_value) else 2.0)
    )
    return Claim(key, text, decision.verdict, evidence, reading=read, compared=source, p_value=decision.p_value,
                 effect=deciding)  # fmt: skip


def claim_dpo_overoptimises(results, roles: Roles) -> Claim:
    """Rafailov et al. 2024: direct alignment over-optimises too; weaker regularisation (smaller beta, more
    KL) past a point lowers the gold reward. Like the proxy claim, it cannot be contradicted: gold still
    rising at the smallest β says the sweep stopped before the point."""
    key, text = (
        "dpo_overoptimises",
        "DPO over-optimises too: past a point, a smaller β (more KL) lowers the gold reward.",
    )
    dpo = roles.dpo
    curves = by_strength(results, roles, dpo) if dpo else {}
    if len(next(iter(curves.values()), ())) < 3:
        return missing(key, text, "needs a DPO arm with at least three β settings")
    drop = peak_minus_last(curves)
    d = against_zero(drop)
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
    read = reading(d, f"{dpo}'s ID gold at its best β is", "above", "below", "at the β with the most KL")
    decision = decide(d, can_contradict=False)
    need = seeds_to_decide(d.mean, d.sd) if decision.verdict == INCONCLUSIVE and d.mean > 0 else None
    return Claim(key, text, decision.verdict, evidence, reading=read, compared=f"DPO, here: {dpo}",
                 p_value=decision.p_value, can_contradict=False, seeds_needed=need, effect=d)  # fmt: skip
