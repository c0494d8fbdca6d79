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

from compare.metrics import mean_ci
from compare.report.roles import Column, Roles
from compare.report.series import curve, frontier_points, heldout_curves, strength_columns, sweep_values
from compare.report.stats import crossover, fit_bon, fit_rl
from compare.report.tables import SPLIT_NAMES
from compare.stages import SPECS, Role


def objective(stage: str) -> tuple[str, str]:
    """(logged column, what it is) of a training stage's own objective, from its spec."""
    spec = SPECS.get(stage)
    return spec.objective if spec is not None and spec.objective else ("loss", stage)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def panels(n: int, width: float, height: float, per_row: int = 4):
    """A figure with n panels, at most `per_row` a row; returns the figure and a flat list of n axes."""
    cols = min(n, per_row)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows))
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


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


def gold_by_split(results: pd.DataFrame, roles: Roles, path: Path) -> Path:
    arms = roles.names
    fig = Figure(figsize=(max(6, 1.1 * len(arms) + 2), 4))
    ax = fig.subplots()
    width = 0.38
    for j, split in enumerate(("id", "ood")):
        stats = _arm_means(results, arms, "gold_reward", split)
        xs = [i + (j - 0.5) * width for i in range(len(arms))]
        ax.bar(
            xs, [s[1] for s in stats], width, yerr=[s[2] for s in stats], capsize=3, label=SPLIT_NAMES[split]
        )
    ax.set_xticks(range(len(arms)), [roles.label(a) for a in arms], rotation=20, ha="right")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("gold reward (mean ± 95% CI over seeds)")
    ax.set_title("Gold reward per arm: in-distribution vs out-of-distribution prompts")
    ax.legend(title="eval prompts")
    return _save(fig, path)


def gold_vs_kl(results: pd.DataFrame, roles: Roles, path: Path) -> Path:
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    gold = _arm_means(results, roles.names, "gold_reward", "id")
    kl = _arm_means(results, roles.names, "kl_to_base", "id")
    names: dict[tuple, list[str]] = {}  # arms at the same point (e.g. base and rm) share one label
    for (arm, g, gh, _), (_, k, kh, _) in zip(gold, kl):
        marker = "s" if roles.is_oracle(arm) else "o"
        ax.errorbar(k, g, xerr=kh, yerr=gh, fmt=marker, capsize=3, label=roles.label(arm))
        names.setdefault((round(k, 6), round(g, 6)), []).append(arm)
    for (k, g), point_arms in names.items():
        ax.annotate(", ".join(point_arms), (k, g), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("KL(policy ‖ base), nats per completion (sampled)")
    ax.set_ylabel("gold reward (ID)")
    ax.set_title("What each arm buys with its distance from the base model")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
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
        ax.set_title(roles.label(arm), fontsize=9)
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    axes[0].set_ylabel("stage objective (mean over seeds)")
    fig.suptitle("What each arm's training stages optimise", fontsize=10)
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
                ax.annotate(f"{arm} > {sft}", (x, ax.get_ylim()[0]), rotation=90, fontsize=7, va="bottom")
    if log_x:
        log_axis(ax, sweep_values(results, col))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("gold reward, ID (mean ± 95% CI)")
    ax.set_title(title)
    ax.legend(fontsize=8)
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
        ax.set_title(f"demonstration = {cost:g} × comparison", fontsize=9)
        ax.set_xlabel("budget (annotation units)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("gold reward, ID")
    axes[0][0].legend(fontsize=7)
    return _save(fig, path)


def diversity_vs_gold(results: pd.DataFrame, roles: Roles, path: Path) -> Path | None:
    metric = "distinct_2_across" if "distinct_2_across" in results else "distinct_2"
    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    gold = _arm_means(results, roles.names, "gold_reward", "id")
    div = _arm_means(results, roles.names, metric, "id")
    for (arm, g, gh, _), (_, d, dh, _) in zip(gold, div):
        ax.errorbar(d, g, xerr=dh, yerr=gh, fmt="o", capsize=3, label=roles.label(arm))
        ax.annotate(arm, (d, g), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel(f"{metric.replace('_', ' ')} (higher = more diverse)")
    ax.set_ylabel("gold reward (ID)")
    ax.set_title("Diversity vs quality")
    ax.grid(alpha=0.3)
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
    ax.legend(fontsize=8)
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


def overoptimisation(results: pd.DataFrame, logs: pd.DataFrame, roles: Roles, path: Path) -> Path | None:
    """Proxy and gold reward vs sqrt(KL): during online RL, and across best-of-n's n (Gao et al. 2022)."""
    curves = []
    for arm in roles.names:
        c = heldout_curves(logs, arm)
        if len(c) >= 3:
            d = np.sqrt(np.clip(c["kl"].to_numpy(), 0, None))
            curves.append((arm, "rl", d, c["gold"].to_numpy(), c["proxy"].to_numpy()))
    curves += [(arm, "bon", d, gold, proxy) for arm, d, gold, proxy in _selection_curves(results, roles)]
    if not curves:
        return None
    fig, axes = panels(len(curves), 4.4, 3.6)
    for ax, (arm, form, d, gold, proxy) in zip(axes, curves):
        order = np.argsort(d)
        d, gold, proxy = d[order], gold[order], proxy[order]
        ax.plot(d, gold, "o", color="C0", label="gold (measured)")
        if not np.all(np.isnan(proxy)):
            ax.plot(d, proxy, "^", color="C1", label="proxy RM (measured)")
        fit = (fit_rl if form == "rl" else fit_bon)(d, gold)
        if not math.isnan(fit["alpha"]):
            grid = np.linspace(max(d.min(), 1e-3), d.max(), 100)
            gain = grid * (fit["alpha"] - fit["beta"] * (np.log(grid) if form == "rl" else grid))
            ax.plot(grid, fit["r0"] + gain, "-", color="C0", alpha=0.6, label="gold fit (Gao et al.)")
            if not math.isnan(fit["d_peak"]) and d.min() <= fit["d_peak"] <= d.max() * 1.5:
                ax.axvline(fit["d_peak"], color="C0", linestyle=":", linewidth=1)
                ax.annotate("gold peak", (fit["d_peak"], fit["r_peak"]), fontsize=7)
        ax.set_title(f"{roles.label(arm)}: {'during training' if form == 'rl' else 'across n'}", fontsize=9)
        ax.set_xlabel("√KL (nats^½)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("reward")
    fig.suptitle("Over-optimisation: the proxy keeps rising, the gold reward need not", fontsize=10)
    return _save(fig, path)


def forgetting(results: pd.DataFrame, roles: Roles, path: Path) -> Path | None:
    """Prior ability kept vs KL(π_base ‖ π) on the training prompts, per arm (Shenfeld et al. 2025); with
    strength sweeps (experiments/forgetting.yaml) one point per setting, and a second panel against ID
    gold, where the claim compares the arms at equal gain."""
    if "prior" not in set(results["split"]) or "forward_kl_train" not in results:
        return None
    swept = {arm: strength_columns(results, roles, arm) for arm in roles.names}
    panels = [("forward_kl_train", "KL(base ‖ policy) on training prompts, nats (base samples)")]
    if any(swept.values()):
        panels.append(("gold_reward", "gold reward on ID prompts (the gain)"))
    fig = Figure(figsize=(6.5 * len(panels), 4.5))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (x, label) in zip(axes, panels):
        for i, arm in enumerate(roles.names):
            color = f"C{i % 10}"  # one colour per arm in both panels
            rows = results[results["arm"] == arm]
            at_id, prior = rows[rows["split"] == "id"], rows[rows["split"] == "prior"]
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
                        f"{setting:g}", (xv, yv), textcoords="offset points", xytext=(5, 3), fontsize=7
                    )
                continue
            g, gh, n = mean_ci(list(prior["gold_reward"]))
            k, kh, _ = mean_ci(list(at_id[x].dropna()))
            if n == 0 or math.isnan(k):
                continue
            ax.errorbar(
                k, g, xerr=0.0 if math.isnan(kh) else kh, yerr=0.0 if math.isnan(gh) else gh,
                fmt="s" if roles.is_oracle(arm) else "o", capsize=3, color=color, label=roles.label(arm),
            )  # fmt: skip
            ax.annotate(arm, (k, g), textcoords="offset points", xytext=(6, 4), fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("prior ability kept (counting, gold)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
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
    fig, axes = panels(len(levels), 4.0, 3.4)
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
        ax.set_title(f"{column.rsplit('.', 1)[-1]} = {level:g}", fontsize=9)
        ax.set_xlabel("KL to base (ID)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("gold reward (ID)")
    axes[0].legend(fontsize=7)
    fig.suptitle("Gold reward vs KL at each level of the labellers' bias")
    return _save(fig, path)


def report_figures(results: pd.DataFrame, logs: pd.DataFrame, roles: Roles, out: Path) -> dict:
    """Every figure of the report, by axis: {axis: [(title, path or None)]}; a figure without data is None."""
    return {
        "objective": [
            ("Gold reward vs KL to the base model (ID prompts)", gold_vs_kl(results, roles, out / "gold_vs_kl.png")),
            ("What each stage optimises", training_objectives(logs, roles, out / "training.png")),
            ("Reward–KL frontier", frontier(results, roles, out / "frontier.png")),
            ("Over-optimisation", overoptimisation(results, logs, roles, out / "overoptimisation.png")),
            ("Where gold peaks, by labeller bias", labeller_bias(results, roles, out / "labeller_bias.png")),
        ],
        "data": [
            ("Learning curves", sweep_plot(results, roles, Column.BUDGET, "budget (annotation units, log scale)",
                                           "Gold reward vs annotation budget", out / "learning_curves.png",
                                           log_x=True, mark_crossover=True)),
            ("Learning curves by cost ratio", learning_curves_by_cost(results, roles, out / "cost_ratio.png")),
            ("Robustness to label noise", sweep_plot(results, roles, Column.LABEL_NOISE, "annotator flip rate",
                                                     "Gold reward vs label noise", out / "noise.png")),
            ("Annotator temperature", sweep_plot(results, roles, Column.ANNOTATOR_TEMPERATURE,
                                                 "Bradley–Terry temperature", "Gold reward vs annotator care",
                                                 out / "annotator_temperature.png")),
            ("Demonstrator quality", sweep_plot(results, roles, Column.DEMONSTRATOR_QUALITY, "demonstrator quality",
                                                "Gold reward vs demonstrator quality",
                                                out / "demonstrator_quality.png")),
        ],
        "generalisation": [
            ("Gold reward per arm, in and out of distribution", gold_by_split(results, roles, out / "gold_by_arm.png")),
            ("Diversity vs quality", diversity_vs_gold(results, roles, out / "diversity.png")),
            ("Forgetting vs forward KL", forgetting(results, roles, out / "forgetting.png")),
        ],
    }  # fmt: skip
