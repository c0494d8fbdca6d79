"""report.html's main figures as inline SVG, drawn from the saved numbers, each mark carrying its values.

The PNGs (`figures.py`) are for report.md; these are their interactive twins: every point, whisker and
line vertex is a `<g class="mark">` whose `<title>` holds the exact numbers it shows (a browser shows it on
hover even without JavaScript; the page's script turns it into a tooltip). Numbers come from the same
places as the tables and PNGs: `mean_ci` over the results rows, `series.frontier_points`, the logged
objective of each stage (`figures.objective`). Arms are coloured by their place in the suite and oracle
bounds are drawn as squares or dashed, as in the PNGs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

import pandas as pd

from compare.metrics import mean_ci
from compare.report.figures import objective
from compare.report.key_results import SCALE_NAMES
from compare.report.roles import Roles
from compare.report.series import fmt, frontier_points, num, policy_groups
from compare.report.tables import grid_cell, grid_heading

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip
MAX_MARKERS = 40  # hoverable points per training curve (the line itself keeps every step)


def arm_colour(roles: Roles, arm: str) -> str:
    index = roles.names.index(arm) if arm in roles.names else len(roles.names)
    return PALETTE[index % len(PALETTE)]


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values covering [lo, hi] (steps of 1, 2, 2.5 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if raw <= step * m)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(i * step, 10) for i in range(first, last + 1)]


def _num(value: float) -> str:
    return f"{value:.1f}"


def _tick(value: float) -> str:
    return f"{value:g}"


@dataclass
class Frame:
    """A plotting area at (left, top) of size width × height pixels, mapping data ranges onto it."""

    left: float
    top: float
    width: float
    height: float
    xticks: list[float]
    yticks: list[float]

    def x(self, value: float) -> float:
        lo, hi = self.xticks[0], self.xticks[-1]
        return self.left + (value - lo) / (hi - lo) * self.width

    def y(self, value: float) -> float:
        lo, hi = self.yticks[0], self.yticks[-1]
        return self.top + self.height - (value - lo) / (hi - lo) * self.height

    def axes(
        self, xlabel: str, ylabel: str, yticks: bool = True, xnames: dict[float, str] | None = None
    ) -> list[str]:
        """Grid lines, tick labels and axis titles; `xnames`: the x ticks' labels, when not their values."""
        parts = []
        bottom = self.top + self.height
        for t in self.xticks:
            x = _num(self.x(t))
            parts.append(f'<line class="grid" x1="{x}" x2="{x}" y1="{_num(self.top)}" y2="{_num(bottom)}"/>')
            parts.append(
                f'<text class="tick" x="{x}" y="{_num(bottom + 14)}" text-anchor="middle">'
                f"{escape(xnames[t]) if xnames and t in xnames else _tick(t)}</text>"
            )
        if yticks:
            for t in self.yticks:
                y = _num(self.y(t))
                right = _num(self.left + self.width)
                parts.append(f'<line class="grid" x1="{_num(self.left)}" x2="{right}" y1="{y}" y2="{y}"/>')
                parts.append(
                    f'<text class="tick" x="{_num(self.left - 5)}" y="{y}" text-anchor="end" '
                    f'dominant-baseline="middle">{_tick(t)}</text>'
                )
        parts.append(
            f'<rect class="frame" x="{_num(self.left)}" y="{_num(self.top)}" width="{_num(self.width)}" '
            f'height="{_num(self.height)}"/>'
        )
        parts.append(
            f'<text class="label" x="{_num(self.left + self.width / 2)}" y="{_num(bottom + 32)}" '
            f'text-anchor="middle">{escape(xlabel)}</text>'
        )
        if ylabel:
            cx, cy = self.left - 44, self.top + self.height / 2
            parts.append(
                f'<text class="label" x="{_num(cx)}" y="{_num(cy)}" text-anchor="middle" '
                f'transform="rotate(-90 {_num(cx)} {_num(cy)})">{escape(ylabel)}</text>'
            )
        return parts


def _svg(width: float, height: float, body: list[str], label: str) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {_num(width)} {_num(height)}" width="{_num(width)}" '
        f'role="img" aria-label="{escape(label)}">' + "".join(body) + "</svg>"
    )


def _mark(shapes: str, tip: str, focusable: bool = True) -> str:
    """A hoverable group: its <title> holds the numbers (`focusable`: reachable with the Tab key too)."""
    focus = ' tabindex="0"' if focusable else ""
    return f'<g class="mark"{focus}>{shapes}<title>{escape(tip)}</title></g>'


def _point(x: float, y: float, colour: str, square: bool = False, r: float = 4.0) -> str:
    if square:
        return (
            f'<rect x="{_num(x - r)}" y="{_num(y - r)}" width="{_num(2 * r)}" height="{_num(2 * r)}" '
            f'fill="{colour}"/>'
        )
    return f'<circle cx="{_num(x)}" cy="{_num(y)}" r="{r:g}" fill="{colour}"/>'


def _legend(items: list[tuple[str, str, bool]], x: float, y: float, width: float) -> tuple[list[str], float]:
    """Swatches and names in rows that fit `width`; returns the parts and the height used."""
    parts, cx, cy = [], x, y
    for name, colour, dashed in items:
        w = 34 + 6.6 * len(name)
        if cx + w > x + width and cx > x:
            cx, cy = x, cy + 16
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        parts.append(
            f'<line x1="{_num(cx)}" x2="{_num(cx + 14)}" y1="{_num(cy)}" y2="{_num(cy)}" stroke="{colour}" '
            f'stroke-width="3"{dash}/>'
        )
        parts.append(
            f'<text class="legend" x="{_num(cx + 18)}" y="{_num(cy)}" dominant-baseline="middle">{escape(name)}</text>'
        )
        cx += w
    return parts, cy - y + 16


def _split_order(results: pd.DataFrame, roles: Roles) -> list[str]:
    return roles.split_order(results["split"])


def gold_by_split_svg(
    results: pd.DataFrame,
    roles: Roles,
    splits: tuple[str, ...] | None = None,
    width: float = 760,
    scale: dict[str, float] | None = None,
) -> str | None:
    """Gold reward of every policy (best-of-n by n) on every evaluation split (or those named): mean and
    95% t-interval over its runs (the numbers of the splits table), one row per policy, one coloured dot
    and whisker per split; the gold scale (`scale`: base model, demonstrator, best possible) as lines."""
    groups = policy_groups(results, roles)
    splits = [s for s in _split_order(results, roles) if splits is None or s in splits]
    if not groups:
        return None
    stats = {}
    for label, _, rows in groups:
        for split in splits:
            stats[label, split] = mean_ci(list(rows.loc[rows["split"] == split, "gold_reward"]))
    found = [(m, 0.0 if math.isnan(h) else h) for m, h, n in stats.values() if n]
    if not found:
        return None
    scale = {k: v for k, v in (scale or {}).items() if k in REFERENCE_DASH}
    lows = [m - h for m, h in found] + list(scale.values())
    highs = [m + h for m, h in found] + list(scale.values())
    xticks = nice_ticks(min(lows), max(highs))
    colours = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(splits)}
    left = 30 + 6 * max(len(label) for label, _, _ in groups)
    items = [(roles.split_label(s), colours[s], False) for s in splits]
    legend, legend_h = _legend(items, left, 14, width - left)
    row = 10 + 9 * len(splits)
    frame = Frame(
        left, 14 + legend_h + 6 + (26 if scale else 0), width - left - 30, row * len(groups), xticks, [0, 1]
    )
    body = [*legend]
    for i, (label, _, _) in enumerate(groups):
        top = frame.top + i * row
        if i % 2:
            body.append(
                f'<rect class="band" x="{_num(frame.left)}" y="{_num(top)}" width="{_num(frame.width)}" height="{row}"/>'
            )
        body.append(
            f'<text class="tick" x="{_num(frame.left - 6)}" y="{_num(top + row / 2)}" text-anchor="end" '
            f'dominant-baseline="middle">{escape(label)}</text>'
        )
    body += frame.axes("gold reward (mean ± 95% CI)", "", yticks=False)
    if xticks[0] < 0 < xticks[-1]:
        body.append(f'<line class="zero" x1="{_num(frame.x(0))}" x2="{_num(frame.x(0))}" y1="{_num(frame.top)}" '
                    f'y2="{_num(frame.top + frame.height)}"/>')  # fmt: skip
    # the gold scale, labelled above the frame on two alternating rows, anchored away from the edges
    for i, (key, value) in enumerate(sorted(scale.items(), key=lambda kv: kv[1])):
        x = _num(frame.x(value))
        anchor = "end" if frame.x(value) > frame.left + 0.8 * frame.width else (
            "start" if frame.x(value) < frame.left + 0.2 * frame.width else "middle"
        )  # fmt: skip
        y = frame.top - 4 - 12 * (i % 2)
        body.append(_mark(
            f'<line class="reference" x1="{x}" x2="{x}" y1="{_num(y + 2)}" y2="{_num(frame.top + frame.height)}" '
            f'stroke="#777" stroke-dasharray="{REFERENCE_DASH[key]}"/>'
            f'<text class="legend" x="{x}" y="{_num(y)}" text-anchor="{anchor}">{SCALE_NAMES[key]}</text>',
            f"{SCALE_NAMES[key]}: gold {value:.3f}",
        ))  # fmt: skip
    for i, (label, _, _) in enumerate(groups):
        for j, split in enumerate(splits):
            mean, half, n = stats[label, split]
            if not n:
                continue
            h = 0.0 if math.isnan(half) else half
            y = frame.top + i * row + 9 + 9 * j
            colour = colours[split]
            shapes = (
                f'<line x1="{_num(frame.x(mean - h))}" x2="{_num(frame.x(mean + h))}" y1="{_num(y)}" '
                f'y2="{_num(y)}" stroke="{colour}" stroke-width="1.6"/>'
                + _point(frame.x(mean), y, colour, r=3.5)
            )
            interval = fmt(mean, half)
            tip = f"{label} · {roles.split_label(split)}: gold {interval} (95% CI, n={n})"
            body.append(_mark(shapes, tip))
    return _svg(width, frame.top + frame.height + 42, body, "Gold reward per policy on the evaluation splits")


REFERENCE_DASH = {"base": "2 2", "demonstrator": "6 3", "ceiling": "8 3 2 3"}  # the gold scale's lines


def _scatter(
    points,
    roles: Roles,
    xlabel: str,
    ylabel: str,
    label: str,
    lines: bool = False,
    levels: dict | None = None,
) -> str | None:
    """Points [(arm, x, y, tip)], coloured by arm (oracles square, their lines dashed); with `lines`, each
    arm's points joined in order of x. Points that fall on the same pixel (the base model and a reward
    model's unchanged policy) are one mark whose tooltip lists them all."""
    points = [p for p in points if math.isfinite(p[1]) and math.isfinite(p[2])]
    if not points:
        return None
    arms = list(dict.fromkeys(p[0] for p in points))
    legend, legend_h = _legend([(roles.label(a), arm_colour(roles, a), roles.is_oracle(a)) for a in arms],
                               70, 14, 600)  # fmt: skip
    levels = {k: v for k, v in (levels or {}).items() if k in REFERENCE_DASH}
    xs, ys = [p[1] for p in points], [p[2] for p in points] + list(levels.values())
    frame = Frame(70, 14 + legend_h + 8, 560, 320, nice_ticks(min(xs), max(xs)), nice_ticks(min(ys), max(ys)))
    body = [*legend, *frame.axes(xlabel, ylabel)]
    for key, value in levels.items():  # horizontal reference lines, labelled at the right
        y = _num(frame.y(value))
        body.append(_mark(
            f'<line class="reference" x1="{_num(frame.left)}" x2="{_num(frame.left + frame.width)}" y1="{y}" '
            f'y2="{y}" stroke="#777" stroke-dasharray="{REFERENCE_DASH[key]}"/>'
            f'<text class="legend" x="{_num(frame.left + frame.width + 4)}" y="{y}" dominant-baseline="middle">'
            f"{SCALE_NAMES[key]}</text>",
            f"{SCALE_NAMES[key]}: gold {value:.3f}",
        ))  # fmt: skip
    if lines:
        for arm in arms:
            mine = sorted((x, y) for a, x, y, _ in points if a == arm)
            path = " ".join(f"{_num(frame.x(x))},{_num(frame.y(y))}" for x, y in mine)
            dash = ' stroke-dasharray="5 4"' if roles.is_oracle(arm) else ""
            body.append(
                f'<polyline points="{path}" fill="none" stroke="{arm_colour(roles, arm)}" stroke-width="1.8"{dash}/>'
            )
    spots: dict[tuple[int, int], list] = {}  # points within a pixel of each other share one mark
    for arm, x, y, tip in points:
        spots.setdefault((round(frame.x(x)), round(frame.y(y))), []).append((arm, x, y, tip))
    for found in spots.values():
        arm, x, y, _ = found[-1]
        shape = _point(frame.x(x), frame.y(y), arm_colour(roles, arm), roles.is_oracle(arm))
        body.append(_mark(shape, "\n".join(tip for *_, tip in found)))
    return _svg(740, frame.top + frame.height + 42, body, label)


def _point_label(row: pd.Series, columns: list[str]) -> str:
    parts = [f"{grid_heading(c)}={grid_cell(row[c])}" for c in columns if not pd.isna(row[c])]
    return f" ({', '.join(parts)})" if parts else ""


def gold_vs_kl_svg(results: pd.DataFrame, roles: Roles, scale: dict | None = None) -> str | None:
    """Gold reward against the sampled KL to the base on ID prompts: one point per policy, seed and grid
    point (reward models alone are not policies); the demonstrator's and the best possible gold as lines."""
    rows = results[(results["split"] == "id") & results["arm"].isin(roles.policies)]
    rows = rows.dropna(subset=["gold_reward", "kl_to_base"])
    grid = [c for c in rows.columns if c.startswith("grid.")]
    order = {a: i for i, a in enumerate(roles.names)}
    points = []
    for _, r in sorted(rows.iterrows(), key=lambda kv: order.get(kv[1]["arm"], len(order))):
        tip = (
            f"{roles.label(r['arm'])}, seed {r['seed']}{_point_label(r, grid)}: KL {num(r['kl_to_base'])}, "
            f"gold {r['gold_reward']:.3f}"
        )
        points.append((r["arm"], float(r["kl_to_base"]), float(r["gold_reward"]), tip))
    levels = {k: v for k, v in (scale or {}).items() if k != "base"}
    return _scatter(points, roles, "KL(policy ‖ base), nats per completion (sampled)", "gold reward (ID)",
                    "Gold reward vs KL to the base model, one point per run", levels=levels)  # fmt: skip


def frontier_svg(results: pd.DataFrame, roles: Roles) -> str | None:
    """Each method's reward–KL frontier across its strength sweep (`series.frontier_points`)."""
    points = []
    for arm in roles.names:
        found = sorted(frontier_points(results, roles, arm))
        if len(found) >= 2:
            points += [
                (arm, k, g, f"{roles.label(arm)}: KL {num(k)}, gold {g:.3f} (mean over seeds)")
                for k, g in found
            ]
    return _scatter(points, roles, "KL(policy ‖ base), nats (sampled, ID)", "gold reward (ID, mean over seeds)",
                    "Reward–KL frontier", lines=True)  # fmt: skip


def _thin(series: pd.Series, most: int) -> pd.Series:
    if len(series) <= most:
        return series
    keep = sorted({round(i * (len(series) - 1) / (most - 1)) for i in range(most)})
    return series.iloc[keep]


def training_svg(logs: pd.DataFrame, roles: Roles, per_row: int = 4) -> str | None:
    """Each training stage's own objective over its optimiser steps (mean over seeds), a panel per arm."""
    if logs.empty or not {"arm", "stage", "step"} <= set(logs.columns):
        return None
    panels = []
    for arm in dict.fromkeys(logs["arm"]):
        curves = []
        for stage, group in logs[logs["arm"] == arm].groupby("stage", sort=False):
            column, name = objective(stage)
            if column in group and group[column].notna().any():
                curves.append((name, group.dropna(subset=[column]).groupby("step")[column].mean()))
        if curves:
            panels.append((arm, curves))
    if not panels:
        return None
    width, height, gap = 175, 120, 70
    cols = min(per_row, len(panels))
    block = height + 76 + 16 * max(len(c) for _, c in panels)  # a panel, its axis and its legend
    body = []
    for i, (arm, curves) in enumerate(panels):
        left = 52 + (i % cols) * (width + gap)
        top = 22 + (i // cols) * block
        steps = [s for _, c in curves for s in c.index]
        values = [v for _, c in curves for v in c.values if math.isfinite(v)]
        if not values:
            continue
        frame = Frame(left, top, width, height, nice_ticks(min(steps), max(steps), 4),
                      nice_ticks(min(values), max(values), 4))  # fmt: skip
        body.append(
            f'<text class="panel" x="{_num(left + width / 2)}" y="{_num(top - 8)}" text-anchor="middle">'
            f"{escape(roles.label(arm))}</text>"
        )
        body += frame.axes("step", "")
        for j, (name, series) in enumerate(curves):
            colour = PALETTE[j % len(PALETTE)]
            path = " ".join(
                f"{_num(frame.x(s))},{_num(frame.y(v))}" for s, v in series.items() if math.isfinite(v)
            )
            body.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
            for step, value in _thin(series, MAX_MARKERS).items():
                if math.isfinite(value):
                    tip = f"{roles.label(arm)} · {name}: step {step:g}, {value:.4g} (mean over seeds)"
                    body.append(_mark(_point(frame.x(step), frame.y(value), colour, r=2.2), tip, False))
            ly = top + height + 48 + 16 * j
            body.append(f'<line x1="{_num(left)}" x2="{_num(left + 14)}" y1="{_num(ly)}" y2="{_num(ly)}" '
                        f'stroke="{colour}" stroke-width="3"/>')  # fmt: skip
            body.append(f'<text class="legend" x="{_num(left + 18)}" y="{_num(ly)}" '
                        f'dominant-baseline="middle">{escape(name)}</text>')  # fmt: skip
    total_h = 22 + math.ceil(len(panels) / cols) * block
    return _svg(52 + cols * (width + gap), total_h, body, "What each arm's training stages optimise")


SVG_FIGURES = {  # the PNG a chart stands in for -> the chart (`scale`: the gold scale, key_results.gold_scale)
    "gold_by_arm.png": lambda results, logs, roles, scale: gold_by_split_svg(results, roles, scale=scale),
    "gold_vs_kl.png": lambda results, logs, roles, scale: gold_vs_kl_svg(results, roles, scale),
    "frontier.png": lambda results, logs, roles, scale: frontier_svg(results, roles),
    "training.png": lambda results, logs, roles, scale: training_svg(logs, roles),
}
