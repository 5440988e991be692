"""Reading sweeps for fitting: an engine results directory (``DIR/results.nc``), a NetCDF
file, a CSV file, an xarray Dataset/DataArray or a pandas DataFrame, turned into
`Slice` s (sizes ``x``, losses ``y`` as runs x points), one per value of any remaining sweep axis.

`sweep_slices` is the one path from results to fit data: the width fit printed after a run
(`sweepjax.analysis.scaling.width_scaling`), ``sweepjax fit`` and `fit_results` all use it.
Layout of engine results: one dimension per swept config key (``seed``, ``width``,
``lr``, ``activation`` ...) with coordinates; data variables such as ``final_test_loss``
and ``diverged`` over those dimensions. A table is read as one row per member, indexed by its
size, run and group columns. In the fitted loss:

- diverged members (``diverged`` true; their stored loss is NaN) are +inf, the worst loss, so
  a size where many runs diverged is not fitted from its survivors; members not run stay NaN;
- the loss floor the results carry is subtracted (`fitted_loss`): ``test_bayes_loss`` (the true
  model's loss on the same test set) or, in older results, ``irreducible_loss``;
- a finite loss <= 0 (a member at or below the floor) cannot be fitted in log space: it is
  left out (NaN), with one warning line per slice.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd
import xarray as xr

from .estimate import FitResult, fit
from .forms import Form
from .inputs import FitInputError, reduce_runs

FLOORS = {"test_bayes_loss": "test-set Bayes loss", "irreducible_loss": "entropy rate"}
"""Loss floors a results Dataset may carry, in order of preference, and their labels."""
LOSSES = ("final_test_loss", "best_test_loss", "test_loss", "train_loss")
"""Loss variables of results saved before losses carried a ``units`` attribute."""


@dataclass
class Slice:
    """Data of one fit: ``x (n, V)`` sizes (columns named by ``names``) and ``y (runs, n)``
    losses, NaN for missing runs, +inf for diverged ones (the worst loss); only points where
    some run has a loss. ``sel``: the coordinates of the other axes that select the slice;
    ``label``: what y is (e.g. ``final test loss - test-set Bayes loss (nats)``);
    ``n_below_floor``: members left out because their loss was <= 0."""

    names: tuple[str, ...]
    x: np.ndarray
    y: np.ndarray
    sel: dict = field(default_factory=dict)
    label: str = ""
    n_below_floor: int = 0

    def reduced(self, reduce: str = "median") -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` with y reduced over runs (NaN ignored, +inf counted as worst) and points whose
        reduced loss is not finite (no run, or half or more diverged for a median) dropped."""
        y = reduce_runs(self.y, reduce, axis=0)
        keep = np.isfinite(y)
        return self.x[keep], y[keep]


def _names(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.split(",") if v]
    return list(value)


def slice_name(sel: dict) -> str:
    """A selection of coordinates as a label, e.g. ``activation=silu, lr=0.001`` (``all`` if empty)."""
    return ", ".join(f"{k}={v}" for k, v in sel.items()) or "all"


def read_sweep(source: object) -> xr.Dataset | pd.DataFrame:
    """The data behind ``source``: a results directory (its ``results.nc``), a ``.nc`` or
    ``.csv`` path, an xarray Dataset or DataArray, or a pandas DataFrame."""
    if isinstance(source, (xr.Dataset, pd.DataFrame)):
        return source
    if isinstance(source, xr.DataArray):
        return source.to_dataset(name=source.name or "y")
    if not isinstance(source, (str, Path)):
        raise FitInputError(f"cannot read a sweep from {type(source).__name__}")
    path = Path(source)
    if path.is_dir():
        path = path / "results.nc"
    if not path.exists():
        raise FitInputError(f"no such file: {path}")
    try:
        return pd.read_csv(path) if path.suffix == ".csv" else xr.open_dataset(path)
    except (OSError, ValueError) as err:
        raise FitInputError(f"cannot read {path}: {err}".splitlines()[0]) from None


def _table_dataset(table: pd.DataFrame, xs: list[str], y: str, runs: list[str],
                   groups: list[str]) -> xr.Dataset:
    """A table (one row per sizes, run and group) as a Dataset with those columns as dimensions."""
    missing = [c for c in xs + runs + groups + [y] if c not in table.columns]
    if missing:
        raise FitInputError(f"table has no column(s) {', '.join(missing)} "
                            f"(columns: {', '.join(map(str, table.columns))})")
    index = xs + runs + groups
    if table.duplicated(index).any():
        raise FitInputError(f"rows are not unique for ({', '.join(index)}); name the other "
                            "varying columns as over (runs) or by (groups)")
    for c in xs + [y]:
        if not pd.api.types.is_numeric_dtype(table[c]):
            raise FitInputError(f"column {c!r} is not numeric")
    return table.set_index(index).sort_index().to_xarray()


def fitted_loss(ds: xr.Dataset, y: str = "final_test_loss",
                floor: bool = True) -> tuple[xr.DataArray, str]:
    """The per-member loss that is fitted, and its axis label.

    ``y`` (a loss variable) minus the loss floor when ``floor`` and the results hold one (the first of `FLOORS`:
    ``test_bayes_loss``, the true model's loss on the same fixed test sequences, or in results
    saved before it existed ``irreducible_loss``, the entropy rate, which leaves the test set's
    sampling offset in the excess; a NaN floor counts as none). Members flagged ``diverged``
    are +inf, the worst loss; members that were not run stay NaN.
    """
    if y not in ds.data_vars:
        raise FitInputError(f"no variable {y!r} (variables: {', '.join(map(str, ds.data_vars))})")
    if not np.issubdtype(ds[y].dtype, np.number):
        raise FitInputError(f"y {y!r} is not numeric")
    loss, label = ds[y].astype(float), y.replace("_", " ")
    # The floor is a loss: subtracted from loss variables only (those carrying a unit, or the loss names).
    is_loss = "units" in ds[y].attrs or y in LOSSES
    name = next((f for f in FLOORS if f in ds.data_vars), None) if floor and is_loss else None
    if name:
        unit = ds[y].attrs.get("units", "nats")
        loss, label = loss - ds[name].fillna(0.0), f"{label} - {FLOORS[name]} ({unit})"
    if "diverged" in ds.data_vars:
        loss = loss.where(~ds["diverged"].fillna(False).astype(bool), np.inf)
    return loss, label


def _size(ds: xr.Dataset, name: str, runs: list[str], groups: list[str]) -> xr.DataArray:
    """Size ``name`` (a dimension or a variable such as n_params) over only the dimensions it
    varies along (or that are groups)."""
    if name not in ds.variables:
        raise FitInputError(f"no dimension or variable {name!r} for x "
                            f"(dims: {', '.join(map(str, ds.dims))})")
    v = ds[name]
    if not np.issubdtype(v.dtype, np.number):
        raise FitInputError(f"x {name!r} is not numeric")
    on_runs = [d for d in runs if d in v.dims]
    if on_runs and not bool((v.max(on_runs) == v.min(on_runs)).all()):
        raise FitInputError(f"x {name!r} varies over the runs dimension(s) {on_runs}")
    flat = [d for d in v.dims if d not in groups and bool((v.max(d) == v.min(d)).all())]
    return v.isel({d: 0 for d in flat}).astype(float)


def _member(part: xr.DataArray, runs: list[str], xs: list[str], X: np.ndarray, r: int, p: int) -> str:
    """Member ``(run r, point p)`` of a slice as text, e.g. ``width 256 seed 1``."""
    at = zip(runs, np.unravel_index(r, [part.sizes[d] for d in runs]))
    return " ".join([f"{n} {v:g}" for n, v in zip(xs, X[p])] + [f"{d} {part[d].values[i]}" for d, i in at])


def _drop_at_floor(Y: np.ndarray, member: Callable[[int, int], str], sel: dict,
                   log: TextIO | None) -> tuple[np.ndarray, int]:
    """``Y`` (runs, points) with finite values <= 0 set to NaN (left out), and their number; one
    warning line to ``log`` when there are any, naming the first by ``member(run, point)``."""
    low = np.isfinite(Y) & (Y <= 0)
    if low.any() and log is not None:
        r, p = (i[0] for i in np.nonzero(low))
        print(f"warning: {slice_name(sel)}: {int(low.sum())} member(s) at or below the loss floor "
              f"(e.g. {member(r, p)}: {Y[r, p]:.3g}) cannot be fitted in log space "
              f"and are left out of the fit", file=log)
    return np.where(low, np.nan, Y), int(low.sum())


def _dataset_slices(ds: xr.Dataset, xs: list[str], y: str, runs: list[str], groups: list[str],
                    floor: bool, log: TextIO | None) -> dict[object, Slice]:
    """Slices of a Dataset: every dimension that is neither a size nor a run is a group.

    Keyed by the coordinates of the groups named in ``groups`` and of the other group dimensions
    longer than 1: None when there are none, a value for one, else a tuple."""
    for kind, name in [("over", r) for r in runs] + [("by", g) for g in groups]:
        if name not in ds.dims:
            raise FitInputError(f"{kind}={name!r} is not a dimension "
                                f"(dims: {', '.join(map(str, ds.dims))})")
    loss, label = fitted_loss(ds, y, floor)
    sizes = [_size(ds, name, runs, groups) for name in xs]
    point_dims = list(dict.fromkeys(d for v in sizes for d in v.dims if d not in groups))
    others = groups + [d for d in loss.dims if d not in point_dims + runs + groups]
    keyed = [d for d in others if d in groups or loss.sizes[d] > 1]
    out: dict[object, Slice] = {}
    for ix in np.ndindex(*(loss.sizes[d] for d in others)):
        at = dict(zip(others, ix))
        part = loss.isel(at).transpose(*runs, *point_dims)
        template = part.isel({d: 0 for d in runs})
        X = np.stack([v.isel({d: i for d, i in at.items() if d in v.dims})
                      .broadcast_like(template).transpose(*point_dims).values.ravel()
                      for v in sizes], axis=-1)
        sel = {d: part[d].item() for d in others}
        Y, below = _drop_at_floor(part.values.reshape(-1, X.shape[0]),
                                  partial(_member, part, runs, xs, X), sel, log)
        ran = ~np.isnan(Y).all(axis=0)  # points with no run left are not points of the slice
        key = tuple(sel[d] for d in keyed)
        out[None if not key else key[0] if len(key) == 1 else key] = Slice(
            tuple(xs), X[ran], Y[:, ran], sel, label, below)
    return out


def sweep_slices(source: object, x: str | Sequence[str] = "width",
                 y: str = "final_test_loss", over: str | Sequence[str] | None = "seed",
                 by: str | Sequence[str] | None = None, *, floor: bool = True,
                 log: TextIO | None = sys.stderr) -> dict[object, Slice]:
    """Split a sweep into fit slices (the loss as described in the module docstring).

    Args:
      source: see `read_sweep`.
      x: size dimension(s), variable(s) or column(s), e.g. "width" or ["N", "D"] (a comma
        list is allowed), in the order of the form's variables.
      y: the loss variable or column.
      over: dimension(s)/column(s) whose entries are runs of one point (seeds); the
        default "seed" is skipped when there is none.
      by: dimension(s)/column(s) that split the data into separate fits; for xarray data
        every dimension that is neither a size nor a run dimension does so anyway.
      floor: subtract the loss floor the results carry (see `fitted_loss`).
      log: where the warning about members at or below the floor goes (None: nowhere).

    Returns: {key: `Slice`}, key None when there is a single slice, else the group value
    (one group axis) or tuple of values. Members flagged ``diverged`` are +inf (the worst loss).
    """
    xs, runs, groups = _names(x), _names(over), _names(by)
    if not xs:
        raise FitInputError("x must name at least one size dimension, variable or column")
    data = read_sweep(source)
    table = isinstance(data, pd.DataFrame)
    if runs == ["seed"] and "seed" not in (data.columns if table else data.dims):
        runs = []
    if table:
        data = _table_dataset(data, xs, y, runs, groups)
    return _dataset_slices(data, xs, y, runs, groups, floor, log)


def fit_results(path: object, x: str | Sequence[str] = "width", y: str = "final_test_loss",
                reduce: str = "median", over: str | Sequence[str] | None = "seed",
                form: str | Form = "power_law_offset", *, by: str | Sequence[str] | None = None,
                floor: bool = True, log: TextIO | None = sys.stderr,
                **kw: object) -> FitResult | dict[object, FitResult]:
    """Fit a law to a sweep: select ``y`` (less the loss floor the results carry, unless
    ``floor`` is False), reduce it over the ``over`` dimension(s) (``reduce``: NaN-aware
    "median" or "mean", diverged runs counted as the worst loss), fit ``form`` against ``x``.

    ``path``: an engine results directory, a ``.nc``/``.csv`` file, or an xarray/pandas
    object (see `sweep_slices`, which also describes ``log``). ``x``: one name per variable of
    the form, in its order. Returns one `FitResult`, or a dict keyed by the coordinate value(s)
    of the remaining dimensions (e.g. activation) with one fit per slice. ``**kw`` go to `fit`.
    """
    results = {}
    for key, part in sweep_slices(path, x, y, over, by, floor=floor, log=log).items():
        xs, ys = part.reduced(reduce)
        results[key] = fit(xs, ys, form, **kw)
    return results[None] if list(results) == [None] else results
