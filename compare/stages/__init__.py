"""Every stage kind, one module each; `SPECS` maps a kind to its `StageSpec` (see `spec.py`).

The modules of this package are found, not listed: each exports `SPEC` (or `SPECS`, several), so a new
stage is one new module here and nothing else. Modules import TRL only inside their run functions.
"""

from __future__ import annotations

import importlib
import pkgutil

from compare.stages.spec import Data, Job, Produces, Role, StageSpec


def _discover() -> dict[str, StageSpec]:
    specs: dict[str, StageSpec] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        found = getattr(module, "SPECS", ()) + ((module.SPEC,) if hasattr(module, "SPEC") else ())
        for spec in found:
            spec.check()
            if spec.kind in specs:
                raise TypeError(f"stage kind {spec.kind!r} is declared twice")
            specs[spec.kind] = spec
    for spec in specs.values():
        spec.check_teacher(specs)
    return specs


SPECS: dict[str, StageSpec] = _discover()
RECIPE_STAGES: dict[str, StageSpec] = {k: s for k, s in SPECS.items() if s.in_recipes}

__all__ = ["SPECS", "RECIPE_STAGES", "Data", "Job", "Produces", "Role", "StageSpec"]
