"""Figure of a fit: data, fitted law, bootstrap confidence band and extrapolation, drawn
with matplotlib's Agg canvas (no pyplot, no global backend change) and saved to a file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .estimate import FitResult, predict
from .inputs import as_columns
from .uncertainty import BootstrapResult

MAX_CURVES = 6  # joint forms: at most this many curves (values of the other variables)


def plot_fit(result: FitResult, x: object, y: object, path: str | Path, *,
             boot: BootstrapResult | None = None, extrapolate: float = 4.0,
             title: str | None = None, xlabel: str | None = None) -> Path:
    """Save a log-log plot of ``y`` against the form's first variable with the fitted law.

    Args:
      result: the fit. x, y: the data as given to `fit` (``y`` may be 2-D runs x points:
        runs are drawn faint, their median solid).
      path: image file to write (format from the suffix, e.g. .png, .pdf).
      boot: adds the pointwise percentile band of the bootstrap refits at its level.
      extrapolate: the curve runs to ``extrapolate`` times the largest size (dashed past
        the data).
      title: figure title (default: form and parameters).
      xlabel: x-axis label (default: the form's first variable).

    For joint forms one curve is drawn per combination of the other variables (up to
    `MAX_CURVES`, evenly chosen). Returns the path written.
    """
    X = as_columns(x, result.spec)
    Y = np.asarray(y, float)
    runs = Y if Y.ndim == 2 else None
    y_mid = np.nanmedian(Y, axis=0) if runs is not None else Y
    others = X[:, 1:]
    combos = np.unique(others, axis=0) if others.shape[1] else np.zeros((1, 0))
    combos = combos[np.unique(np.linspace(0, len(combos) - 1, MAX_CURVES).round().astype(int))]
    lo_x, hi_x = X[:, 0].min(), X[:, 0].max()
    grid = np.geomspace(lo_x, hi_x * extrapolate, 200)

    fig = Figure(figsize=(6.4, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = [f"C{i}" for i in range(10)]
    for i, combo in enumerate(combos):
        color = colors[i % len(colors)]
        sel = np.all(others == combo, axis=1)
        label = ", ".join(f"{v}={c:g}" for v, c in zip(result.spec.variables[1:], combo))
        if runs is not None:
            for r in runs[:, sel]:
                ax.plot(X[sel, 0], r, ".", color=color, alpha=0.25, ms=4)
        ax.plot(X[sel, 0], y_mid[sel], "o", color=color, ms=5, label=label or "data")
        G = np.column_stack([grid, np.broadcast_to(combo, (len(grid), len(combo)))])
        curve = result.predict(G)
        inside = grid <= hi_x
        ax.plot(grid[inside], curve[inside], "-", color=color, lw=1.5,
                label=None if label else "fit")
        ax.plot(grid[~inside], curve[~inside], "--", color=color, lw=1.5,
                label=None if label else "extrapolation")
        if boot is not None:
            band = predict(result.spec, boot.raw[np.all(np.isfinite(boot.raw), axis=1)], G)
            q = 100 * (1 - boot.level) / 2
            lo, hi = np.percentile(band, [q, 100 - q], axis=0)
            ax.fill_between(grid, lo, hi, color=color, alpha=0.2, lw=0,
                            label=None if label else f"{100 * boot.level:g}% bootstrap band")
    ax.axvline(hi_x, color="0.6", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel or result.spec.variables[0])
    ax.set_ylabel("loss")
    ax.set_title(title or f"{result.form}: " + ", ".join(f"{k}={v:.4g}"
                                                         for k, v in result.params.items()),
                 fontsize=9)
    ax.legend(fontsize=8)
    path = Path(path)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path
