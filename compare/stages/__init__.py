"""Every stage kind, one module each; `SPECS` maps a kind to its `StageSpec` (see `spec.py`), and
`DATA_KINDS` maps the name of each kind of feedback to its `DataKind`.

The modules of this package are found, not listed: each exports `SPEC` (or `SPECS`, several), and the
kinds of feedback its stages produce as `KINDS`, so a new stage is one new module here and nothing else.
Modules import TRL only inside their run functions.
"""

from __future__ import annotations

import importlib
import pkgutil

from compare.stages.spec import DataKind, Job, Produces, Role, StageSpec


def _discover() -> tuple[dict[str, StageSpec], dict[str, DataKind]]:
    specs: dict[str, StageSpec] = {}
    kinds: dict[str, DataKind] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found = getattr(module, "SPECS", ()) + ((module.SPEC,) if hasattr(module, "SPEC") else ())
        for spec in found:
            spec.check()
            if spec.kind in specs:
                raise TypeError(f"stage kind {spec.kind!r} is declared twice")
            specs[spec.kind] = spec
        for kind in getattr(module, "KINDS", ()):
            if kind.name in kinds:
                raise TypeError(f"data kind {kind.name!r} is declared twice")
            kinds[kind.name] = kind
    check_kinds(specs, kinds)
    for spec in specs.values():
        spec.check_teacher(specs)
    return specs, kinds


def check_kinds(specs: dict[str, StageSpec], kinds: dict[str, DataKind]) -> None:
    """Every kind of feedback has its producer stage and its own cost field, and every stage trains on a
    declared kind; one kind at most is bought with the demonstration share."""
    costs = [k.cost for k in kinds.values()]
    if len(set(costs)) != len(costs):
        raise TypeError(f"two data kinds share a cost field: {costs}")
    if sum(k.share for k in kinds.values()) > 1:
        raise TypeError("only one data kind is bought with the demonstration share")
    for kind in kinds.values():
        if kind.stage not in specs:
            raise TypeError(f"data kind {kind.name!r}: no stage {kind.stage!r} produces it")
    for spec in specs.values():
        if spec.data is not None and kinds.get(spec.data.name) is not spec.data:
            raise TypeError(f"stage {spec.kind}: trains on {spec.data.name!r}, which no module declares")


SPECS, DATA_KINDS = _discover()
RECIPE_STAGES: dict[str, StageSpec] = {k: s for k, s in SPECS.items() if s.in_recipes}

__all__ = ["SPECS", "RECIPE_STAGES", "DATA_KINDS", "DataKind", "Job", "Produces", "Role", "StageSpec"]
