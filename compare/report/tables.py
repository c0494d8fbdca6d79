"""The report's markdown tables: the main results, what each arm got, reward models, differences from
the reference arm, example generations; and the cell formatting they share.
"""

from __future__ import annotations

import math

import pandas as pd

from compare.metrics import mean_ci
from compare.plan import arm_budget, default_share
from compare.report.roles import Column, Roles
from compare.report.series import fmt, num, per_seed, policy_groups
from compare.report.stats import paired_difference
from compare.stages import DATA_KINDS, RECIPE_STAGES
from compare.suite import Suite


def splits_table(results: pd.DataFrame, roles: Roles) -> str | None:
    """Gold reward of every policy on every evaluation split (mean ± 95% CI over seeds), when there are
    more than ID and OOD; and the forward KL on the training prompts that forgetting is read against."""
    order = roles.split_order(results["split"])
    if len(order) <= 2:
        return None
    kl = "forward_kl_train" in results and results["forward_kl_train"].notna().any()
    header = ["arm", *(f"gold {roles.split_label(s)}" for s in order)] + (
        ["KL(base ‖ π) train"] if kl else []
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, _, rows in policy_groups(results, roles):
        cells = [f"**{label}**", *(fmt_ci(rows.loc[rows["split"] == s, "gold_reward"]) for s in order)]
        if kl:
            cells.append(fmt_ci(rows.loc[rows["split"] == "id", "forward_kl_train"], nonnegative=True))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


METRICS = [  # column, heading, higher is better (None: neither)
    ("gold_reward", "gold reward", True),
    ("kl_to_base", "KL to base", None),
    ("proxy_reward", "RM score", True),
    ("distinct_2", "distinct-2", True),
    ("mean_length", "length", None),
    ("well_formed", "well-formed", True),
    ("compute_flops", "training FLOP", None),
    ("compute_seconds", "training s", None),
]

MAIN_COLUMNS = [  # (metric, split): the main table; every other number is in results.csv
    ("gold_reward", "id"),
    ("gold_reward", "ood"),
    ("kl_to_base", "id"),
    ("proxy_reward", "id"),
    ("distinct_2", "id"),
    ("well_formed", "id"),
    ("mean_length", "id"),
    # FLOPs and seconds of every stage after the base model, shared ones whole (compare/compute.py)
    ("compute_flops", "id"),
    ("compute_seconds", "id"),
]


PER_RUN = {
    "compute_flops",
    "compute_seconds",
}  # one value per run, the same on each split's row: no split in its heading
NONNEGATIVE = {
    "compute_flops",
    "compute_seconds",
    "kl_to_base",
    "forward_kl_train",
    "distinct_2",
    "mean_length",
    "well_formed",
    "rm_accuracy",
}


def fmt_ci(values, nonnegative: bool = False) -> str:
    """Mean ± 95% t-half-width; for a quantity that cannot be negative (a KL, a share, a length) whose
    interval would reach below 0, the interval itself, clipped at 0: "0.137 (0.000 to 0.280)"."""
    mean, half, n = mean_ci([v for v in values if not (isinstance(v, float) and math.isinf(v))])
    if n == 0 or math.isnan(mean):
        return "–"
    if n == 1 or math.isnan(half):
        return num(mean)
    if nonnegative and mean - half < 0:
        return f"{num(mean)} ({max(0.0, mean - half):.3f} to {num(mean + half)})"
    return f"{num(mean)} ± {half:.3f}"


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


def flop_unit(flops: pd.Series) -> tuple[float, str]:
    """(unit, its prefix) that writes the largest of `flops` with 1 to 3 digits before the point:
    (1e9, "G") for 5e10 FLOPs; a tiny model's post-training takes megaflops, a 100M model's petaflops."""
    largest = flops.abs().max()
    for unit, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if largest >= unit:
            return unit, prefix
    return 1.0, ""


def main_table(results: pd.DataFrame, roles: Roles) -> str:
    """The policies (no reward model alone) by grid point: mean ± 95% interval over seeds."""
    arms = roles.policies
    headings = {m: h for m, h, _ in METRICS}
    cols = [(m, s) for m, s in MAIN_COLUMNS if m in results and results[m].notna().any()]
    keys = group_columns(results)
    header = ["arm", *(grid_heading(c) for c in keys[1:]), "seeds"]
    unit, prefix = flop_unit(results["compute_flops"]) if "compute_flops" in results else (1.0, "")
    headings["compute_flops"] = f"training {prefix}FLOP"
    header += [headings[m] if m in PER_RUN else f"{headings[m]} {roles.split_label(s)}" for m, s in cols]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    groups = results.groupby(keys, sort=False, dropna=False)
    for key, group in sorted(groups, key=lambda kv: _arm_order(kv[0], arms)):
        key = key if isinstance(key, tuple) else (key,)
        if key[0] not in arms:
            continue
        cells = [f"**{key[0]}**", *(grid_cell(k) for k in key[1:]), str(group["seed"].nunique())]
        cells += [
            fmt_ci(
                group.loc[group["split"] == s, m] / (unit if m == "compute_flops" else 1.0), m in NONNEGATIVE
            )
            for m, s in cols
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _arm_order(key, arms: list[str]):
    key = key if isinstance(key, tuple) else (key,)
    arm, rest = key[0], key[1:]
    numbers = tuple(float("inf") if pd.isna(v) else v for v in rest if isinstance(v, int | float))
    return (arms.index(arm) if arm in arms else len(arms), numbers, str(rest))


def bought(suite: Suite, rows: pd.DataFrame, arm: str) -> dict:
    """{kind of feedback: how many the arm bought}, a column per row of `rows` (one arm's results), read
    from results.csv; a kind that an older results.csv has no column for: the saved suite's allocation."""
    allocation = arm_budget(suite, suite.arms[arm])
    return {
        name: rows[kind.column] if kind.column in rows else allocation[name]
        for name, kind in DATA_KINDS.items()
    }


def units_spent(suite: Suite, counts: dict):
    """Annotation units spent on `counts` of each kind of feedback, at the suite's cost model."""
    cost = suite.budget.cost
    return sum(n * getattr(cost, DATA_KINDS[name].cost) for name, n in counts.items())


def data_table(suite: Suite, results: pd.DataFrame) -> str:
    """What each arm bought of each kind of feedback (marked when bought on-policy, during training) and
    the units it cost."""
    header = ["arm", "recipe", "demonstration share", *DATA_KINDS, "units spent"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, arm in suite.arms.items():
        rows = results[results["arm"] == name]
        if rows.empty:
            continue
        counts = {
            kind: int(n.iloc[0]) if isinstance(n, pd.Series) else n
            for kind, n in bought(suite, rows, name).items()
        }
        # a stage that learns from a teacher (distillation) names it: that policy is part of what it got
        steps = [
            f"{k} (teacher: {RECIPE_STAGES[k].teacher})" if RECIPE_STAGES[k].teacher else k
            for k in arm.recipe
        ]
        recipe = " → ".join(["base", *steps])
        share = f"{default_share(arm):g}" if arm.recipe else "–"
        on_policy = {RECIPE_STAGES[k].data.name for k in arm.recipe if RECIPE_STAGES[k].on_policy}
        cells = [f"{n} (on-policy)" if n and kind in on_policy else str(n) for kind, n in counts.items()]
        spent = units_spent(suite, counts)
        lines.append(f"| {name} | {recipe} | {share} | " + " | ".join(cells) + f" | {spent:g} |")
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
        cells = [fmt_ci(group.loc[group["split"] == s, "rm_accuracy"], True) for s in ("id", "ood")]
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
    for arm in roles.policies:
        if arm == ref:
            continue
        cells = []
        for split in ("id", "ood"):
            d = paired_difference(
                per_seed(results, arm, "gold_reward", split), per_seed(results, ref, "gold_reward", split)
            )
            if d.n == 0:
                cells.append("–")
                continue
            mark = "**significant**" if d.significant else "not significant"
            cells.append(f"{fmt(d.mean, d.half_width)} ({mark}, p = {d.p_value:.2g})")
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


def efficiency(suite: Suite, results: pd.DataFrame, roles: Roles, arm: str) -> dict[int, float]:
    """{seed: ID gold gained over the base per 100 units spent}, each gain paired with the base model's
    gold on the same seed; an arm that spent nothing (a verifier) has no value."""
    base = per_seed(results, roles.base, "gold_reward")
    rows = results[(results["arm"] == arm) & (results["split"] == "id")]
    units = units_spent(suite, bought(suite, rows, arm))
    per_unit = {}
    for seed, group in rows.assign(units=units).groupby("seed"):
        if seed not in base:
            continue
        gain = group["gold_reward"].mean() - base[seed]
        spent = group["units"].mean()
        if spent > 0:
            per_unit[seed] = 100 * gain / spent
    return per_unit


def efficiency_section(suite: Suite, results: pd.DataFrame, roles: Roles) -> list[str]:
    """Gold gained per annotation unit, each arm's gain over the base model paired by seed. No ranking
    by gold per nat of KL: it favours whichever arm moved less whenever gold is concave in KL
    (docs/claims.md); KL-efficiency is compared at equal KL in the claims."""
    if roles.base is None:
        return []
    arms = [
        a for a in roles.policies if a != roles.base and not roles.is_oracle(a) and a in set(results["arm"])
    ]
    found = {arm: efficiency(suite, results, roles, arm) for arm in arms}
    found = {arm: u for arm, u in found.items() if u}
    if not found:
        return []
    lines = [
        "### Gold per annotation unit",
        "",
        f"ID gold reward gained over {roles.base} (same seed) per 100 annotation units the arm spent: mean ± "
        "95% t-interval over seeds. Arms that spend no units (a verifier) are left out. Which method buys "
        "more gold per nat of KL is compared at equal KL in the claims, not by a ratio.",
        "",
        "| arm | gold gain per 100 units |",
        "|---|---|",
    ]
    lines += [f"| {arm} | {fmt_ci(u.values())} |" for arm, u in found.items()]
    return lines + [""]


def examples_section(samples: pd.DataFrame, roles: Roles, per_arm: int) -> str:
    arms = roles.names
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
        parts.append(f"**{roles.split_label(split)} prompt:** `{sub['prompt'].iloc[0]}`\n")
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
