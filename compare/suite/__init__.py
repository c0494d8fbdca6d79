"""The suite: its schema (`schema.py`, no I/O), reading and validating a file (`loading.py`), the grid and
the budget as pure functions of a suite (`grid.py`), its errors.

`load_suite` and `load_suites` are imported on first use: loading reads YAML and the limits, which most
importers of the schema never need.
"""

from compare.suite.errors import SuiteError, one_line
from compare.suite.schema import Arm, Collection, Stages, Suite

__all__ = ["Arm", "Collection", "Stages", "Suite", "SuiteError", "load_suite", "load_suites", "one_line"]


def __getattr__(name: str):
    if name in ("load_suite", "load_suites"):
        from compare.suite import loading

        return getattr(loading, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
