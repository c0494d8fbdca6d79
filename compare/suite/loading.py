"""Reading a suite file: YAML (bounded), `include:`, `--set` overrides, validation of every grid point.

The `grid` sweeps any setting of the suite: each key is a dotted path into the suite (`budget.units`,
`stages.dpo.beta`, `task.annotator.flip_rate`) or `seed`, each value a list; runs are every arm at every
point of the grid's cross product. A key `arms.<arm>.stages.<stage>.<setting>` sweeps one arm's setting
without multiplying the other arms. `include: other.yaml` starts a file from another file's settings by
the rule of `INCLUDE_REPLACES`: `arms` and `grid` (and `name`, `description`) are taken whole from the
including file when it names them, every other key (`task`, `base`, `budget`, `stages`, `eval`) is merged
key by key, this file's values winning. A file with `suites: [...]` is a `Collection` of suites run
together.

Inputs that would exhaust the machine or fail late are refused here, before anything runs
(compare/limits.py): YAML alias bombs and duplicate keys, include cycles, inf and nan, seeds numpy
refuses, names that are not one folder, grids too large to plan. Nothing here reads a dataset, a model
or the machine's memory: that is preflight's (`compare/preflight.py`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from compare import limits
from compare.suite.errors import SuiteError, one_line
from compare.suite.grid import (
    apply_point,
    arm_budget,
    arm_settings,
    default_share,
    grid_points,
    grid_size,
    set_path,
)
from compare.suite.schema import Collection, Suite


def _has_path(suite: Suite, dotted: str) -> bool:
    parts = dotted.split(".")
    # an arm's own stage setting: arms.<arm>.stages.<kind>.<field>, swept for that arm only
    if len(parts) == 5 and parts[0] == "arms" and parts[2] == "stages":
        arm = suite.arms.get(parts[1])
        kind_fields = type(getattr(suite.stages, parts[3], None)).model_fields if arm else {}
        return arm is not None and parts[3] in arm.recipe and parts[4] in kind_fields
    node: Any = suite
    for part in dotted.split("."):
        if isinstance(node, BaseModel) and part in type(node).model_fields:
            node = getattr(node, part)
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    return not isinstance(node, BaseModel | dict)


def load_suites(
    path: str | Path, overrides: list[str] | None = None
) -> tuple[Collection | None, list[Suite]]:
    """A suite file, or a collection of them: (the collection or None, the validated suites)."""
    path = Path(path)
    data = _read_yaml(path)
    data.pop("_description_from", None)
    if "suites" not in data:
        return None, [load_suite(path, overrides)]
    try:
        collection = Collection.model_validate(data)
    except ValidationError as err:
        raise one_line(path, err) from None
    suites = [load_suite(path.parent / member, overrides) for member in collection.suites]
    names = [s.name for s in suites]
    if len(set(names)) != len(names):
        raise SuiteError(f"{path}: suites: two suites share a name ({', '.join(names)})")
    if collection.findings:
        for member, suite in zip(collection.suites, suites):
            seeds = suite.grid.get("seed", [0])
            if len(set(seeds)) < 10:
                raise SuiteError(
                    f"{path.parent / member}: grid.seed: {len(set(seeds))} seed{'s' if len(set(seeds)) != 1 else ''}; a findings "
                    "collection decides "
                    "each claim on a discovery and a confirmation half of at least 5 seeds each: give 10 or more"
                )
    runs = sum(grid_size(s)[1] for s in suites)
    if runs > limits.MAX_RUNS:
        raise SuiteError(
            f"{path}: suites: {limits.count(runs)} runs in all; at most {limits.MAX_RUNS} in one collection"
        )
    return collection, suites


def _shown(file: Path, top: Path) -> str:
    """A file of an include chain as the chain's error shows it: relative to the first file's folder."""
    try:
        return os.path.normpath(os.path.relpath(file, top.parent))
    except ValueError:  # another drive
        return str(file)


def _real(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return path.absolute()


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """The file's mapping, its `include:` merged under it; `chain` holds the files that include it."""
    if not path.exists():
        raise SuiteError(f"{path}: no such file")
    if path.is_dir():
        raise SuiteError(f"{path}: is a directory, not a suite file")
    try:
        with path.open("rb") as f:  # read at most the limit: /dev/zero or a huge file is refused too
            raw = f.read(limits.MAX_SUITE_BYTES + 1)
    except OSError as e:
        raise SuiteError(f"{path}: cannot read it ({e.strerror or e})") from None
    if len(raw) > limits.MAX_SUITE_BYTES:
        raise SuiteError(
            f"{path}: larger than {limits.MAX_SUITE_BYTES // 1024**2} MB; a suite file is a few KB of YAML"
        )
    try:
        data = limits.load_yaml(raw.decode("utf-8"))
    except limits.YamlLimit as e:
        raise SuiteError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "YAML"
        raise SuiteError(f"{path}: {where}: invalid YAML ({getattr(e, 'problem', None) or e})") from None
    except UnicodeDecodeError:
        raise SuiteError(f"{path}: not a text file") from None
    if data is None:
        raise SuiteError(f"{path}: the file is empty")
    if not isinstance(data, dict):
        raise SuiteError(f"{path}: a suite is a mapping of keys, got {type(data).__name__}")
    if "include" in data:  # shared settings from another file; this file's keys win (lm-eval style)
        included = data.pop("include")
        if not isinstance(included, str):
            raise SuiteError(f"{path}: include: expected a file name, got {included!r}")
        chain = (*chain, path)
        target = path.parent / included
        real = [_real(p) for p in chain]
        if _real(target) in real:
            cycle = [*chain[real.index(_real(target)) :], target]
            shown = " -> ".join(_shown(p, chain[0]) for p in cycle)
            raise SuiteError(f"{chain[0]}: include cycle: {shown}")
        if len(chain) >= limits.MAX_INCLUDE_DEPTH:
            raise SuiteError(
                f"{chain[0]}: include: more than {limits.MAX_INCLUDE_DEPTH} files in one include chain "
                f"({_shown(chain[0], chain[0])} -> ... -> {_shown(target, chain[0])})"
            )
        included_data = _read_yaml(target, chain)
        if "description" in included_data and "description" not in data:
            data["_description_from"] = included_data.get("_description_from", _shown(target, chain[0]))
        elif "description" in data:
            included_data.pop("_description_from", None)
        data = {**_merge(included_data, {k: v for k, v in data.items() if k not in INCLUDE_REPLACES}),
                **{k: v for k, v in data.items() if k in INCLUDE_REPLACES}}  # fmt: skip
    return data


# Top-level keys an including file replaces whole rather than merges into the included file's: a file
# that lists its arms gets exactly those arms (not the included file's too), a file with a grid sweeps
# exactly its grid. To add an arm to an included file's arms, list them all.
INCLUDE_REPLACES = frozenset({"name", "description", "arms", "grid"})


def _merge(base: dict, over: dict) -> dict:
    merged = dict(base)
    for key, value in over.items():
        merged[key] = (
            _merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        )
    return merged


def load_suite(path: str | Path, overrides: list[str] | None = None) -> Suite:
    """Read, override (`key.path=value`, value parsed as YAML) and validate a suite file."""
    path = Path(path)
    data = _read_yaml(path)
    description_from = data.pop("_description_from", None)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SuiteError(f"--set {item!r}: expected key.path=value")
        try:
            value = limits.load_yaml(raw)
            if key.startswith("grid.") and len(key) > len("grid."):  # a grid key is itself a dotted path
                grid = data.setdefault("grid", {})
                if not isinstance(grid, dict):
                    raise KeyError(key)
                grid[key[len("grid.") :]] = value
            else:
                set_path(data, key, value)
        except limits.YamlLimit as e:
            raise SuiteError(f"--set {item!r}: {e}") from None
        except (KeyError, yaml.YAMLError):
            raise SuiteError(f"--set {item!r}: cannot set {key}") from None
    try:
        suite = Suite.model_validate(data)
    except ValidationError as err:
        raise one_line(path, err) from None
    validate_runs(suite, path)
    suite._source = str(path)
    if description_from and not any(item.startswith("description=") for item in overrides or []):
        suite._description_from = description_from
    return suite


def _check_grid_size(suite: Suite, path: Path) -> None:
    """Before any grid point is resolved: validation and planning visit every one of them."""
    points, runs = grid_size(suite)
    if points > limits.MAX_GRID_POINTS:
        sizes = " x ".join(str(len(values)) for values in suite.grid.values())
        raise SuiteError(
            f"{path}: grid: {limits.count(points)} points in the grid's cross product ({sizes}); "
            f"at most {limits.MAX_GRID_POINTS}"
        )
    if runs > limits.MAX_RUNS:
        raise SuiteError(
            f"{path}: grid: {limits.count(runs)} runs ({len(suite.arms)} arms over {limits.count(points)} "
            f"grid points); at most {limits.MAX_RUNS}"
        )


def validate_runs(suite: Suite, path: Path) -> None:
    """Everything about the file that can fail before training: grid keys and size, every grid point's
    settings, budget arithmetic. (What a point asks of the machine is preflight's.)"""
    for key in suite.grid:
        if key != "seed" and not _has_path(suite, key):
            raise SuiteError(
                f"{path}: grid.{key}: unknown setting (grid keys are dotted paths into the suite)"
            )
    _check_grid_size(suite, path)
    for point in grid_points(suite):
        resolved = apply_point(suite, point, path)
        for name, arm in resolved.arms.items():
            try:
                arm_settings(resolved, arm)
            except ValidationError as err:
                raise one_line(path, err, prefix=f"arms.{name}.stages") from None
        for name, arm in resolved.arms.items():
            try:
                bought = arm_budget(resolved, arm)
            except OverflowError:  # units / cost beyond a float
                raise SuiteError(
                    f"{path}: budget.units: {resolved.budget.units:g} units buy more "
                    f"{' or '.join(k.name for k in arm.data_kinds)} for arm {name!r} than a number can hold"
                ) from None
            for kind in arm.data_kinds:
                if bought[kind.name] < 1:
                    share = f"share {default_share(arm):g}, " if kind.share else ""
                    price = getattr(resolved.budget.cost, kind.cost)
                    raise SuiteError(
                        f"{path}: budget.units: {resolved.budget.units:g} units buy no {kind.singular} for "
                        f"arm {name!r} ({share}cost.{kind.cost} {price:g})"
                    )
