"""Shared figure helpers (matplotlib, Agg backend). The figures themselves live with their study's
analysis module: :mod:`sweepjax.analysis.scaling` (loss vs width), :mod:`sweepjax.analysis.lottery`
(tickets, ensembles, mirror pairs), :mod:`sweepjax.analysis.coordcheck` (muP coordinate check)."""
from __future__ import annotations

from pathlib import Path

import sys

import matplotlib

if "ipykernel" not in sys.modules:   # files only; a notebook keeps its inline backend (figures shown there too)
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402,F401  (re-exported for the analysis modules)


def save(fig, path: Path) -> Path:
    """Lay out, write and close a figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def width_ticks(ax, widths) -> None:
    """Plain-number ticks at the swept widths on a log axis."""
    ax.set_xticks(widths, [f"{int(w)}" for w in widths])
    ax.minorticks_off()
