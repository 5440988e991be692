"""Width scaling: median over seeds of the final test loss against width, fitted as a power law.

One fit per combination of the other swept coordinates (e.g. one per activation); the exponent's
interval comes from a bootstrap over seeds (resample seeds, take the median per width, refit).
Diverged members count as the worst loss (+inf), not as missing: see :func:`width_scaling`.
"""
from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import TextIO

import numpy as np
import xarray as xr

from sweepjax import fit as fitting
from sweepjax.fit.inputs import reduce_runs
from sweepjax.fit.io import Slice, fitted_loss, slice_name, sweep_slices

__all__ = ["describe", "fitted_loss", "plot_scaling", "slice_name", "slices", "width_scaling"]


def slices(ds: xr.Dataset, keep: tuple[str, ...]) -> list[dict]:
    """Every combination of coordinates of the dims of ``final_test_loss`` not in ``keep``."""
    other = [d for d in ds["final_test_loss"].dims if d not in keep]
    return [dict(zip(other, combo)) for combo in itertools.product(*(ds[d].values.tolist() for d in other))]


def width_scaling(ds: xr.Dataset, form: str = "power_law", n_boot: int = 1000, seed: int = 0,
                  min_width: int = 0, max_width: int = 0, level: float = 0.95,
                  log: TextIO | None = sys.stderr) -> list[dict]:
    """Fit the median over seeds of :func:`fitted_loss` vs width for each slice; one dict per slice.

    The slices are :func:`sweepjax.fit.sweep_slices` of ``final_test_loss`` against ``width`` over
    ``seed`` (the path ``sweepjax fit`` and ``fit_results`` use too), so the loss floor the results
    carry is subtracted and:

    Diverged members (survivorship): a diverged member counts as the worst loss (+inf) in the median
    over seeds, so a width where half or more of the seeds diverged has median +inf and is left out of
    the fit (listed in ``unfitted_widths``), and one where fewer diverged has a median pushed up by them.
    The bootstrap resamples seeds with the same rule: a width whose median in a resample is +inf is
    dropped from that resample's fit (the resample still counts), so the medians of widths with many
    diverged seeds swing high or drop out across resamples and the interval spreads towards the flatter
    laws they imply, instead of being conditioned on survival. Only resamples left with too few widths
    to fit at all are not used; their number is ``boot_failed`` (shown by :func:`describe`). Members not
    run (NaN, not diverged) are ignored.

    A finite loss <= 0 (a member at or below the loss floor: float32 rounding, chance when a model's
    excess is below the test set's sampling noise, or a bug) cannot be fitted in log space: that member
    is left out (as if not run) and one warning line goes to ``log``; ``n_below_floor`` counts them.

    Each dict: ``slice`` (coords), ``form``, ``loss`` (axis label), ``widths`` and ``median_loss``
    (the fitted widths and their medians, loss units), ``all_widths`` (widths in the window that ran),
    ``seeds_per_width`` and ``diverged_per_width`` (seeds run / diverged, aligned with ``all_widths``),
    ``unfitted_widths``, ``n_below_floor``, ``params`` (fitted, natural units), ``alpha``, ``alpha_ci``
    (percentile bootstrap over seeds at ``level``; None if n_boot = 0 or no seed axis), ``boot_failed``,
    ``converged``, and ``note`` (why there is no fit, when too few widths are left: then ``alpha`` is None).
    Widths outside [min_width, max_width] (0 = no bound) are left out.
    """
    w = ds["width"].values
    ds = ds.isel(width=np.flatnonzero((w >= min_width) & ((w <= max_width) if max_width else True)))
    return [_fit_row(part, form, n_boot, seed, level)
            for part in sweep_slices(ds, "width", "final_test_loss", "seed", log=log).values()]


def _fit_row(part: Slice, form: str, n_boot: int, seed: int, level: float) -> dict:
    """The :func:`width_scaling` dict of one slice."""
    x, loss = part.x[:, 0], part.y
    med = reduce_runs(loss, "median")
    ok = np.isfinite(med)
    row = {"slice": part.sel, "form": form, "loss": part.label, "widths": x[ok].tolist(),
           "median_loss": med[ok].tolist(), "all_widths": x.tolist(),
           "seeds_per_width": (~np.isnan(loss)).sum(axis=0).tolist(),
           "diverged_per_width": np.isposinf(loss).sum(axis=0).tolist(),
           "unfitted_widths": x[~ok].tolist(), "n_below_floor": part.n_below_floor, "params": {},
           "alpha": None, "alpha_ci": None, "boot_failed": 0, "level": level, "converged": False, "note": ""}
    return {**row, **fit_medians(x, loss, form, n_boot, seed, level)}


def fit_medians(x: np.ndarray, loss: np.ndarray, form: str, n_boot: int, seed: int, level: float) -> dict:
    """Fit ``form`` to the median over runs of ``loss`` (runs, sizes) at the sizes where it is finite, and
    bootstrap the exponent over runs: ``params``, ``alpha``, ``converged``, ``alpha_ci``, ``boot_failed``,
    or ``note`` (why there is no fit)."""
    med = reduce_runs(loss, "median")
    ok = np.isfinite(med)
    try:
        res = fitting.fit(x[ok], med[ok], form=form)
    except fitting.FitInputError as err:
        return {"note": f"no fit: {err}"}
    out = {"params": {k: float(v) for k, v in res.params.items()}, "alpha": float(res.params["alpha"]),
           "converged": bool(res.converged)}
    if n_boot and loss.shape[0] > 1:
        boot = fitting.bootstrap(x, loss, form=form, n_resamples=n_boot, seed=seed, level=level, reduce="median")
        out.update(alpha_ci=tuple(float(v) for v in boot.ci("alpha")), boot_failed=n_boot - boot.n_valid)
    return out


def describe(row: dict) -> str:
    """One line: slice, exponent with its interval, fit window, diverged seeds per width."""
    name = slice_name(row["slice"])
    div = row.get("diverged_per_width", [])
    diverged = ""
    if any(div):
        counts = " ".join(f"{w:g}:{d}/{n}" for w, d, n in zip(row["all_widths"], div, row["seeds_per_width"]))
        diverged = f"; diverged seeds per width {counts} (counted as worst)"
    if row.get("unfitted_widths"):
        unfit = row["unfitted_widths"]
        diverged += (f"; width{'s' * (len(unfit) > 1)} {', '.join(f'{w:g}' for w in unfit)} not fitted "
                     "(half or more of their seeds diverged)")
    if row["alpha"] is None:
        return f"{name}: {row.get('loss', 'loss')} ~ width^-alpha: {row['note']}{diverged}"
    ci = (f" [{row['alpha_ci'][0]:.3f}, {row['alpha_ci'][1]:.3f}] ({row['level']:.0%} bootstrap over seeds"
          + (f", {row['boot_failed']} resamples unfittable" if row.get("boot_failed") else "") + ")"
          if row["alpha_ci"] else "")
    flag = "" if row["converged"] else "  (fit did NOT converge)"
    w = row["widths"]
    return (f"{name}: {row.get('loss', 'loss')} ~ width^-alpha, alpha = {row['alpha']:.3f}{ci}, "
            f"widths {w[0]:g}-{w[-1]:g}, form {row['form']}{diverged}{flag}")


def at_best_lr(ds: xr.Dataset) -> xr.Dataset:
    """The sweep at each size's best learning rate (:func:`sweepjax.analysis.selection.best_over`) when it has
    an ``lr`` axis, else ``ds``: what the width fit of a run and its figure use, as scaling studies fit."""
    from sweepjax.analysis.selection import best_over
    return best_over(ds, "lr") if "lr" in ds.dims else ds


def plot_scaling(ds: xr.Dataset, rows: list[dict], path: Path) -> Path:
    """Median final test loss vs width (IQR band over seeds), fitted power law, N^-1 and N^-4 guides; over
    an ``lr`` axis, at each width's best lr (:func:`at_best_lr`, as the fit rows).

    Diverged seeds count as the worst loss (as in the fit): a median or quartile they make +inf is not drawn.
    """
    from sweepjax.plots import plt, save, width_ticks
    ds = at_best_lr(ds)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    target, label = fitted_loss(ds)
    for i, row in enumerate(rows):
        da = target.sel(**row["slice"]) if row["slice"] else target
        w = da["width"].values
        v = da.transpose("seed", "width").values if "seed" in da.dims else da.values[None]
        with np.errstate(invalid="ignore"):  # quartiles between a finite loss and +inf
            q = np.nanpercentile(v, [25, 50, 75], axis=0)
        q[1] = reduce_runs(v, "median")
        q = np.where(np.isfinite(q), q, np.nan)
        color = f"C{i}"
        ax.fill_between(w, q[0], q[2], color=color, alpha=0.2, lw=0)
        ax.plot(w, q[1], "o", color=color, label=f"{slice_name(row['slice'])} (median over seeds)")
        if row["alpha"] is None:
            continue
        x = np.array(row["widths"])
        p = row["params"]
        fit_y = p["A"] * x ** -p["alpha"] + p.get("E", 0.0)
        ci = f" [{row['alpha_ci'][0]:.2f}, {row['alpha_ci'][1]:.2f}]" if row["alpha_ci"] else ""
        ax.plot(x, fit_y, "-", color=color, label=f"fit: alpha = {row['alpha']:.2f}{ci}")
    fitted = [r for r in rows if r["alpha"] is not None]
    if fitted:
        x0, y0 = fitted[0]["widths"][0], fitted[0]["median_loss"][0]
        xs = np.array([x0, ds["width"].values.max()])
        guides = ((1, ":"),) if "irreducible_loss" in ds else ((1, ":"), (4, "--"))  # N^-4: the lottery study's
        for p, style in guides:
            ax.plot(xs, y0 * (xs / x0) ** -p, "k" + style, lw=1, label=f"N^-{p} guide")
    ax.set(xscale="log", yscale="log", xlabel="width N", ylabel=label, title="Loss vs width")
    width_ticks(ax, ds["width"].values)
    ax.legend(fontsize=7)
    return save(fig, path)
