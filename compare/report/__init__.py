"""The report: tables, figures and checked claims built only from the files a run saved.

- `files`: writing a report folder, reading its files back (each checked), rebuilding report.md and
  report.html;
- `roles`: which arm is which, from the recipes' stage roles (never from arm names);
- `series`: numbers read out of the results (per-seed values, curves, frontier points);
- `stats`: the statistics, pure functions;
- `claims`: per-axis statements and the claims table; `tables`: the markdown tables;
- `figures`: the PNGs; `render`: report.md's sections;
- `html`: report.html, report.md as one self-contained page; `charts`: its figures as SVG.
"""

# compare.plan and compare.suite import each other, and only loading compare.suite first works; the
# tables need compare.plan, so the suite package is loaded here, before any module of this one.
import compare.suite  # noqa: F401
from compare.report.files import (
    FAILED_RUNS,
    ReportError,
    provenance,
    read_csv_checked,
    read_saved,
    rebuild_report,
    write_report,
)
from compare.report.html import render_html
from compare.report.render import render_markdown
from compare.report.tables import table_cell

__all__ = [
    "FAILED_RUNS",
    "ReportError",
    "provenance",
    "read_csv_checked",
    "read_saved",
    "rebuild_report",
    "render_html",
    "render_markdown",
    "table_cell",
    "write_report",
]
