"""The grid and the budget: pure functions of a validated suite (no stage, no planner), so that loading a
suite can check its grid and budget without importing the planner."""

from __future__ import annotations

import copy
import itertools
import math
from pathlib import Path
from typing import Any

from pydantic import ValidationError

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
def split_budget(
    units: float, cost: Cost, share: float, demos: bool, comparisons: bool, labels: bool
) -> tuple[int, int, int]:
    """How many demonstrations, comparisons and binary labels `units` buy when a share goes to
    demonstrations; the rest buys comparisons or labels, half each for a recipe that needs both."""
    n_demos = math.floor(units * share / cost.demonstration + 1e-9) if demos else 0
    rest = units - n_demos * cost.demonstration
    if comparisons and labels:
        rest /= 2
    n_comparisons = math.floor(rest / cost.comparison + 1e-9) if comparisons else 0
    n_labels = math.floor(rest / cost.label + 1e-9) if labels else 0
    return n_demos, n_comparisons, n_labels


def default_share(arm: Arm) -> float:
    if arm.demonstration_share is not None:
        return arm.demonstration_share
    if arm.needs_demonstrations and (arm.needs_comparisons or arm.needs_labels):
        return 0.5
    return 1.0 if arm.needs_demonstrations else 0.0


def arm_budget(suite: Suite, arm: Arm) -> tuple[int, int, int]:
    """(demonstrations, comparisons, binary labels) the arm's budget buys."""
    return split_budget(
        suite.budget.units,
        suite.budget.cost,
        default_share(arm),
        arm.needs_demonstrations,
        arm.needs_comparisons,
        arm.needs_labels,
    )


def arm_allocation(suite: Suite, arm: Arm) -> tuple[int, int]:
    """(demonstrations, comparisons) the arm's budget buys (`arm_budget` has its labels too)."""
    return arm_budget(suite, arm)[:2]


def arm_settings(suite: Suite, arm: Arm) -> Stages:
    """The suite's stage settings with the arm's overrides applied (validated): `.dpo`, `.ppo`, ..."""
    merged = suite.stages.model_dump()
    for kind, overrides in arm.stages.items():
        merged[kind] = {**merged[kind], **overrides}
    return Stages.model_validate(merged)
