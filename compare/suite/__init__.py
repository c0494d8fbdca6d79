"""The suite: its schema (`schema.py`, no I/O), reading and validating a file (`loading.py`), its errors."""

from compare.suite.errors import SuiteError, one_line
from compare.suite.loading import load_suite, load_suites
from compare.suite.schema import Arm, Collection, Stages, Suite

__all__ = ["Arm", "Collection", "Stages", "Suite", "SuiteError", "load_suite", "load_suites", "one_line"]
