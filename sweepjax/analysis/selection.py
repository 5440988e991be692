"""Best over a hyperparameter axis: per size, keep the learning rate (or any swept value) that won.

Scaling studies tune the learning rate per model size and fit the law to the best run of each size
(Kaplan et al., Hoffmann et al.; study 4 in PAPERS.md). :func:`best_over` does that selection on a
results Dataset so that the width fit, the figures and the ensemble analyses see one value per size,
and it reports which value won, so a winner at the edge of the swept range can be spotted.
"""
from __future__ import annotations

import numpy as np
import xarray as xr


def selection_loss(ds: xr.Dataset, metric: str = "final_test_loss", runs: str = "seed") -> xr.DataArray:
    """The score each value of the axis is judged by: ``metric`` with diverged members as +inf (the
    worst loss, never a missing run), reduced by the median over ``runs`` when that dim exists.

    A value where half or more of the runs diverged scores +inf; NaN (members not run) is ignored.
    """
    loss = ds[metric]
    if "diverged" in ds:
        loss = loss.where(~ds["diverged"].astype(bool), np.inf)
    if runs in loss.dims:
        loss = loss.median(runs, skipna=True)
    return loss


def best_over(ds: xr.Dataset, dim: str = "lr", metric: str = "final_test_loss", runs: str = "seed") -> xr.Dataset:
    """``ds`` with ``dim`` removed: at every other coordinate (width, depth, parameterization ...), every
    variable is taken at the value of ``dim`` with the lowest :func:`selection_loss` (ties: the first).

    Adds ``best_<dim>`` (the winning value) and ``best_<dim>_at_edge`` (True where the winner is the
    smallest or largest value swept: the optimum may lie outside the range). Coordinates where every
    value scored +inf or NaN (all diverged or not run) keep the first value and are flagged by
    ``best_<dim>_valid`` = False. The choice is made once on the full data; per-seed losses of the
    winner are kept, so a bootstrap over seeds afterwards does not re-select (it treats the winner as
    fixed, a slightly optimistic interval when several values are nearly tied).
    """
    if dim not in ds.dims:
        raise ValueError(f"best_over: no dimension {dim!r} (dims: {', '.join(map(str, ds.dims))})")
    score = selection_loss(ds, metric, runs)
    filled = score.fillna(np.inf)
    winner = filled.argmin(dim)
    out = ds.isel({dim: winner}).drop_vars(dim, errors="ignore")
    values = ds[dim].values
    best = xr.DataArray(values[winner.values], dims=winner.dims, coords=winner.coords)
    out[f"best_{dim}"] = best
    numeric = np.issubdtype(values.dtype, np.number) and len(values) > 1
    out[f"best_{dim}_at_edge"] = ((best == values.min()) | (best == values.max())) if numeric else xr.zeros_like(best, bool)
    out[f"best_{dim}_valid"] = np.isfinite(filled.min(dim))
    out.attrs = dict(ds.attrs)
    return out
