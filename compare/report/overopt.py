"""report.html's over-optimisation view: the same prompts' answers as a policy is pushed further.

Two kinds of track, each one run (an arm at one grid point and seed):

- **along training**: the held-out samples an online RL stage saved at a few checkpoints
  (`snapshots.csv`, `compare/stages/snapshots.py`). A checkpoint's gold reward and RM score are means over
  its prompts' completions, its KL the mean sampled log-ratio to the policy the stage started from.
- **along a strength sweep** (DPO's β, PPO's KL coefficient, best-of-n's n: the grid column of the stage's
  `strength` setting): each setting's final policy, its gold reward, RM score and KL to the base from
  results.csv (ID prompts) and its first ID prompts' first samples from samples.csv.

A slider moves along the track (the page's script); beside the answers a small chart draws gold reward (and
the RM score, in a panel below) against the step or setting, or against KL, with a point exactly where a
measurement is, joined by straight lines in the order of the track, and the current point ringed. Each
answer is shown with the words that differ from a reference answer marked: the start policy's (training)
or the base model's (sweep), to the same prompt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from compare.report.charts import PALETTE, Frame, _mark, _num, _point, _svg, nice_ticks
from compare.report.roles import Roles
from compare.report.tables import grid_cell, grid_heading

SWEEP_PROMPTS = 8  # ID prompts shown at each setting of a sweep (the first of the split, first sample each)
WIDTH, PANEL = 400, 140  # the chart's width and each panel's height, in pixels


@dataclass
class Stop:
    """One point of a track: where it sits, what was measured there, and the answers shown."""

    x: float  # the step or the setting's value
    label: str  # "step 8 of 16", "n=4"
    gold: float
    rm: float | None
    kl: float
    rows: list[tuple] = field(default_factory=list)  # (prompt_index, prompt, completion, gold, rm, log-ratio)


@dataclass
class Track:
    """One run's track: along training or along a sweep; `reference`: {prompt_index: answer} to diff against."""

    title: str
    kind: str  # "training" or "sweep"
    axis: str  # the x axis besides KL: "training step" or the setting's name
    kl_label: str
    note: str
    stops: list[Stop]
    reference: dict[int, str]
    reference_label: str
    categorical: bool = False  # a sweep's settings are drawn evenly spaced, in order


def _number(value) -> float | None:
    value = pd.to_numeric(value, errors="coerce")
    return float(value) if value is not None and math.isfinite(value) else None


def _point_label(row: dict, columns: list[str]) -> str:
    return ", ".join(f"{grid_heading(c)}={grid_cell(row[c])}" for c in columns if not pd.isna(row[c]))


def training_tracks(snapshots: pd.DataFrame, roles: Roles) -> list[Track]:
    """One track per run and online stage that saved snapshots, arms in suite order."""
    if snapshots is None or snapshots.empty:
        return []
    grid = [c for c in snapshots.columns if c.startswith("grid.")]
    keys = ["arm", "stage", "seed", *grid]
    order = {a: i for i, a in enumerate(roles.names)}
    frame = snapshots.assign(_order=snapshots["arm"].map(lambda a: order.get(a, len(order))))
    tracks = []
    for _, rows in frame.sort_values(["_order", "seed"], kind="stable").groupby(
        keys, sort=False, dropna=False
    ):
        first = rows.iloc[0].to_dict()
        point = _point_label(first, grid)
        total = int(rows["step"].max())
        stops = []
        for step, at in rows.groupby("step", sort=True):
            at = at.sort_values("prompt_index")
            rm = pd.to_numeric(at["proxy_reward"], errors="coerce") if "proxy_reward" in at else None
            stops.append(
                Stop(
                    float(step),
                    f"step {int(step)} of {total}",
                    float(at["gold_reward"].mean()),
                    float(rm.mean()) if rm is not None and rm.notna().any() else None,
                    float(at["log_ratio"].mean()),
                    [
                        (
                            int(r["prompt_index"]),
                            str(r["prompt"]),
                            str(r["completion"]),
                            _number(r["gold_reward"]),
                            _number(r.get("proxy_reward")),
                            _number(r["log_ratio"]),
                        )
                        for r in at.to_dict("records")
                    ],
                )
            )
        start = {r[0]: r[2] for r in stops[0].rows} if stops and stops[0].x == 0 else {}
        n = len(stops[0].rows) if stops else 0
        stage = "" if first["stage"] == first["arm"] else f" ({first['stage']})"  # sft_ppo (ppo)
        tracks.append(
            Track(
                f"{roles.label(first['arm'])}{stage}{' · ' + point if point else ''} · seed {first['seed']}, "
                "along training",
                "training",
                "training step",
                "KL to the start policy (nats, mean over the prompts)",
                f"Gold reward and RM score: means over these {n} held-out ID prompts' completions (one each, "
                "sampled at the stage's temperature) at each checkpoint; KL: their mean log-ratio to the "
                "policy the stage started from.",
                stops,
                start,
                "the start policy's answer (step 0)",
            )
        )
    return tracks


def sweep_tracks(results: pd.DataFrame, samples: pd.DataFrame, roles: Roles) -> list[Track]:
    """One track per arm, strength column, other grid point and seed where a sweep has 2 or more settings."""
    grid = [c for c in results.columns if c.startswith("grid.")]
    tracks = []
    ids = results[results["split"] == "id"]
    base = roles.base
    for arm in roles.policies:
        mine = ids[ids["arm"] == arm]
        for column in roles.strength_columns(arm, grid):
            if mine[column].nunique() < 2:
                continue
            others = [c for c in grid if c != column and mine[c].nunique() > 1]
            for _, rows in mine.groupby([*others, "seed"] if others else ["seed"], sort=True):
                first = rows.iloc[0].to_dict()
                point = _point_label(first, others)
                name = grid_heading(column)
                stops = []
                for _, r in rows.dropna(subset=[column]).sort_values(column).iterrows():
                    shown = _first_answers(samples, arm, r, grid)
                    kl = _number(r.get("kl_to_base"))
                    stops.append(Stop(float(r[column]), f"{name}={grid_cell(r[column])}", float(r["gold_reward"]),
                                      _number(r.get("proxy_reward")), math.nan if kl is None else kl, shown))  # fmt: skip
                if len(stops) < 2:
                    continue
                reference = {}
                if base is not None:
                    base_rows = results[(results["arm"] == base) & (results["seed"] == first["seed"])]
                    if not base_rows.empty:
                        reference = {
                            p[0]: p[2] for p in _first_answers(samples, base, base_rows.iloc[0], grid)
                        }
                tracks.append(
                    Track(
                        f"{roles.label(arm)}{' · ' + point if point else ''} · seed {first['seed']}, along {name}",
                        "sweep",
                        name,
                        "KL to the base model (nats, ID prompts)",
                        f"Gold reward, RM score and KL: each setting's final policy on every ID prompt "
                        f"(results.csv); the answers: the first sample of its first {SWEEP_PROMPTS} ID prompts.",
                        stops,
                        reference,
                        "the base model's answer (same seed and sample)",
                        categorical=True,
                    )
                )
    return tracks


def _first_answers(samples: pd.DataFrame, arm: str, row: dict, grid: list[str]) -> list[tuple]:
    """The first sample of the first ID prompts of one run (arm, seed and grid point of `row`)."""
    if samples is None or samples.empty or "prompt_index" not in samples:
        return []
    pick = (samples["arm"] == arm) & (samples["seed"] == row["seed"]) & (samples["split"] == "id")
    pick &= samples["prompt_index"] < SWEEP_PROMPTS
    if "sample_index" in samples:
        pick &= samples["sample_index"] == 0
    for c in grid:
        if c in samples:
            value = row.get(c)
            pick &= samples[c].isna() if pd.isna(value) else (samples[c] == value)
    found = samples[pick].sort_values("prompt_index")
    lp = (
        found["logp_policy"] - found["logp_base"]
        if {"logp_policy", "logp_base"} <= set(found.columns)
        else pd.Series([math.nan] * len(found), index=found.index)
    )
    return [
        (int(r["prompt_index"]), str(r["prompt"]), str(r["completion"]), _number(r.get("gold_reward")),
         _number(r.get("proxy_reward")), _number(lp[i]))
        for i, r in found.iterrows()
    ]  # fmt: skip


# -- drawing ------------------------------------------------------------------------------------------------
def track_chart(track: Track, against_kl: bool) -> str | None:
    """Gold reward (and RM score below, when measured) against the track's step or setting, or against KL:
    a point per stop, joined in the track's order; every stop's ring and guide line, hidden but the current."""
    positions = [s.kl if against_kl else (i if track.categorical else s.x) for i, s in enumerate(track.stops)]
    if not any(math.isfinite(x) for x in positions):
        return None
    panels = [("gold reward", [s.gold for s in track.stops], PALETTE[0])]
    if any(s.rm is not None for s in track.stops):
        panels.append(("RM score", [math.nan if s.rm is None else s.rm for s in track.stops], PALETTE[1]))
    finite = [x for x in positions if math.isfinite(x)]
    if against_kl or len(set(finite)) < 2:
        xticks = nice_ticks(min(finite), max(finite), 5)
    else:  # a sweep's settings in order, evenly spaced; a run's checkpoints at their steps
        xticks = sorted(set(finite))
    names = {i: s.label.split("=", 1)[-1] for i, s in enumerate(track.stops)} if track.categorical and not against_kl else None  # fmt: skip
    body, top = [], 10.0
    xlabel = track.kl_label if against_kl else track.axis
    for k, (name, values, colour) in enumerate(panels):
        seen = [v for v in values if math.isfinite(v)]
        if not seen:
            continue
        frame = Frame(62, top, WIDTH - 80, PANEL, xticks, nice_ticks(min(seen), max(seen), 4))
        body += frame.axes(xlabel if k == len(panels) - 1 else "", name, xnames=names)
        vertices = [
            (frame.x(x), frame.y(v))
            for x, v in zip(positions, values)
            if math.isfinite(x) and math.isfinite(v)
        ]
        if len(vertices) > 1:
            path_points = " ".join(f"{_num(x)},{_num(y)}" for x, y in vertices)
            body.append(
                f'<polyline points="{path_points}" fill="none" stroke="{colour}" stroke-width="1.6"/>'
            )
        for j, (stop, x, v) in enumerate(zip(track.stops, positions, values)):
            if not (math.isfinite(x) and math.isfinite(v)):
                continue
            px, py = frame.x(x), frame.y(v)
            body.append(
                f'<g class="now" data-stop="{j}" hidden><line x1="{_num(px)}" x2="{_num(px)}" '
                f'y1="{_num(frame.top)}" y2="{_num(frame.top + frame.height)}"/>'
                f'<circle cx="{_num(px)}" cy="{_num(py)}" r="7.5"/></g>'
            )
            kl = "KL –" if not math.isfinite(stop.kl) else f"KL {stop.kl:.3f}"
            body.append(_mark(_point(px, py, colour, r=3.6), f"{stop.label}: {name} {v:.3f}, {kl}", False)
                        .replace('<g class="mark"', f'<g class="mark" data-stop="{j}"', 1))  # fmt: skip
        top += PANEL + 50
    if not body:
        return None
    label = f"{track.title}: gold reward{' and RM score' if len(panels) > 1 else ''} against {xlabel}"
    return _svg(WIDTH, top - 6, body, label)


def overopt_section(results, samples, snapshots, roles: Roles) -> tuple[str, dict] | None:
    """The view's HTML (controls, and both charts of every track, hidden but the current) and its data for
    the page's script; None when the report has neither snapshots nor a strength sweep."""
    tracks = training_tracks(snapshots, roles) + sweep_tracks(results, samples, roles)
    if not tracks:
        return None
    strings: dict[str, int] = {}

    def ref(text: str) -> int:
        return strings.setdefault(text, len(strings))

    def rounded(value: float | None, digits: int = 3):
        return None if value is None or not math.isfinite(value) else round(value, digits)

    data, charts = [], []
    for i, track in enumerate(tracks):
        data.append(
            {
                "title": track.title,
                "kind": track.kind,
                "note": track.note,
                "reference_label": track.reference_label,
                "reference": {str(k): ref(v) for k, v in track.reference.items()},
                "stops": [
                    {
                        "label": s.label,
                        "gold": rounded(s.gold),
                        "rm": rounded(s.rm),
                        "kl": rounded(s.kl),
                        "rows": [
                            [p, ref(prompt), ref(text), rounded(g), rounded(r), rounded(lr, 2)]
                            for p, prompt, text, g, r, lr in s.rows
                        ],  # fmt: skip
                    }
                    for s in track.stops
                ],
            }
        )
        for axis, against_kl in (("x", False), ("kl", True)):
            chart = track_chart(track, against_kl) or '<p class="none">no finite values to draw</p>'
            charts.append(f'<div class="oo-chart" data-track="{i}" data-axis="{axis}" hidden>{chart}</div>')
    html = (
        "<h2>Watching over-optimisation</h2>"
        "<p>The same prompts' answers as a policy is pushed further: along online RL training (held-out "
        "completions saved at a few checkpoints, <code>snapshots.csv</code>) and along each strength sweep "
        "(each setting's final policy). Move the slider; the chart rings the current point, with a point "
        "exactly where each measurement is. Words that differ from a reference answer to the same prompt are "
        "marked. Hover a point for its numbers.</p>"
        "<noscript><p>This view needs JavaScript; the numbers are in snapshots.csv and results.csv.</p></noscript>"
        '<form id="oo-controls" class="sb-controls" hidden>'
        '<label>Run <select id="oo-track"></select></label>'
        '<label>Against <select id="oo-axis"><option value="x">step or setting</option>'
        '<option value="kl">KL</option></select></label>'
        '<label>Point <input id="oo-slider" type="range" min="0" max="0" step="1" value="0"></label>'
        '<label><input id="oo-diff" type="checkbox" checked> mark what changed</label>'
        "</form>"
        '<p id="oo-status" aria-live="polite"></p>'
        f'<div class="oo-body"><div class="oo-charts">{"".join(charts)}</div>'
        '<div><p id="oo-note" class="oo-note"></p><ol id="oo-answers" class="oo-answers"></ol></div></div>'
    )
    return html, {"strings": list(strings), "tracks": data}
