"""The grid and the budget: pure functions of a validated suite (no stage, no planner), so that loading a
suite can check its grid and budget without importing the planner."""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from compare.stages import DATA_KINDS, DataKind
from compare.suite.errors import one_line
from compare.suite.schema import Arm, Cost, Stages, Suite


def set_path(data: dict, dotted: str, value: Any) -> None:
    """Set `a.b.c` in nested dicts, making the missing levels; KeyError if a level is not a mapping."""
    node = data
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise KeyError(dotted)
    node[parts[-1]] = value


# -- the grid --------------------------------------------------------------------------------------------
def grid_points(suite: Suite) -> list[dict[str, Any]]:
    keys = list(suite.grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(suite.grid[k] for k in keys))]


def arm_point(point: dict[str, Any], arm: str) -> dict[str, Any]:
    """The part of a grid point that concerns one arm: keys under `arms.<other arm>.` are dropped."""
    return {k: v for k, v in point.items() if not k.startswith("arms.") or k.split(".")[1] == arm}


def apply_point(suite: Suite, point: dict[str, Any], path: Path | str = "suite") -> Suite:
    """The suite with one grid point's values set (seed excluded: it is the run's, not a setting)."""
    data = copy.deepcopy(suite.model_dump())
    for key, value in point.items():
        if key != "seed":
            set_path(data, key, value)
    try:
        return Suite.model_validate(data)
    except ValidationError as err:
        raise one_line(Path(str(path)), err) from None


def grid_size(suite: Suite) -> tuple[int, int]:
    """(points of the grid's cross product, runs): a key swept for one arm does not multiply the others."""
    points = math.prod(len(values) for values in suite.grid.values())
    runs = sum(
        math.prod(len(values) for key, values in arm_point(suite.grid, arm).items()) for arm in suite.arms
    )
    return points, runs


# -- the budget ------------------------------------------------------------------------------------------
def split_budget(units: float, cost: Cost, share: float, kinds: Sequence[DataKind]) -> dict[str, int]:
    """How many items of each kind of feedback in `kinds` (those a recipe trains on) `units` buy: the kind
    bought with the demonstration share (demonstrations) gets `share` of the units, the rest is split
    evenly between the other kinds (half each for comparisons and binary labels)."""
    bought, rest = {}, units
    for kind in kinds:
        if kind.share:
            price = getattr(cost, kind.cost)
            bought[kind.name] = math.floor(units * share / price + 1e-9)
            rest = units - bought[kind.name] * price
    others = [kind for kind in kinds if not kind.share]
    for kind in others:
        bought[kind.name] = math.floor(rest / len(others) / getattr(cost, kind.cost) + 1e-9)
    return {kind.name: bought[kind.name] for kind in kinds}


def default_share(arm: Arm) -> float:
    if arm.demonstration_share is not None:
        return arm.demonstration_share
    kinds = arm.data_kinds
    if any(k.share for k in kinds):
        return 0.5 if any(not k.share for k in kinds) else 1.0
    return 0.0


def arm_budget(suite: Suite, arm: Arm) -> dict[str, int]:
    """What the arm's budget buys: items of every kind of feedback (`compare.stages.DATA_KINDS`) by name,
    0 for the kinds its recipe does not train on."""
    bought = split_budget(suite.budget.units, suite.budget.cost, default_share(arm), arm.data_kinds)
    return {name: bought.get(name, 0) for name in DATA_KINDS}


def arm_settings(suite: Suite, arm: Arm) -> Stages:
    """The suite's stage settings with the arm's overrides applied (validated): `.dpo`, `.ppo`, ..."""
    merged = suite.stages.model_dump()
    for kind, overrides in arm.stages.items():
        merged[kind] = {**merged[kind], **overrides}
    return Stages.model_validate(merged)
