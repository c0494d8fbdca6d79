"""A matplotlib figure of panels, and saving one: what every figure module of the report draws on
(`figures.py`, `pass_at_k.py`, `preference_diagnostics.py`), with no pyplot and no global backend."""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure


def save(fig: Figure, path: Path) -> Path:
    """Write `fig` to `path` (PNG; SVG or PDF at slide size) and return the path."""
    if path.suffix in (".svg", ".pdf"):  # a slide (`slide_figures`): 16:9, as large as the slide
        fig.set_size_inches(12.8, 7.2)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")  # "tight": legends beside the axes are kept whole
    return path


def panels(n: int, width: float, height: float, per_row: int = 4, sharey: bool = False):
    """A figure with n panels, at most `per_row` a row; returns the figure and a flat list of n axes.
    `sharey`: one gold scale for every panel, where panels are compared by height."""
    cols = min(n, per_row)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows))
    axes = list(fig.subplots(rows, cols, squeeze=False, sharey=sharey).flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]
