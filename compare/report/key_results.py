"""The report's first section: what was found, in plain sentences generated from the numbers.

Which policies beat which on ID gold (seed-paired, Holm-corrected over the comparisons made), what each
paid in KL and well-formedness, which claims were decided and which way, and the gold reward's scale
(the base model, the demonstrator, the best possible completion, the oracle arm where there is one).
"""

from __future__ import annotations

import math

import pandas as pd

from compare.metrics import mean_ci
from compare.report.roles import Roles
from compare.report.series import policy_groups
from compare.report.stats import Difference, holm, paired_difference
from compare.report.verdicts import CONTRADICTED, LEVEL, NOT_MEASURED, SUPPORTED, Claim

FEW_SEEDS = 5  # below this many seeds per cell, say that little can be decided


# the gold scale's levels and how the report names them (charts and tables print the short names)
SCALE_NAMES = {"base": "base model", "demonstrator": "demonstrator", "ceiling": "best possible",
               "oracle": "oracle arm"}  # fmt: skip


def gold_scale(results: pd.DataFrame, roles: Roles) -> dict[str, float]:
    """The reference levels of the gold reward on ID prompts: {"base", "demonstrator", "ceiling",
    "oracle"}, each present only when known."""
    levels = {}
    ids = results[results["split"] == "id"]
    if roles.base and not ids[ids["arm"] == roles.base].empty:
        levels["base"] = float(ids.loc[ids["arm"] == roles.base, "gold_reward"].mean())
    if "demonstrator_gold" in ids and ids["demonstrator_gold"].notna().any():
        levels["demonstrator"] = float(ids["demonstrator_gold"].dropna().mean())
    if roles.gold_ceiling is not None:
        levels["ceiling"] = float(roles.gold_ceiling)
    oracle_rows = ids[ids["arm"].isin(roles.gold_optimisers)]
    if not oracle_rows.empty:
        levels["oracle"] = float(oracle_rows["gold_reward"].mean())
    return levels


def _per_seed(rows: pd.DataFrame, metric: str = "gold_reward", split: str = "id") -> dict[int, float]:
    rows = rows[rows["split"] == split].dropna(subset=[metric])
    return rows.groupby("seed")[metric].mean().to_dict()


def gold_comparisons(results: pd.DataFrame, roles: Roles) -> list[tuple[str, str, Difference, float]]:
    """Every policy (best-of-n by n) against the reference arm (SFT, else the base model) and against the
    base model on ID gold, paired by seed: (policy, against, difference, Holm-adjusted p over them all)."""
    groups = policy_groups(results, roles)
    refs = [r for r in dict.fromkeys([roles.imitation, roles.base]) if r]
    ref_gold = {r: _per_seed(results[results["arm"] == r]) for r in refs}
    pairs = []
    for label, arm, rows in groups:
        for ref in refs:
            if arm == ref or roles.is_oracle(arm):
                continue
            pairs.append((label, ref, paired_difference(_per_seed(rows), ref_gold[ref])))
    adjusted = holm([d.p_value for _, _, d in pairs])
    return [(label, ref, d, p) for (label, ref, d), p in zip(pairs, adjusted)]


def key_results(
    results: pd.DataFrame, roles: Roles, claims: list[Claim], findings: str = "", beside: str = ""
) -> list[str]:
    """The section's markdown lines; `beside`: the line on the tiny world's findings that hold here, when
    the suite sets `beside_findings` (`beside.beside_key_result`)."""
    lines = ["## Key results", ""]
    seeds = results["seed"].nunique()
    scale = gold_scale(results, roles)
    named = {"base": f"the base model ({roles.base})", "demonstrator": "the demonstrator",
             "ceiling": "the best possible completion", "oracle": "the oracle arm (PPO on the gold reward)"}  # fmt: skip
    if scale:
        parts = [f"{named[k]} {v:.2f}" for k, v in scale.items()]
        lines.append(f"- **Gold reward scale** (ID prompts, mean over seeds): {'; '.join(parts)}.")
    comparisons = gold_comparisons(results, roles)
    m = len(comparisons)
    for ref in dict.fromkeys(ref for _, ref, _, _ in comparisons):
        mine = [(label, d, p) for label, r, d, p in comparisons if r == ref]
        above = [(label, d) for label, d, p in mine if d.mean > 0 and p < LEVEL]
        below = [(label, d) for label, d, p in mine if d.mean < 0 and p < LEVEL]
        if above:
            lines.append(f"- **Beat {ref} on ID gold** (seed-paired, Holm-corrected over {m} comparisons): "
                         + ", ".join(f"{label} ({_signed(d)})" for label, d in above) + ".")  # fmt: skip
        if below:
            lines.append(f"- **Below {ref} on ID gold** (corrected): "
                         + ", ".join(f"{label} ({_signed(d)})" for label, d in below) + ".")  # fmt: skip
        only = [(label, d) for label, d, p in mine if d.significant and not p < LEVEL]
        if only:
            lines.append(f"- Significant against {ref} before the correction only (a lead, not a finding): "
                         + ", ".join(f"{label} ({_signed(d)})" for label, d in only) + ".")  # fmt: skip
        if not above and not below and mine:
            lines.append(f"- **No policy differs significantly from {ref} on ID gold** after the correction "
                         f"over {m} comparisons, at {seeds} seed{'s' if seeds != 1 else ''} per cell.")  # fmt: skip
    paid = _what_each_paid(results, roles)
    if paid:
        lines.append("- **What each paid** (ID, mean over seeds; KL to the base in nats / share of "
                     "well-formed completions): " + "; ".join(paid) + ".")  # fmt: skip
    lines.append(_claims_line(claims))
    if beside:
        lines.append(beside)
    if seeds < FEW_SEEDS:
        where = f" {findings}" if findings else ""
        lines.append(
            f"- With {seeds} seed{'s' if seeds != 1 else ''} per cell, small differences cannot be decided and "
            f"exact numbers differ across CPUs (floating-point kernels): this run shows the mechanics; the "
            f"findings come from suites with a discovery and a confirmation half of the seeds{where}."
        )
    return lines + [""]


def _signed(d: Difference) -> str:
    return f"{d.mean:+.2f} ± {d.half_width:.2f}"


def _what_each_paid(results: pd.DataFrame, roles: Roles) -> list[str]:
    """ "label KL / well-formed" per policy, ID prompts, mean over seeds (a KL below 0 from sampling noise
    shown as 0)."""
    out = []
    for label, arm, rows in policy_groups(results, roles):
        ids = rows[rows["split"] == "id"]
        kl = mean_ci(list(ids["kl_to_base"].dropna()))[0]
        wf = float(ids["well_formed"].mean()) if "well_formed" in ids else math.nan
        kl_text = "–" if roles.is_base(arm) or math.isnan(kl) else f"{max(kl, 0.0):.2f}"
        out.append(f"{label} {kl_text} / {'–' if math.isnan(wf) else f'{wf:.2f}'}")
    return out


def _claims_line(claims: list[Claim]) -> str:
    supported = [c for c in claims if c.corrected == SUPPORTED]
    contradicted = [c for c in claims if c.corrected == CONTRADICTED]
    measured = [c for c in claims if c.verdict != NOT_MEASURED]
    lost = [c for c in claims if c.decided and c.corrected not in (SUPPORTED, CONTRADICTED)]
    text = (
        f"- **Claims** ({len(measured)} of {len(claims)} measured here; verdicts after Holm's correction): "
    )
    if supported or contradicted:
        text += "; ".join(
            [f"supported: {', '.join(_label(c) for c in supported)}"] * bool(supported)
            + [f"contradicted: {', '.join(_label(c) for c in contradicted)}"] * bool(contradicted)
        )
    else:
        text += "none decided"
    if lost:
        text += f"; {len(lost)} more significant before the correction only ({', '.join(_label(c) for c in lost)})"
    return text + ". The claims table below reads each one."


def _label(claim: Claim) -> str:
    return claim.short + (f" [{claim.arm}]" if claim.arm else "")
