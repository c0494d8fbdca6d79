"""Figures of the report (matplotlib, PNG). Each function reads saved results and writes one file.

A figure function returns the path it wrote, or None when the suite has no data for it (e.g. no budget
sweep, no online-RL arm), so the report shows only the figures its runs support. Figures are built on
`matplotlib.figure.Figure` and saved directly: no pyplot, no global backend, nothing left open.
Arms are drawn by role (`Roles`): oracle bounds dashed and labelled as such.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.ticker
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

import compare.report.pass_at_k as pass_at_k
import compare.report.preference_diagnostics as preference_diagnostics
from compare.metrics import mean_ci
from compare.report.canvas import panels
from compare.report.canvas import save as _save
from compare.report.key_results import SCALE_NAMES, gold_scale
from compare.report.roles import Column, Roles
from compare.report.series import (
    curve,
    frontier_points,
    heldout_curves,
    heldout_points,
    id_gap,
    policy_groups,
    strength_columns,
    sweep_values,
)
from compare.report.stats import crossover, fit_bon, fit_rl
from compare.stages import SPECS, Role


def objective(stage: str) -> tuple[str, str]:
    """(logged column, what it is) of a training stage's own objective, from its spec."""
    spec = SPECS.get(stage)
    return spec.objective if spec is not None and spec.objective else ("loss", stage)


def log_axis(ax, ticks: list[float]) -> None:
    """A log x axis labelled with the swept values themselves (32, 64, ...) rather than powers of ten."""
    ax.set_xscale("log")
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())


def _arm_means(results: pd.DataFrame, arms: list[str], metric: str, split: str):
    rows = []
    for arm in arms:
        vals = results.loc[(results["arm"] == arm) & (results["split"] == split), metric]
        mean, half, n = mean_ci(list(vals))
        rows.append((arm, mean, 0.0 if math.isnan(half) else half, n))
    return rows


def _group_means(groups, metric: str, split: str = "id"):
    """(label, mean, half-width) of `metric` on `split` for each policy group (`series.policy_groups`)."""
    out = []
    for label, _, rows in groups:
        mean, half, _ = mean_ci(list(rows.loc[rows["split"] == split, metric].dropna()))
        out.append((label, mean, 0.0 if math.isnan(half) else half))
    return out


def _clipped(mean: float, half: float) -> list[list[float]]:
    """An error bar for a quantity that cannot be negative: the lower arm stops at 0."""
    return [[min(half, max(mean, 0.0))], [half]]


REFERENCE_STYLE = {"base": ":", "demonstrator": "--", "ceiling": "-."}  # the gold scale's lines


LABEL_GAP = 0.06  # the least distance between two reference lines' labels, in fractions of the axis height


def reference_lines(ax, scale: dict[str, float], horizontal: bool = True) -> None:
    """The gold reward's scale drawn across a chart: the base model, the demonstrator, the best possible
    completion (`key_results.gold_scale`), each labelled at the right edge; labels of lines closer than
    `LABEL_GAP` are moved apart (upwards, in the lines' order) so that none is written over another."""
    drawn = [(scale[key], key) for key in REFERENCE_STYLE if key in scale]
    for value, key in drawn:
        ax.axhline(value, color="grey", linestyle=REFERENCE_STYLE[key], linewidth=0.9, zorder=0)
    low, high = ax.get_ylim()  # the lines are drawn: the limits hold them
    placed = -math.inf
    for value, key in sorted(drawn):
        placed = max((value - low) / (high - low), placed + LABEL_GAP)
        ax.annotate(f"{SCALE_NAMES[key]} {value:.2f}", (1.0, placed), xycoords="axes fraction",
                    xytext=(3, 0), textcoords="offset points", fontsize="small", va="center", color="dimgrey")  # fmt: skip


def _legend_outside(ax, **kwargs) -> None:
    """The legend below the axes, never over the data or the reference lines' labels."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=min(4, len(handles)),
                  fontsize="small", frameon=False, **kwargs)  # fmt: skip


def gold_by_split(results: pd.DataFrame, roles: Roles, path: Path, scale: dict | None = None) -> Path:
    groups = policy_groups(results, roles)
    labels = [label for label, _, _ in groups]
    fig = Figure(figsize=(max(7, 0.9 * len(labels) + 3.5), 4.2))
    ax = fig.subplots()
    width = 0.38
    for j, split in enumerate(("id", "ood")):
        stats = _group_means(groups, "gold_reward", split)
        xs = [i + (j - 0.5) * width for i in range(len(labels))]
        ax.bar(
            xs,
            [s[1] for s in stats],
            width,
            yerr=[s[2] for s in stats],
            capsize=3,
            label=roles.split_label(split),
        )
    ax.set_xticks(range(len(labels)), labels, rotation=25, ha="right")
    ax.axhline(0, color="black", linewidth=0.6)
    reference_lines(ax, scale or {})
    ax.set_ylabel("gold reward (mean ± 95% CI over seeds)")
    ax.set_title("Gold reward per policy: in-distribution vs out-of-distribution prompts")
    _legend_outside(ax, title="eval prompts")
    return _save(fig, path)


ORACLE_SHADES = ("black", "dimgray", "darkgray")


def arm_style(roles: Roles, arm: str, i: int) -> tuple[str, str]:
    """(colour, marker) of the `i`-th arm in a figure: oracle bounds square, the first black, others grey
    (a suite may have several: PPO on gold and the student distilled from it); other arms round, C{i}."""
    if roles.is_oracle(arm):
        return ORACLE_SHADES[roles.oracles.index(arm) % len(ORACLE_SHADES)], "s"
    return f"C{i % 10}", "o"


def gold_vs_kl(results: pd.DataFrame, roles: Roles, path: Path, scale: dict | None = None) -> Path:
    fig = Figure(figsize=(8.0, 4.8))
    ax = fig.subplots()
    groups = policy_groups(results, roles)
    gold, kl = _group_means(groups, "gold_reward"), _group_means(groups, "kl_to_base")
    for i, ((label, g, gh), (_, k, kh), (_, arm, _)) in enumerate(zip(gold, kl, groups)):
        if math.isnan(g) or math.isnan(k):
            continue
        k = max(k, 0.0)
        colour, marker = arm_style(roles, arm, i)
        ax.errorbar(k, g, xerr=_clipped(k, kh), yerr=gh, fmt=marker, capsize=3, label=label, color=colour)
    reference_lines(ax, {k: v for k, v in (scale or {}).items() if k != "base"})
    ax.set_xlabel("KL(policy ‖ base), nats per completion (sampled)")
    ax.set_ylabel("gold reward (ID)")
    ax.set_title("What each policy buys with its distance from the base model")
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    return _save(fig, path)


def gold_vs_compute(
    results: pd.DataFrame, roles: Roles, path: Path, scale: dict | None = None
) -> Path | None:
    """ID gold against each run's training compute (`compute_flops`, else `compute_seconds`: every stage
    before the evaluation, shared ones whole), one point per arm and grid point: mean ± 95% interval over
    seeds on both axes."""
    column = next(
        (c for c in ("compute_flops", "compute_seconds") if c in results and results[c].notna().any()), None
    )
    if column is None:
        return None
    from compare.report.tables import flop_unit

    unit, prefix = flop_unit(results[column]) if column == "compute_flops" else (1.0, "")
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    colours = {arm: f"C{i % 10}" for i, arm in enumerate(roles.policies)}  # as in the other charts
    for label, arm, rows in policy_groups(results, roles):
        ids = rows[rows["split"] == "id"]
        x, xh, _ = mean_ci((ids.groupby("seed")[column].mean() / unit).tolist())
        y, yh, n = mean_ci(ids.groupby("seed")["gold_reward"].mean().tolist())
        if not n or math.isnan(x) or x <= 0:  # the base model: nothing after itself
            continue
        xh = 0.0 if math.isnan(xh) else xh
        ax.errorbar([x], [y], xerr=[[min(xh, 0.9 * x)], [xh]], yerr=0.0 if math.isnan(yh) else yh,
                    fmt="s" if roles.is_oracle(arm) else "o", capsize=3, label=label, color=colours[arm])  # fmt: skip
    reference_lines(ax, scale or {})
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    what = f"{prefix}FLOP" if column == "compute_flops" else "seconds"
    ax.set_xlabel(f"training {what} per run after the base model (shared stages whole; log)")
    ax.set_ylabel("gold reward (ID)")
    ax.set_title("Gold reward against compute (the base model, at 0, is not drawn)", fontsize="medium")
    _legend_outside(ax)
    return _save(fig, path)


def training_objectives(logs: pd.DataFrame, roles: Roles, path: Path) -> Path | None:
    """Each training stage's own objective (`spec.objective`) over its optimiser steps (mean over seeds),
    one panel per arm."""
    if logs.empty:
        return None
    arms = list(dict.fromkeys(logs["arm"]))
    fig, axes = panels(len(arms), 3.4, 2.8)
    for ax, arm in zip(axes, arms):
        for stage, group in logs[logs["arm"] == arm].groupby("stage", sort=False):
            column, name = objective(stage)
            if column not in group or group[column].isna().all():
                continue
            series = group.dropna(subset=[column]).groupby("step")[column].mean()
            ax.plot(series.index, series.values, label=name)
        ax.set_title(roles.label(arm), fontsize="medium")
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    axes[0].set_ylabel("stage objective (mean over seeds)")
    fig.suptitle("What each arm's training stages optimise", fontsize="medium")
    return _save(fig, path)


def sweep_plot(
    results, roles: Roles, col: str, xlabel: str, title: str, path: Path, log_x=False, mark_crossover=False
):
    """Gold reward (ID) against a swept setting, one line per arm, with 95% intervals; with
    `mark_crossover`, where each arm overtakes the imitation arm."""
    if len(sweep_values(results, col)) < 2:
        return None
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    curves = {}
    for arm in roles.names:
        xs, ys, hs = curve(results, arm, col)
        if len(xs) >= 2:
            curves[arm] = (xs, ys)
            ax.errorbar(xs, ys, yerr=hs, marker="o", capsize=3, label=roles.label(arm),
                        linestyle="--" if roles.is_oracle(arm) else "-")  # fmt: skip
    if not curves:
        return None
    sft = roles.imitation
    if mark_crossover and sft in curves:
        for arm, (xs, ys) in curves.items():
            if arm == sft or roles.is_base(arm) or roles.is_oracle(arm) or xs != curves[sft][0]:
                continue
            x = crossover(xs, curves[sft][1], ys)
            if not math.isnan(x) and x > xs[0]:  # ahead from the first budget: nothing to mark
                ax.axvline(x, color="grey", linestyle=":", linewidth=1)
                ax.annotate(
                    f"{arm} > {sft}", (x, ax.get_ylim()[0]), rotation=90, fontsize="small", va="bottom"
                )
    if log_x:
        log_axis(ax, sweep_values(results, col))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("gold reward, ID (mean ± 95% CI)")
    ax.set_title(title)
    _legend_outside(ax)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def learning_curves_by_cost(results, roles: Roles, path: Path) -> Path | None:
    """One panel of learning curves per demonstration cost: how the crossover moves with the cost ratio."""
    cost_col, budget_col = Column.COST_RATIO, Column.BUDGET
    costs = sweep_values(results, cost_col)
    if len(costs) < 2 or len(sweep_values(results, budget_col)) < 2:
        return None
    fig = Figure(figsize=(4 * len(costs), 3.6))
    axes = fig.subplots(1, len(costs), sharey=True, squeeze=False)
    for ax, cost in zip(axes[0], costs):
        sub = results[np.isclose(results[cost_col].astype(float), cost) | results[cost_col].isna()]
        for arm in roles.names:
            xs, ys, hs = curve(sub, arm, budget_col)
            if len(xs) >= 2:
                ax.errorbar(xs, ys, yerr=hs, marker="o", capsize=2, label=roles.label(arm))
        log_axis(ax, sweep_values(results, budget_col))
        ax.set_title(f"demonstration = {cost:g} × comparison", fontsize="medium")
        ax.set_xlabel("budget (annotation units)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("gold reward, ID")
    axes[0][0].legend(fontsize="small")
    return _save(fig, path)


def diversity_vs_gold(results: pd.DataFrame, roles: Roles, path: Path) -> Path | None:
    metric = "distinct_2_across" if "distinct_2_across" in results else "distinct_2"
    fig = Figure(figsize=(8.0, 4.4))
    ax = fig.subplots()
    groups = policy_groups(results, roles)
    gold, div = _group_means(groups, "gold_reward"), _group_means(groups, metric)
    for i, ((label, g, gh), (_, d, dh), (_, arm, _)) in enumerate(zip(gold, div, groups)):
        if not (math.isnan(g) or math.isnan(d)):
            colour, marker = arm_style(roles, arm, i)
            ax.errorbar(d, g, xerr=_clipped(d, dh), yerr=gh, fmt=marker, capsize=3, label=label, color=colour)
    ax.set_xlabel(f"{metric.replace('_', ' ')} (higher = more diverse)")
    ax.set_ylabel("gold reward (ID)")
    ax.set_title("Diversity vs quality")
    ax.grid(alpha=0.3)
    _legend_outside(ax)
    return _save(fig, path)


def frontier(results: pd.DataFrame, roles: Roles, path: Path) -> Path | None:
    """Reward–KL frontier per method across its strength sweep (DPO paper, fig. 2 left)."""
    pts = {arm: sorted(frontier_points(results, roles, arm)) for arm in roles.names}
    pts = {a: p for a, p in pts.items() if len(p) >= 2}
    if not pts:
        return None
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    for arm, p in pts.items():
        ax.plot([k for k, _ in p], [g for _, g in p], marker="o", label=roles.label(arm),
                linestyle="--" if roles.is_oracle(arm) else "-")  # fmt: skip
    ax.set_xlabel("KL(policy ‖ base), nats (sampled, ID)")
    ax.set_ylabel("gold reward (ID, mean over seeds)")
    ax.set_title("Reward–KL frontier across each method's strength sweep")
    _legend_outside(ax)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _selection_curves(results: pd.DataFrame, roles: Roles):
    """(arm, d, gold, proxy) across the strength sweep (best-of-n's n) of each arm that selects at sampling."""
    found = []
    for arm in roles.names:
        kind = roles.arms[arm]
        if kind.last is not Role.SELECTION:
            continue
        cols = strength_columns(results, roles, arm, stage=kind.recipe[-1])
        if not cols:
            continue
        rows = results[(results["arm"] == arm) & (results["split"] == "id")]
        g = rows.groupby(cols[0])[["kl_to_base", "gold_reward", "proxy_reward"]].mean().reset_index()
        d = np.sqrt(np.clip(g["kl_to_base"].to_numpy(), 0, None))
        found.append((arm, d, g["gold_reward"].to_numpy(), g["proxy_reward"].to_numpy()))
    return found


def start_gold(results: pd.DataFrame, roles: Roles, arm: str) -> float:
    """ID gold of the policy `arm`'s last stage starts from, on the evaluation prompts: the imitation
    arm's when its recipe trains on demonstrations first (an SFT start), else the base model's; nan when
    the suite has no such arm."""
    start = roles.imitation if roles.arms[arm].demonstrations else roles.base
    rows = results[(results["arm"] == start) & (results["split"] == "id")] if start else results.iloc[0:0]
    return float(rows["gold_reward"].mean()) if not rows.empty else math.nan


def overoptimisation(results: pd.DataFrame, logs: pd.DataFrame, roles: Roles, path: Path) -> Path | None:
    """Proxy and gold reward vs sqrt(KL): during online RL, and across best-of-n's n (Gao et al. 2022).

    Each gold curve is fitted to the gain over the gold of the policy the method started from, measured
    on the same prompts (online RL: its first held-out check, before any update; best-of-n: the policy it
    samples from, best-of-1), drawn from that start (d = 0) to the largest d measured; a peak is marked
    only inside the measured range."""
    curves = []
    for arm in roles.names:
        for label, rows in heldout_points(logs, arm):  # one panel per setting: never averaged together
            c = heldout_curves(logs, arm, rows)
            if len(c) >= 3:
                d = np.sqrt(np.clip(c["kl"].to_numpy(), 0, None))
                start = float(c.sort_values("step")["gold"].iloc[0])
                name = f"{roles.label(arm)} ({label})" if label else roles.label(arm)
                curves.append((name, "rl", d, c["gold"].to_numpy(), c["proxy"].to_numpy(), start))
    for arm, d, gold, proxy in _selection_curves(results, roles):
        curves.append((roles.label(arm), "bon", d, gold, proxy, start_gold(results, roles, arm)))
    if not curves:
        return None
    fig, axes = panels(len(curves), 4.8, 3.8, per_row=3)
    for ax, (arm, form, d, gold, proxy, r0) in zip(axes, curves):
        order = np.argsort(d)
        d, gold, proxy = d[order], gold[order], proxy[order]
        ax.plot(d, gold, "o", color="C0", label="gold (measured)")
        if not np.all(np.isnan(proxy)):
            ax.plot(d, proxy, "^", color="C1", label="proxy RM (measured)")
        note = ""  # what the fit says, under the title: never over the data
        if not math.isnan(r0):
            ax.plot([0.0], [r0], "D", color="C2", label="start policy's gold (d = 0)")
            fit = (fit_rl if form == "rl" else fit_bon)(d, gold, r0=r0)
            if fit.shape not in (None, "undrawn"):  # a curve only where it turns with the data
                grid = np.linspace(0.0, d.max(), 200)
                ax.plot(grid, fit.gold(grid), "-", color="C0", alpha=0.6, label="gold fit (Gao et al.)")
            if fit.shape == "peak":
                ax.axvline(fit.d_peak, color="C0", linestyle=":", linewidth=1)
            note = {
                None: "",
                "undrawn": "no fit drawn: it would turn where nothing was measured",
                "peak": f"fitted gold peaks at KL {fit.kl_peak:.2f}, inside the range measured",
                "falls": "fitted gold falls over the whole range measured",
                "rises": "fitted gold still rises at the largest KL reached",
            }[fit.shape]
        title = f"{arm}: {'during training' if form == 'rl' else 'across n'}"
        ax.set_title(title + (f"\n{note}" if note else ""), fontsize="medium")
        ax.set_xlabel("√KL to the start (nats^½)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("reward")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.suptitle("Over-optimisation: the proxy keeps rising, the gold reward need not", fontsize="medium")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize="small", bbox_to_anchor=(0.5, 0.0))
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def forgetting(results: pd.DataFrame, roles: Roles, path: Path) -> Path | None:
    """Prior ability kept vs KL(π_base ‖ π) on the training prompts, per arm (Shenfeld et al. 2025); with
    strength sweeps (experiments/forgetting.yaml) one point per setting, and a second panel against ID
    gold, where the claim compares the arms at equal gain."""
    prior_split = roles.prior
    if (
        prior_split is None
        or prior_split.name not in set(results["split"])
        or "forward_kl_train" not in results
    ):
        return None
    swept = {arm: strength_columns(results, roles, arm) for arm in roles.names}
    panels = [("forward_kl_train", "KL(base ‖ policy) on training prompts, nats (base samples)")]
    if any(swept.values()):
        panels.append(("gold_reward", "gold reward on ID prompts (the gain)"))
    fig = Figure(figsize=(6.5 * len(panels), 4.5))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (x, label) in zip(axes, panels):
        for i, arm in enumerate(roles.policies):
            color = arm_style(roles, arm, i)[0]  # one colour per arm in both panels
            rows = results[results["arm"] == arm]
            at_id, prior = rows[rows["split"] == "id"], rows[rows["split"] == prior_split.name]
            if prior.empty or at_id[x].isna().all():
                continue
            keys = swept[arm]
            if keys:  # one point per strength setting, seed means, in the setting's order
                xs = at_id.groupby(keys)[x].mean()
                ys = prior.groupby(keys)["gold_reward"].mean().loc[xs.index]
                swept_label = f"{roles.label(arm)} ({keys[0].rsplit('.', 1)[-1]})"
                ax.plot(xs.values, ys.values, "o-", color=color, label=swept_label)
                for setting, xv, yv in zip(xs.index, xs.values, ys.values):
                    ax.annotate(
                        f"{setting:g}", (xv, yv), textcoords="offset points", xytext=(5, 3), fontsize="small"
                    )
                continue
            g, gh, n = mean_ci(list(prior["gold_reward"]))
            k, kh, _ = mean_ci(list(at_id[x].dropna()))
            if n == 0 or math.isnan(k):
                continue
            ax.errorbar(
                k, g, xerr=_clipped(k, 0.0 if math.isnan(kh) else kh) if x != "gold_reward" else (0.0 if math.isnan(kh) else kh),
                yerr=0.0 if math.isnan(gh) else gh,
                fmt="s" if roles.is_oracle(arm) else "o", capsize=3, color=color, label=roles.label(arm),
            )  # fmt: skip
        ax.set_xlabel(label)
        ax.set_ylabel(f"prior ability kept ({prior_split.description}, gold)")
        ax.grid(alpha=0.3)
    _legend_outside(axes[-1])
    fig.suptitle("Forgetting: what each arm kept of an ability no stage trained")
    return _save(fig, path)


def labeller_bias(results: pd.DataFrame, roles: Roles, path: Path) -> Path | None:
    """Gold vs KL of each arm at each level of a swept labeller bias (or noise): where does gold peak?"""
    column = next(
        (
            c
            for c in (Column.LENGTH_BIAS, Column.STYLE_BIAS, Column.LABEL_NOISE)
            if c in results and results[c].nunique() > 1
        ),
        None,
    )
    if column is None:
        return None
    arms = [a for a in roles.names if not roles.is_base(a) and not roles.is_oracle(a)]
    levels = sorted(results[column].dropna().unique().tolist())
    fig, axes = panels(len(levels), 4.0, 3.4, sharey=True)
    for ax, level in zip(axes, levels):
        at = results[np.isclose(results[column].astype(float), float(level)) | results[column].isna()]
        for arm in arms:
            rows = at[(at["arm"] == arm) & (at["split"] == "id")]
            if rows.empty:
                continue
            points = rows.groupby([c for c in roles.strength_columns(arm, rows.columns)] or ["arm"])[
                ["kl_to_base", "gold_reward"]
            ].mean()
            points = points.sort_values("kl_to_base")
            ax.plot(points["kl_to_base"], points["gold_reward"], marker="o", label=arm)
        ax.set_title(f"{column.rsplit('.', 1)[-1]} = {level:g}", fontsize="medium")
        ax.set_xlabel("KL to base (ID)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("gold reward (ID)")
    axes[0].legend(fontsize="small")
    fig.suptitle("Gold reward vs KL at each level of the labellers' bias")
    return _save(fig, path)


def shift_gaps(results: pd.DataFrame, roles: Roles, path: Path) -> Path | None:
    """Each policy's ID − shift gold gap on every named shift of the task (mean ± 95% t-interval of the
    per-seed gaps): what the OOD and shift claims compare; a smaller gap holds up better."""
    shifts = [s for s in roles.shifts if s in set(results["split"])]
    groups = [g for g in policy_groups(results, roles) if not roles.is_base(g[1])]
    if not shifts or not groups:
        return None
    fig = Figure(figsize=(max(7, 0.9 * len(groups) + 3), 4.2))
    ax = fig.subplots()
    width = 0.8 / len(shifts)
    for j, split in enumerate(shifts):
        means, halves = [], []
        for _, arm, rows in groups:
            mean, half, _ = mean_ci(list(id_gap(rows, arm, split).values()))
            means.append(mean)
            halves.append(0.0 if math.isnan(half) else half)
        xs = [i + (j - (len(shifts) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, means, width, yerr=halves, capsize=2, label=f"ID − {roles.split_label(split)}")
    ax.set_xticks(range(len(groups)), [label for label, _, _ in groups], rotation=25, ha="right")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("ID − shift gold gap (mean ± 95% CI)")
    ax.set_title("How much gold each policy loses under each named shift (smaller holds up better)")
    _legend_outside(ax)
    return _save(fig, path)


def report_figures(
    results: pd.DataFrame,
    logs: pd.DataFrame,
    roles: Roles,
    out: Path,
    ext: str = ".png",
) -> dict:
    """Every figure of the report, by axis: {axis: [(title, path or None)]}; a figure without data is None.
    `ext`: the file type (".png" for the pages; ".svg" or ".pdf" for `slide_figures`)."""
    scale = gold_scale(results, roles)  # drawn on the gold charts
    return {
        "objective": [
            ("Gold reward vs KL to the base model (ID prompts)", gold_vs_kl(results, roles, out / f"gold_vs_kl{ext}", scale)),
            ("What each stage optimises", training_objectives(logs, roles, out / f"training{ext}")),
            ("Gold reward against compute", gold_vs_compute(results, roles, out / f"gold_vs_compute{ext}", scale)),
            ("Reward–KL frontier", frontier(results, roles, out / f"frontier{ext}")),
            ("Over-optimisation", overoptimisation(results, logs, roles, out / f"overoptimisation{ext}")),
            ("Where gold peaks, by labeller bias", labeller_bias(results, roles, out / f"labeller_bias{ext}")),
            ("DPO: log p of the chosen and rejected answers", preference_diagnostics.figure(logs, roles, out / f"dpo_logps{ext}")),
        ],
        "data": [
            ("Learning curves", sweep_plot(results, roles, Column.BUDGET, "budget (annotation units, log scale)",
                                           "Gold reward vs annotation budget", out / f"learning_curves{ext}",
                                           log_x=True, mark_crossover=True)),
            ("Learning curves by cost ratio", learning_curves_by_cost(results, roles, out / f"cost_ratio{ext}")),
            ("Robustness to label noise", sweep_plot(results, roles, Column.LABEL_NOISE, "annotator flip rate",
                                                     "Gold reward vs label noise", out / f"noise{ext}")),
            ("Annotator temperature", sweep_plot(results, roles, Column.ANNOTATOR_TEMPERATURE,
                                                 "Bradley–Terry temperature", "Gold reward vs annotator care",
                                                 out / f"annotator_temperature{ext}")),
            ("Demonstrator quality", sweep_plot(results, roles, Column.DEMONSTRATOR_QUALITY, "demonstrator quality",
                                                "Gold reward vs demonstrator quality",
                                                out / f"demonstrator_quality{ext}")),
        ],
        "generalisation": [
            ("Gold reward per arm, in and out of distribution", gold_by_split(results, roles, out / f"gold_by_arm{ext}", scale)),
            ("Diversity vs quality", diversity_vs_gold(results, roles, out / f"diversity{ext}")),
            ("Forgetting vs forward KL", forgetting(results, roles, out / f"forgetting{ext}")),
            ("ID − shift gaps", shift_gaps(results, roles, out / f"shift_gaps{ext}")),
        ],
        "reach": [("pass@k against k", pass_at_k.figure(results, roles, out / f"pass_at_k{ext}"))],
    }  # fmt: skip


SLIDES = ("gold_by_arm", "gold_vs_kl", "overoptimisation", "learning_curves", "forgetting", "frontier")
SLIDE_STYLE = {"font.size": 17, "axes.titlesize": "large", "lines.markersize": 8, "lines.linewidth": 2.0}


def slide_figures(results: pd.DataFrame, logs: pd.DataFrame, roles: Roles, out: Path, fmt: str) -> list[Path]:
    """The key figures as vector files (`fmt`: "svg" or "pdf") with type large enough to read on a
    1280 × 720 slide: every text is sized relative to the base font (17 pt instead of 10)."""
    out.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(SLIDE_STYLE):
        drawn = report_figures(results, logs, roles, out, ext=f".{fmt}")
    kept = []
    for _, path in (f for figs in drawn.values() for f in figs):
        if path is None:
            continue
        if path.stem in SLIDES:
            kept.append(path)
        else:
            path.unlink()
    return kept
