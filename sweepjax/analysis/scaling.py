"""Width scaling: median over seeds of the final test loss against width, fitted as a power law.

One fit per combination of the other swept coordinates (e.g. one per activation); the exponent's
interval comes from a bootstrap over seeds (resample seeds, take the median per width, refit).
"""
from __future__ import annotations

import itertools

import numpy as np
import xarray as xr

from sweepjax import fit as fitting


def slices(ds: xr.Dataset, keep: tuple[str, ...]) -> list[dict]:
    """Every combination of coordinates of the dims of ``final_test_loss`` not in ``keep``."""
    other = [d for d in ds["final_test_loss"].dims if d not in keep]
    return [dict(zip(other, combo)) for combo in itertools.product(*(ds[d].values.tolist() for d in other))]


def fitted_loss(ds: xr.Dataset) -> tuple[xr.DataArray, str]:
    """The loss the width fit uses, and its axis label: the final test loss, minus the task's
    irreducible loss when the results hold one (the Markov chain's entropy rate)."""
    if "irreducible_loss" in ds:
        return ds["final_test_loss"] - ds["irreducible_loss"], "final test loss - entropy rate (nats)"
    return ds["final_test_loss"], "final test loss"


def width_scaling(ds: xr.Dataset, form: str = "power_law", n_boot: int = 1000, seed: int = 0,
                  min_width: int = 0, max_width: int = 0, level: float = 0.95) -> list[dict]:
    """Fit median final test loss (see :func:`fitted_loss`) vs width for each slice; one dict per slice.

    Each dict: ``slice`` (coords), ``widths``, ``median_loss``, ``params`` (fitted, natural units),
    ``alpha``, ``alpha_ci`` (percentile bootstrap over seeds at ``level``; None if n_boot = 0 or
    no seed axis), ``converged``, ``form``. Widths outside [min_width, max_width] (0 = no bound)
    and widths whose seeds all diverged are left out of the fit.
    """
    rows = []
    target, label = fitted_loss(ds)
    for sel in slices(ds, ("seed", "width")):
        da = target.sel(**sel) if sel else target
        w = da["width"].values
        keep = (w >= min_width) & ((w <= max_width) if max_width else True)
        da = da.isel(width=np.flatnonzero(keep))
        loss = da.transpose("seed", "width").values if "seed" in da.dims else da.values[None, :]
        ok = np.isfinite(loss).any(axis=0)
        x, loss = da["width"].values[ok].astype(float), loss[:, ok]
        med = np.nanmedian(loss, axis=0)
        res = fitting.fit(x, med, form=form)
        ci = None
        if n_boot and loss.shape[0] > 1:
            boot = fitting.bootstrap(x, loss, form=form, n_resamples=n_boot, seed=seed, level=level, reduce="median")
            ci = tuple(float(v) for v in boot.ci("alpha"))
        rows.append({"slice": sel, "form": form, "widths": x.tolist(), "median_loss": med.tolist(),
                     "params": {k: float(v) for k, v in res.params.items()}, "alpha": float(res.params["alpha"]),
                     "alpha_ci": ci, "level": level, "converged": bool(res.converged), "loss": label})
    return rows


def describe(row: dict) -> str:
    """One line: slice, exponent with its interval, fit window."""
    name = ", ".join(f"{k}={v}" for k, v in row["slice"].items()) or "all"
    ci = (f" [{row['alpha_ci'][0]:.3f}, {row['alpha_ci'][1]:.3f}] ({row['level']:.0%} bootstrap over seeds)"
          if row["alpha_ci"] else "")
    flag = "" if row["converged"] else "  (fit did NOT converge)"
    w = row["widths"]
    return (f"{name}: {row.get('loss', 'loss')} ~ width^-alpha, alpha = {row['alpha']:.3f}{ci}, "
            f"widths {w[0]:g}-{w[-1]:g}, form {row['form']}{flag}")
