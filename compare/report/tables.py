"""The report's markdown tables: the main results, what each arm got, reward models, differences from
the reference arm, example generations; and the cell formatting they share.
"""

from __future__ import annotations

import math

import pandas as pd

from compare.metrics import mean_ci
from compare.plan import arm_budget, default_share
from compare.report.roles import Column, Roles
from compare.report.series import fmt, per_seed
from compare.report.stats import paired_difference
from compare.stages import RECIPE_STAGES
from compare.suite import Suite

SPLIT_NAMES = {
    "id": "ID",
    "ood": "OOD",
    "ood_opener": "OOD opener",
    "ood_format": "OOD format",
    "prior": "prior ability",
    "ood_reversed": "OOD reversed",
    "ood_template": "OOD template",
}
SHIFTS = {  # the named distribution shifts of a task's evaluation splits (docs/world.md)
    "ood": "unseen domains",
    "ood_opener": "an opener that pulls the other way",
    "ood_format": "a request format training never used",
    "ood_reversed": "a changed rule (operands written units first)",
    "ood_template": "a prompt template training never used",
}


def split_name(split: str) -> str:
    return SPLIT_NAMES.get(split, split)


def splits_table(results: pd.DataFrame, roles: Roles) -> str | None:
    """Gold reward of every arm on every evaluation split (mean ± 95% CI over seeds), when there are more
    than ID and OOD; and the forward KL on the training prompts that forgetting is read against."""
    order = [s for s in SPLIT_NAMES if s in set(results["split"])]
    order += sorted(set(results["split"]) - set(order))
    if len(order) <= 2:
        return None
    kl = "forward_kl_train" in results and results["forward_kl_train"].notna().any()
    header = ["arm", *(f"gold {split_name(s)}" for s in order)] + (["KL(base ‖ π) train"] if kl else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm in roles.names:
        rows = results[results["arm"] == arm]
        if rows.empty:
            continue
        cells = [
            f"**{roles.label(arm)}**",
            *(fmt_ci(rows.loc[rows["split"] == s, "gold_reward"]) for s in order),
        ]
        if kl:
            cells.append(fmt_ci(rows.loc[rows["split"] == "id", "forward_kl_train"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


METRICS = [  # column, heading, higher is better (None: neither)
    ("gold_reward", "gold reward", True),
    ("kl_to_base", "KL to base", None),
    ("proxy_reward", "RM score", True),
    ("distinct_2", "distinct-2", True),
    ("mean_length", "length", None),
    ("well_formed", "well-formed", True),
]

MAIN_COLUMNS = [  # (metric, split): the main table; every other number is in results.csv
    ("gold_reward", "id"),
    ("gold_reward", "ood"),
    ("kl_to_base", "id"),
    ("proxy_reward", "id"),
    ("distinct_2", "id"),
    ("well_formed", "id"),
    ("mean_length", "id"),
]


def fmt_ci(values) -> str:
    mean, half, n = mean_ci(list(values))
    if n == 0 or math.isnan(mean):
        return "–"
    return f"{mean:.3f}" if n == 1 or math.isnan(half) else f"{mean:.3f} ± {half:.3f}"


def table_cell(text: str) -> str:
    """Text that stays inside one markdown table cell: pipes escaped, line breaks shown as ⏎."""
    return " ⏎ ".join(line.strip() for line in text.replace("|", "\\|").splitlines())


def group_columns(results: pd.DataFrame) -> list[str]:
    return ["arm"] + [c for c in results.columns if c.startswith("grid.")]


def grid_heading(col: str) -> str:
    """`grid.arms.best_of_n.stages.best_of_n.n` -> `n`, `grid.budget.units` -> `units`."""
    return col.rsplit(".", 1)[-1]


def grid_cell(value) -> str:
    if pd.isna(value):
        return "–"
    return f"{value:g}" if isinstance(value, float) else str(value)


def main_table(results: pd.DataFrame, arms: list[str]) -> str:
    headings = {m: h for m, h, _ in METRICS}
    cols = [(m, s) for m, s in MAIN_COLUMNS if results[m].notna().any()]
    keys = group_columns(results)
    header = ["arm", *(grid_heading(c) for c in keys[1:]), "seeds"]
    header += [f"{headings[m]} {SPLIT_NAMES[s]}" for m, s in cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    groups = results.groupby(keys, sort=False, dropna=False)
    for key, group in sorted(groups, key=lambda kv: _arm_order(kv[0], arms)):
        key = key if isinstance(key, tuple) else (key,)
        cells = [f"**{key[0]}**", *(grid_cell(k) for k in key[1:]), str(group["seed"].nunique())]
        cells += [fmt_ci(group.loc[group["split"] == s, m]) for m, s in cols]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _arm_order(key, arms: list[str]):
    key = key if isinstance(key, tuple) else (key,)
    arm, rest = key[0], key[1:]
    numbers = tuple(float("inf") if pd.isna(v) else v for v in rest if isinstance(v, int | float))
    return (arms.index(arm) if arm in arms else len(arms), numbers, str(rest))


def data_table(suite: Suite, results: pd.DataFrame) -> str:
    """What each arm bought: demonstrations, comparisons (marked when bought on-policy, during training)
    and binary labels, and the units they cost."""
    lines = [
        "| arm | recipe | demonstration share | demonstrations | comparisons | labels | units spent |",
        "|---|---|---|---|---|---|---|",
    ]
    cost = suite.budget.cost
    for name, arm in suite.arms.items():
        rows = results[results["arm"] == name]
        if rows.empty:
            continue
        d, c = int(rows["n_demonstrations"].iloc[0]), int(rows["n_comparisons"].iloc[0])
        # results.csv of older runs has no n_labels: the allocation of the saved suite
        labels = int(rows["n_labels"].iloc[0]) if "n_labels" in rows else arm_budget(suite, arm)[2]
        recipe = " → ".join(["base", *arm.recipe])
        share = f"{default_share(arm):g}" if arm.recipe else "–"
        spent = d * cost.demonstration + c * cost.comparison + labels * cost.label
        on_policy = any(RECIPE_STAGES[k].on_policy for k in arm.recipe)
        bought = f"{c} (on-policy)" if c and on_policy else str(c)
        lines.append(f"| {name} | {recipe} | {share} | {d} | {bought} | {labels} | {spent:g} |")
    return "\n".join(lines)


def rm_table(results: pd.DataFrame) -> str | None:
    rm = results[results["rm_accuracy"].notna()]
    if rm.empty:
        return None
    lines = [
        "| arm | RM accuracy ID | RM accuracy OOD | RM score ID | gold reward ID |",
        "|---|---|---|---|---|",
    ]
    for arm, group in rm.groupby("arm", sort=False):
        cells = [fmt_ci(group.loc[group["split"] == s, "rm_accuracy"]) for s in ("id", "ood")]
        cells += [fmt_ci(group.loc[group["split"] == "id", c]) for c in ("proxy_reward", "gold_reward")]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def differences_section(results: pd.DataFrame, roles: Roles) -> list[str]:
    """Each arm against the reference arm (imitation, else the base model), paired by seed."""
    ref = roles.reference
    if ref is None:
        return []
    swept = any(c.startswith("grid.") for c in results.columns)
    keys_note = " (averaged over the swept settings)" if swept else ""
    rows = []
    for arm in roles.names:
        if arm == ref:
            continue
        cells = []
        for split in ("id", "ood"):
            d = paired_difference(
                per_seed(results, arm, "gold_reward", split), per_seed(results, ref, "gold_reward", split)
            )
            if d["n"] == 0:
                cells.append("–")
                continue
            mark = "**significant**" if d["significant"] else "not significant"
            cells.append(f"{fmt(d['mean'], d['half_width'])} ({mark})")
        rows.append(f"| {arm} − {ref} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return [
        f"### Differences from {ref}, paired by seed",
        "",
        f"Gold reward of each arm minus {ref}'s on the same seeds{keys_note}: mean ± 95% t-interval of the "
        "paired differences; significant when the interval excludes zero.",
        "",
        "| difference | gold ID | gold OOD |",
        "|---|---|---|",
        *rows,
        "",
    ]


def efficiency(suite: Suite, results: pd.DataFrame, roles: Roles, arm: str) -> tuple[dict, dict]:
    """({seed: ID gold gained over the base per 100 units spent}, {seed: ... per nat of KL to the base}),
    each gain paired with the base model's gold on the same seed; an arm that spent nothing (a verifier)
    or moved no KL has no value there."""
    base = per_seed(results, roles.base, "gold_reward")
    rows = results[(results["arm"] == arm) & (results["split"] == "id")]
    cost = suite.budget.cost
    labels = rows["n_labels"] if "n_labels" in rows else arm_budget(suite, suite.arms[arm])[2]
    units = rows["n_demonstrations"] * cost.demonstration + rows["n_comparisons"] * cost.comparison
    per_unit, per_nat = {}, {}
    for seed, group in rows.assign(units=units + labels * cost.label).groupby("seed"):
        if seed not in base:
            continue
        gain = group["gold_reward"].mean() - base[seed]
        spent, kl = group["units"].mean(), group["kl_to_base"].mean()
        if spent > 0:
            per_unit[seed] = 100 * gain / spent
        if kl > 1e-6:
            per_nat[seed] = gain / kl
    return per_unit, per_nat


def efficiency_section(suite: Suite, results: pd.DataFrame, roles: Roles) -> list[str]:
    """Which arm buys the most gold per annotation unit, and per nat of KL: each arm's gain over the base
    model (paired by seed), the best arm of each, and whether it beats the runner-up on paired seeds."""
    if roles.base is None:
        return []
    arms = [a for a in roles.names if a != roles.base and not roles.is_oracle(a) and a in set(results["arm"])]
    found = {arm: efficiency(suite, results, roles, arm) for arm in arms}
    if not found:
        return []
    lines = [
        "### Gold per annotation unit and per nat of KL",
        "",
        f"ID gold reward gained over {roles.base} (same seed), per 100 annotation units the arm spent and per "
        "nat of its KL to the base: mean ± 95% t-interval over seeds. An arm that spends no units (a "
        "verifier) has no value per unit.",
        "",
        "| arm | gold gain per 100 units | gold gain per nat of KL |",
        "|---|---|---|",
    ]
    lines += [f"| {arm} | {fmt_ci(u.values())} | {fmt_ci(k.values())} |" for arm, (u, k) in found.items()]
    lines.append("")
    for i, what in enumerate(("per 100 units", "per nat of KL")):
        ranked = sorted(
            (a for a in found if found[a][i]),
            key=lambda a: mean_ci(list(found[a][i].values()))[0],
            reverse=True,
        )
        if len(ranked) < 2:
            continue
        best, second = ranked[:2]
        d = paired_difference(found[best][i], found[second][i])
        if d["n"] == 0:
            continue
        mark = "**significant**" if d["significant"] else "not significant"
        lines.append(
            f"- Most gold {what}: **{best}** ({fmt_ci(found[best][i].values())}); ahead of {second} by "
            f"{fmt(d['mean'], d['half_width'])} over {d['n']} paired seeds ({mark})."
        )
    return lines + [""]


def examples_section(samples: pd.DataFrame, arms: list[str], per_arm: int) -> str:
    if samples.empty or per_arm == 0:
        return ""
    seed = samples["seed"].min()
    parts = []
    for split in ("id", "ood"):
        sub = samples[
            (samples["seed"] == seed) & (samples["split"] == split) & (samples["prompt_index"] == 0)
        ]
        if sub.empty:
            continue
        parts.append(f"**{SPLIT_NAMES[split]} prompt:** `{sub['prompt'].iloc[0]}`\n")
        parts.append("| arm | completion | gold |\n|---|---|---|")
        for arm in arms:
            rows = sub[sub["arm"] == arm].head(per_arm)
            if Column.BUDGET in rows:
                rows = rows[rows[Column.BUDGET] == rows[Column.BUDGET].max()]
            for _, r in rows.iterrows():
                text = table_cell(str(r["completion"]).strip()) or "(empty)"
                parts.append(f"| {arm} | {text} | {r['gold_reward']:.2f} |")
        parts.append("")
    return "\n".join(parts)
