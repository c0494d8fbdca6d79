"""Numbers read out of the saved results for the tables, figures and claims: per-seed values, curves over a
swept setting, held-out curves of online RL, reward–KL frontier points; and how they are written.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from compare.metrics import mean_ci
from compare.report.roles import Roles


def grid_cols(results: pd.DataFrame) -> list[str]:
    return [c for c in results.columns if c.startswith("grid.")]


def per_seed(results: pd.DataFrame, arm: str, metric: str, split: str = "id", **fixed) -> dict[int, float]:
    """{seed: value} of one arm and split; `fixed` pins grid columns (e.g. budget=256 -> 'grid.budget')."""
    rows = results[(results["arm"] == arm) & (results["split"] == split)]
    for col, value in fixed.items():
        rows = rows[np.isclose(rows[col].astype(float), float(value))] if col in rows else rows
    rows = rows.dropna(subset=[metric])
    return rows.groupby("seed")[metric].mean().to_dict()


def id_gap(results: pd.DataFrame, arm: str, split: str, metric: str = "gold_reward") -> dict[int, float]:
    """{seed: ID minus `split`} of one arm's `metric`, over the seeds that have both: how much a named
    shift costs it (the OOD and shift claims compare these gaps, seed by seed)."""
    ids, other = per_seed(results, arm, metric, "id"), per_seed(results, arm, metric, split)
    return {s: ids[s] - other[s] for s in ids.keys() & other.keys()}


def num(value: float, signed: bool = False) -> str:
    """A number to three decimals, never "-0.000" (a value that rounds to zero prints as 0.000)."""
    text = f"{value:+.3f}" if signed else f"{value:.3f}"
    if text[0] == "-" and float(text) == 0:
        return "+0.000" if signed else "0.000"
    return text


def fmt(mean: float, half: float) -> str:
    return num(mean) if math.isnan(half) else f"{num(mean)} ± {half:.3f}"


def summary(values: dict[int, float]) -> str:
    mean, half, n = mean_ci(list(values.values()))
    return f"{fmt(mean, half)} (n={n})"


def sweep_values(results: pd.DataFrame, col: str) -> list[float]:
    return sorted(results[col].dropna().unique().tolist()) if col in results else []


def curve(results: pd.DataFrame, arm: str, col: str, metric: str = "gold_reward", split: str = "id"):
    """x values of a swept column, mean and CI half-width of `metric` at each, for one arm."""
    xs, means, halves = [], [], []
    for x in sweep_values(results[results["arm"] == arm], col):
        mean, half, n = mean_ci(list(per_seed(results, arm, metric, split, **{col: x}).values()))
        if n:
            xs.append(x)
            means.append(mean)
            halves.append(0.0 if math.isnan(half) else half)
    return xs, means, halves


def heldout_points(logs: pd.DataFrame, arm: str) -> list[tuple[str, pd.DataFrame]]:
    """The held-out checks of one online-RL arm, one group per grid point its runs differ in (a KL
    coefficient, a labeller bias): [(label such as "length_bias=1", rows)]; one unlabelled group when
    they differ in nothing but the seed. Curves of different settings are never averaged together."""
    if logs.empty or "heldout/gold" not in logs:
        return []
    rows = logs[(logs["arm"] == arm) & logs["heldout/gold"].notna()]
    if rows.empty:
        return []
    keys = [c for c in rows.columns if c.startswith("grid.") and rows[c].nunique() > 1]
    if not keys:
        return [("", rows)]
    groups = []
    for values, sub in rows.groupby(keys, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        groups.append((", ".join(f"{k.rsplit('.', 1)[-1]}={v:g}" for k, v in zip(keys, values)), sub))
    return groups


def heldout_curves(logs: pd.DataFrame, arm: str, rows: pd.DataFrame | None = None) -> pd.DataFrame:
    """PPO's held-out checks over training, averaged over seeds: step, kl, gold, proxy; of `rows` (one
    group of `heldout_points`) when given, else of every check of the arm."""
    if rows is None:
        if logs.empty or "heldout/gold" not in logs:
            return pd.DataFrame()
        rows = logs[(logs["arm"] == arm) & logs["heldout/gold"].notna()]
    if rows.empty:
        return pd.DataFrame()
    cols = {"heldout/kl": "kl", "heldout/gold": "gold", "heldout/proxy": "proxy"}
    return rows.groupby("step")[list(cols)].mean().rename(columns=cols).reset_index()


def strength_columns(results: pd.DataFrame, roles: Roles, arm: str, stage: str | None = None) -> list[str]:
    """The strength columns of `arm`'s stages (see `Roles.strength_columns`) that vary over its runs."""
    rows = results[results["arm"] == arm]
    return [c for c in roles.strength_columns(arm, grid_cols(results), stage) if rows[c].nunique() > 1]


def policy_groups(results: pd.DataFrame, roles: Roles) -> list[tuple[str, str, pd.DataFrame]]:
    """(label, arm, rows) of every policy a table or chart shows, in suite order: each arm but reward
    models alone; an arm whose strength setting is swept (best-of-n's n, DPO's β) once per setting
    ("best_of_n n=4"), since averaging over it mixes different policies."""
    groups = []
    for arm in roles.policies:
        rows = results[results["arm"] == arm]
        if rows.empty:
            continue
        keys = strength_columns(results, roles, arm)
        if not keys:
            groups.append((roles.label(arm), arm, rows))
            continue
        for value, sub in rows.groupby(keys[0], sort=True):
            groups.append((f"{roles.label(arm)} {keys[0].rsplit('.', 1)[-1]}={value:g}", arm, sub))
    return groups


def frontier_points(results: pd.DataFrame, roles: Roles, arm: str) -> list[tuple[float, float]]:
    """(KL, gold) on ID prompts at each strength setting of one arm, mean over seeds (and other settings)."""
    rows = results[(results["arm"] == arm) & (results["split"] == "id")]
    keys = strength_columns(results, roles, arm)
    if not keys or rows.empty:
        return []
    pts = rows.groupby(keys)[["kl_to_base", "gold_reward"]].mean()
    return [(float(k), float(g)) for k, g in pts.itertuples(index=False)]
