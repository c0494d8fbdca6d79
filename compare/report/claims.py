"""The comparison's findings, computed from saved results: per-axis statements and the claims table.

Every sentence here is built from numbers in `results.csv` / `training_logs.csv`; every verdict comes
from the one rule of `compare/report/verdicts.py` (a seed-paired 95% interval that excludes zero), and is
shown again after Holm's correction over the claims the report tests. The arms a claim compares are found by
role (`compare/report/roles.py`), never by name.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd

import compare.report.pass_at_k as pass_at_k
import compare.report.preference_diagnostics as preference_diagnostics
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
    id_gap,
    per_seed,
    summary,
    sweep_values,
)
from compare.report.stats import Difference, budget_to_reach, crossover, paired_difference, seeds_to_decide
from compare.report.verdicts import (  # noqa: F401  (the verdicts are part of this module's interface)
    CONTRADICTED,
    INCONCLUSIVE,
    NOT_MEASURED,
    SUPPORTED,
    Claim,
    Decision,
    correct,
    decide,
    decide_any,
    diff_text,
    missing,
    reading,
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
    for arm in roles.policies:
        parts = []
        for split in roles.shifts:
            if split not in splits:
                continue
            mean, half, n = mean_ci(list(id_gap(results, arm, split).values()))
            if n:
                parts.append(f"ID − {roles.split_label(split)} gold gap {fmt(mean, half)}")
        if parts:
            lines.append(f"**{arm}**: " + "; ".join(parts) + f" (n={len(id_gap(results, arm, 'ood'))}).")
    return lines


def forgetting_statements(results: pd.DataFrame, roles: Roles) -> list[str]:
    """What each arm kept of the base model's prior ability, against its forward KL on training prompts."""
    prior = roles.prior
    if prior is None or prior.name not in set(results["split"]) or roles.base is None:
        return []
    base = per_seed(results, roles.base, "gold_reward", prior.name)
    lines = []
    for arm in roles.policies:
        if arm == roles.base:
            continue
        d = paired_difference(per_seed(results, arm, "gold_reward", prior.name), base)
        kl_seeds = per_seed(results, arm, "forward_kl_train") if "forward_kl_train" in results else {}
        kl = f"; KL(base ‖ π) on training prompts {summary(kl_seeds)}" if kl_seeds else ""
        if d.n:
            lines.append(
                f"**{arm}**: prior ability ({prior.description}) {fmt(d.mean, d.half_width)} against the base{kl}."
            )
    return lines


# -- claims ----------------------------------------------------------------------------------------------
# The shipped suite designed to decide each claim (docs/claims.md); the shift claims' suite is the task's
# (`Task.shift_suite`).
HOME_SUITE = {
    "data_needs": "data_needs.yaml",
    "noise": "noise.yaml",
    "diversity": "generalization.yaml",
    "beyond_demonstrator": "generalization.yaml",
    "overoptimisation": "overoptimization.yaml",
    "bias_needed": "overoptimization.yaml",
    "frontier": "frontier.yaml",
    "dpo_vs_preferred": "generalization.yaml",
    "forgetting": "forgetting.yaml",
    "best_of_n_kl": "frontier.yaml",
    "curated": "curated.yaml",
    "dpo_overoptimises": "frontier.yaml",
    "online": "online.yaml",
    "pass_at_k": "arithmetic.yaml",
    "dpo_chosen_falls": "generalization.yaml",
}


def check_claims(results: pd.DataFrame, logs: pd.DataFrame, roles: Roles) -> list[Claim]:
    """The claims table, each verdict also after Holm's correction over the claims tested; `roles`
    selects among the arms that have results (`Roles.of(suite, present)`) and knows the task (its shifts'
    claims name the suite that decides them)."""
    sft = roles.imitation
    rl = preference_arms(roles)
    shift_home = roles.shift_suite
    per_rl = [
        claim
        for pref, kind in rl or [(None, "")]
        for claim in (
            _claim_data_needs(results, pref, sft, kind),
            _claim_noise(results, pref, sft, kind),
            _gap_claim_for(results, roles, pref, sft, kind, "ood", shift_home),
            _claim_diversity(results, pref, sft, kind),
            _claim_beyond_demonstrator(results, pref, sft, kind),
            *(
                _gap_claim_for(results, roles, pref, sft, kind, split, shift_home)
                for split in shift_claims(roles)
            ),
        )
    ]
    claims = [
        *_one_row_when_unmeasured(per_rl),
        claim_overoptimisation(logs, roles),
        claim_bias_needed(logs, results, roles),
        claim_frontier(results, roles),
        claim_best_of_n_kl(results, roles),
        claim_dpo_overoptimises(results, roles),
        claim_online_beats_offline(results, roles),
        _claim_dpo_vs_preferred(results, roles),
        _claim_forgetting(results, roles),
        _claim_curated_demonstrations(results, roles),
        preference_diagnostics.claim(logs, roles),
        *pass_at_k.claims(results, roles),
    ]
    ordered = sorted(claims, key=lambda c: _ORDER.index(c.family))
    return correct([_with_home(c, shift_home) for c in ordered])


def _one_row_when_unmeasured(claims: list[Claim]) -> list[Claim]:
    """A claim that no RL arm can measure is one row, not one per arm."""
    out, seen = [], set()
    for claim in claims:
        base = claim.base_key
        if claim.verdict == NOT_MEASURED:
            if base in seen:
                continue
            claim = replace(claim, key=base)
        seen.add(base)
        out.append(claim)
    measured = {c.base_key for c in out if c.verdict != NOT_MEASURED}
    return [c for c in out if c.verdict != NOT_MEASURED or c.key not in measured]


_ORDER = ["data_needs", "noise", "ood", "shift", "diversity", "beyond_demonstrator", "dpo_vs_preferred",
          "dpo_chosen_falls", "overoptimisation", "bias_needed", "dpo_overoptimises", "frontier", "best_of_n_kl",
          "online", "forgetting", "curated", "pass_at_k"]  # fmt: skip


def _with_home(claim: Claim, shift_home: str) -> Claim:
    if claim.suite:
        return claim
    home = shift_home if claim.family in ("ood", "shift") else HOME_SUITE.get(claim.base_key, "")
    return replace(claim, suite=home)


def preference_arms(roles: Roles) -> list[tuple[str, str]]:
    """The arms that stand for "RLHF" in the claims against SFT, one per kind of RL present: the offline
    preference arm (DPO) and the online-RL arm against a reward model (RM + PPO, RLOO), each checked; when
    neither is in the suite, the preference arm `Roles.preference` picks (e.g. SFT → RM → PPO, best-of-n)."""
    found = []
    if roles.dpo:
        found.append((roles.dpo, "offline preference"))
    if roles.online_rl:
        found.append((roles.online_rl, "online RL"))
    if not found and roles.preference:
        found.append((roles.preference, "preference"))
    return found


def _who(pref: str | None, kind: str) -> str:
    return f"[{pref}]" if pref else ""


def _compared(pref: str, sft: str, kind: str) -> str:
    return f"RLHF, here: {pref} ({kind}); SFT, here: {sft}"


def single(
    key: str,
    text: str,
    diff: Difference,
    read: str,
    evidence: str,
    compared: str = "",
    positive_supports: bool = True,
    can_contradict: bool = True,
) -> Claim:
    """A claim decided by one paired difference (`decide`), with the seeds an undecided effect would need."""
    decision = decide(diff, positive_supports, can_contradict)
    need = None
    if decision.verdict == INCONCLUSIVE and diff.n >= 2:
        need = seeds_to_decide(diff.mean, diff.sd)
    effect = diff if positive_supports else _negated(diff)
    return Claim(key, text, decision.verdict, evidence, reading=read, compared=compared,
                 p_value=decision.p_value, can_contradict=can_contradict, seeds_needed=need, effect=effect)  # fmt: skip


def _negated(d: Difference) -> Difference:
    return replace(d, mean=-d.mean)


def _claim_data_needs(results, pref, sft, kind) -> Claim:
    key = "data_needs" + _who(pref, kind)
    text = "SFT needs more labelled data than RLHF for the same quality."
    col = Column.BUDGET
    if not (pref and sft) or len(sweep_values(results, col)) < 2:
        return missing(key, text, "needs SFT and a preference arm over a budget sweep")
    diffs, parts = [], []
    for b in sweep_values(results, col):
        d = paired_difference(
            per_seed(results, pref, "gold_reward", **{col: b}),
            per_seed(results, sft, "gold_reward", **{col: b}),
        )
        diffs.append((b, d))
        parts.append(f"{b:g}: {fmt(d.mean, d.half_width)}" + (" (significant)" if d.significant else ""))
    decision = decide_any([d for _, d in diffs])
    deciding = min((d for _, d in diffs if d.n >= 2), key=lambda d: d.p_value, default=None)
    ahead = [b for b, d in diffs if d.significant and d.mean > 0]
    behind = [b for b, d in diffs if d.significant and d.mean < 0]
    read = (
        f"{pref} has significantly more ID gold than {sft} at "
        + (", ".join(f"{b:g}" for b in ahead) or "no budget")
        + " units"
        + (f" and less at {', '.join(f'{b:g}' for b in behind)}" if behind else "")
        + f" ({len(diffs)} budgets tested; the p-value is Bonferroni-multiplied by {len(diffs)})."
    )
    return Claim(key, text, decision.verdict, f"ID gold {pref} − {sft} by budget: " + "; ".join(parts),
                 reading=read, compared=_compared(pref, sft, kind), p_value=decision.p_value,
                 effect=deciding)  # fmt: skip


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


def _claim_noise(results, pref, sft, kind) -> Claim:
    key = "noise" + _who(pref, kind)
    text = "RLHF tolerates noisy feedback better than SFT tolerates bad demonstrations."
    noise_col, quality_col = Column.LABEL_NOISE, Column.DEMONSTRATOR_QUALITY
    if not (pref and sft) or noise_col not in results or quality_col not in results:
        return missing(key, text, "needs a flip-rate sweep and a demonstrator-quality sweep")
    pref_drop = _drop(results, pref, noise_col, best_first=True)  # clean labels -> noisiest
    sft_drop = _drop(results, sft, quality_col, best_first=False)  # best demonstrator -> worst
    d = paired_difference(sft_drop, pref_drop)
    evidence = (
        f"gold lost from cleanest to noisiest labels, {pref}: {summary(pref_drop)}; from best to worst "
        f"demonstrator, {sft}: {summary(sft_drop)}; " + diff_text(d, f"{sft} loss", f"{pref} loss", "")
    )
    read = reading(d, f"{sft} loses", "more gold to bad demonstrations than", "less gold to bad demonstrations than",
                   f"{pref} loses to noisy labels")  # fmt: skip
    return single(key, text, d, read, evidence, _compared(pref, sft, kind))


def _gap_claim_for(results, roles: Roles, pref, sft, kind, split: str, shift_home: str) -> Claim:
    """The OOD claim (`ood`) or the same on another named shift (`shift:<split>`): a smaller ID − shift gap
    for the preference arm than for SFT."""
    if split == "ood":
        key, text = "ood", "RLHF generalises better out of distribution than SFT (smaller ID − OOD gap)."
    else:
        key = f"shift:{split}"
        label = roles.split_label(split)
        text = f"RLHF holds up better than SFT under {roles.shift_description(split)} (smaller ID − {label} gap)."
    key += _who(pref, kind)
    if not (pref and sft):
        return missing(key, text, "needs SFT and a preference arm")
    if split not in set(results["split"]):
        return missing(key, text, f"needs the {split} split")
    return _gap_claim(key, text, results, roles, pref, sft, split, kind)


def _claim_diversity(results, pref, sft, kind) -> Claim:
    key = "diversity" + _who(pref, kind)
    text = "RLHF reduces output diversity compared with SFT (distinct-2 across prompts)."
    if not (pref and sft):
        return missing(key, text, "needs SFT and a preference arm")
    metric = "distinct_2_across" if "distinct_2_across" in results else "distinct_2"
    if metric not in results:
        return missing(key, text, "needs the distinct-2 of each arm's samples")
    d = paired_difference(per_seed(results, sft, metric), per_seed(results, pref, metric))
    name = "distinct-2 across prompts" if metric == "distinct_2_across" else "distinct-2"
    read = reading(d, f"{pref}'s {name} is", "lower than", "higher than", f"{sft}'s")
    return single(key, text, d, read, diff_text(d, sft, pref, metric), _compared(pref, sft, kind))


def _claim_beyond_demonstrator(results, pref, sft, kind) -> Claim:
    """Supported when the preference arm is significantly above the demonstrator and SFT is not;
    contradicted when SFT is and the preference arm is not. The p-value is the deciding test's."""
    key = "beyond_demonstrator" + _who(pref, kind)
    text = "Preference learning can exceed the demonstrator's quality while SFT is capped by it."
    if not (pref and sft) or "demonstrator_gold" not in results:
        return missing(key, text, "needs SFT, a preference arm and the demonstrator's gold reward")
    demo = per_seed(results, sft, "demonstrator_gold")
    d_pref = paired_difference(per_seed(results, pref, "gold_reward"), demo)
    d_sft = paired_difference(per_seed(results, sft, "gold_reward"), demo)
    above_pref, above_sft = (decide(d).verdict == SUPPORTED for d in (d_pref, d_sft))
    if above_pref and not above_sft:
        decision = Decision(SUPPORTED, d_pref.p_value)
    elif above_sft and not above_pref:
        decision = Decision(CONTRADICTED, d_sft.p_value)
    else:
        decision = Decision(INCONCLUSIVE, d_pref.p_value)
    evidence = (
        f"demonstrator ID gold {summary(demo)}; "
        + diff_text(d_pref, pref, "demonstrator", "")
        + "; "
        + diff_text(d_sft, sft, "demonstrator", "")
    )
    read = (
        reading(d_pref, f"{pref} scores", "above", "below", "the demonstrator").rstrip(".")
        + "; "
        + reading(d_sft, f"{sft} scores", "above", "below", "the demonstrator")
    )
    return Claim(key, text, decision.verdict, evidence, reading=read, compared=_compared(pref, sft, kind),
                 p_value=decision.p_value, effect=d_pref)  # fmt: skip


def _claim_dpo_vs_preferred(results, roles: Roles) -> Claim:
    key, text = (
        "dpo_vs_preferred",
        "DPO beats SFT on the chosen responses of the same comparisons (preferred-FT).",
    )
    dpo, control = roles.dpo, roles.imitation_control
    if not (dpo and control):
        return missing(key, text, "needs dpo and preferred_ft arms")
    d = paired_difference(per_seed(results, dpo, "gold_reward"), per_seed(results, control, "gold_reward"))
    read = reading(d, f"{dpo}'s ID gold is", "higher than", "lower than", f"{control}'s")
    return single(
        key, text, d, read, diff_text(d, dpo, control, "ID gold"), f"DPO: {dpo}; preferred-FT: {control}"
    )


def shift_claims(roles: Roles) -> list[str]:
    """The task's named shifts with a claim of their own (`ood` has the main OOD claim), in its order."""
    return [s for s in roles.shifts if s != "ood"]


def _gap_claim(
    key: str, text: str, results, roles: Roles, pref: str, sft: str, split: str, kind: str
) -> Claim:
    """Decided on each seed's ID − `split` gold gap, SFT's minus the preference arm's (positive: RLHF
    holds up better)."""
    gap = {arm: id_gap(results, arm, split) for arm in (sft, pref)}
    d = paired_difference(gap[sft], gap[pref])
    evidence = f"gap {sft} {summary(gap[sft])}, {pref} {summary(gap[pref])}; " + diff_text(
        d, sft, pref, "gap"
    )
    read = reading(
        d, f"{pref}'s ID − {roles.split_label(split)} gap is", "smaller than", "larger than", f"{sft}'s"
    )
    return single(key, text, d, read, evidence, _compared(pref, sft, kind))


def _claim_forgetting(results, roles: Roles) -> Claim:
    """RL's Razor (Shenfeld et al. 2025): at equal gain on the new task, RL forgets less of a prior ability
    than SFT. Decided at one ID gold that both arms reach across their strength sweeps (SFT's epochs, the
    RL arm's KL coefficient; `kl_claims.at_equal_kl` with ID gold as the x); arms that end at different
    gains are compared where they ended, shown but not deciding: more gain usually costs more of the rest.
    """
    key = "forgetting"
    text = (
        "RL forgets less than SFT at equal gain: the base model's prior ability is better kept (RL's Razor)."
    )
    rl, sft, prior = roles.online_rl, roles.imitation, roles.prior
    if not (rl and sft) or prior is None or prior.name not in set(results["split"]):
        return missing(key, text, "needs SFT, an online-RL arm and a prior-ability split")
    d, what, decisive = at_equal_kl(results, roles, rl, sft, x="gold_reward", split=prior.name)
    if d is None:
        return missing(key, text, what)
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
    where = (
        "at " + what.split(" at ", 1)[-1] if decisive else "where each ended (no common ID gold: not decided)"
    )
    read = reading(d, f"{rl} keeps", f"more prior ability ({prior.description}) than", "less prior ability than",
                   f"{sft} {where}")  # fmt: skip
    compared = f"RL, here: {rl}; SFT, here: {sft}"
    if not decisive:
        return Claim(key, text, INCONCLUSIVE, evidence, reading=read, compared=compared, effect=d)
    return single(key, text, d, read, evidence, compared)


def _claim_curated_demonstrations(results, roles: Roles) -> Claim:
    """LIMA (Zhou et al. 2023): few good demonstrations beat many mediocre ones bought with the same units."""
    key = "curated"
    text = (
        "A few curated demonstrations beat many mediocre ones at equal cost (LIMA): SFT on the best "
        "demonstrator at the highest price per demonstration vs the worst at the lowest."
    )
    sft, q, c = roles.imitation, Column.DEMONSTRATOR_QUALITY, Column.COST_RATIO
    if not sft or q not in results or c not in results:
        return missing(
            key, text, "needs SFT with a sweep of demonstrator quality and of a demonstration's cost"
        )
    rows = results[(results["arm"] == sft) & (results["split"] == "id")]
    qualities, costs = sweep_values(rows, q), sweep_values(rows, c)
    if len(qualities) < 2 or len(costs) < 2:
        return missing(key, text, "needs at least two demonstrator qualities and two demonstration costs")
    pins = {"curated": {q: qualities[-1], c: costs[-1]}, "mediocre": {q: qualities[0], c: costs[0]}}
    budgets = sweep_values(rows, Column.BUDGET)
    if budgets:  # at one budget: the largest, where both buy the most
        pins = {k: {**v, Column.BUDGET: budgets[-1]} for k, v in pins.items()}
    gold = {k: per_seed(results, sft, "gold_reward", **v) for k, v in pins.items()}
    counts = {k: per_seed(results, sft, "n_demonstrations", **v) for k, v in pins.items()}
    d = paired_difference(gold["curated"], gold["mediocre"])
    n_cur, n_med = (np.mean(list(counts[k].values())) for k in ("curated", "mediocre"))
    evidence = (
        f"{sft}: {n_cur:.0f} demonstrations of quality {qualities[-1]:g} "
        f"at {costs[-1]:g} units vs {n_med:.0f} of quality "
        f"{qualities[0]:g} at {costs[0]:g}; " + diff_text(d, "curated", "mediocre", "ID gold")
    )
    read = reading(d, f"{sft} on {n_cur:.0f} curated demonstrations scores", "more ID gold than",
                   "less ID gold than", f"on {n_med:.0f} mediocre ones")  # fmt: skip
    return single(key, text, d, read, evidence, f"SFT, here: {sft}")
