"""The report's markdown tables: the main results, what each arm got, reward models, differences from
the reference arm, example generations; and the cell formatting they share.
"""

from __future__ import annotations

import math

import pandas as pd

from compare.metrics import mean_ci
from compare.plan import default_share
from compare.report.roles import Column, Roles
from compare.report.series import fmt, per_seed
from compare.report.stats import paired_difference
from compare.suite import Suite

SPLIT_NAMES = {"id": "ID", "ood": "OOD"}

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
    lines = [
        "| arm | recipe | demonstration share | demonstrations | comparisons | units spent |",
        "|---|---|---|---|---|---|",
    ]
    cost = suite.budget.cost
    for name, arm in suite.arms.items():
        rows = results[results["arm"] == name]
        if rows.empty:
            continue
        d, c = int(rows["n_demonstrations"].iloc[0]), int(rows["n_comparisons"].iloc[0])
        recipe = " → ".join(["base", *arm.recipe])
        share = f"{default_share(arm):g}" if arm.recipe else "–"
        spent = d * cost.demonstration + c * cost.comparison
        lines.append(f"| {name} | {recipe} | {share} | {d} | {c} | {spent:g} |")
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
