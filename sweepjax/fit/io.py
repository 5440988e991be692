"""Reading sweeps for fitting: an engine results directory (``DIR/results.nc``), a NetCDF
file, a CSV file, an xarray Dataset/DataArray or a pandas DataFrame, turned into
``(x points, runs x points losses)`` slices, one per value of any remaining sweep axis.

Layout of engine results: one dimension per swept config key (``seed``, ``width``,
``lr``, ``activation`` ...) with coordinates; data variables such as ``final_test_loss``
and ``diverged`` over those dimensions (diverged members have NaN loss; here they count as
the worst loss, +inf, so that a size where many runs diverged is not fitted from its survivors).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .estimate import FitResult, fit
from .forms import Form
from .inputs import FitInputError, reduce_runs


@dataclass
class Slice:
    """Data of one fit: ``x (n, V)`` sizes (columns named by ``names``) and ``y (runs, n)``
    losses, NaN for missing runs, +inf for diverged ones (the worst loss)."""

    names: tuple[str, ...]
    x: np.ndarray
    y: np.ndarray

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


def _key(values: tuple) -> object:
    """Slice key: None for a single slice, a value for one group axis, else a tuple."""
    return None if not values else values[0] if len(values) == 1 else values


def _table_slices(table: pd.DataFrame, xs: list[str], y: str, runs: list[str],
                  groups: list[str]) -> dict[object, Slice]:
    """Slices of a table: one row per (sizes, run, group); rows with ``diverged`` true are +inf."""
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
    loss = table[y].astype(float)
    if "diverged" in table.columns:
        loss = loss.where(~table["diverged"].astype(bool), np.inf)
    table = table.assign(_loss=loss)
    out = {}
    for key, part in (table.groupby(groups, sort=True) if groups else [((), table)]):
        point = part.groupby(xs, sort=True).ngroup().to_numpy()
        run = part.groupby(runs, sort=True).ngroup().to_numpy() if runs else np.zeros(len(part), int)
        Y = np.full((run.max() + 1, point.max() + 1), np.nan)
        Y[run, point] = part["_loss"].to_numpy()
        X = part[xs].drop_duplicates().sort_values(xs).to_numpy(float)
        out[_key(tuple(key) if groups else ())] = Slice(tuple(xs), X, Y)
    return out


def _dataset_slices(ds: xr.Dataset, xs: list[str], y: str, runs: list[str],
                    groups: list[str]) -> dict[object, Slice]:
    """Slices of a Dataset: every dimension that is neither a size nor a run is a group."""
    for kind, name in [("over", r) for r in runs] + [("by", g) for g in groups]:
        if name not in ds.dims:
            raise FitInputError(f"{kind}={name!r} is not a dimension "
                                f"(dims: {', '.join(map(str, ds.dims))})")
    if y not in ds.data_vars:
        raise FitInputError(f"no variable {y!r} (variables: {', '.join(map(str, ds.data_vars))})")
    loss = ds[y]
    if not np.issubdtype(loss.dtype, np.number):
        raise FitInputError(f"y {y!r} is not numeric")
    loss = loss.astype(float)
    if "diverged" in ds.data_vars:
        loss = loss.where(~ds["diverged"].astype(bool), np.inf)
    sizes = []
    for name in xs:
        if name not in ds.variables:
            raise FitInputError(f"no dimension or variable {name!r} for x "
                                f"(dims: {', '.join(map(str, ds.dims))})")
        v = ds[name]
        if not np.issubdtype(v.dtype, np.number):
            raise FitInputError(f"x {name!r} is not numeric")
        on_runs = [d for d in runs if d in v.dims]
        if on_runs and not bool((v.max(on_runs) == v.min(on_runs)).all()):
            raise FitInputError(f"x {name!r} varies over the runs dimension(s) {on_runs}")
        # a size variable (e.g. n_params) spans only the dimensions it varies along
        flat = [d for d in v.dims if d not in groups and bool((v.max(d) == v.min(d)).all())]
        sizes.append(v.isel({d: 0 for d in flat}).astype(float))
    point_dims = list(dict.fromkeys(d for v in sizes for d in v.dims if d not in groups))
    group_dims = groups + [d for d in loss.dims if d not in point_dims + runs + groups
                           and loss.sizes[d] > 1]
    loss = loss.squeeze([d for d in loss.dims if d not in point_dims + runs + group_dims])
    out: dict[object, Slice] = {}
    for ix in np.ndindex(*(loss.sizes[d] for d in group_dims)):
        at = dict(zip(group_dims, ix))
        part = loss.isel(at).transpose(*runs, *point_dims)
        template = part.isel({d: 0 for d in runs})
        X = np.stack([v.isel({d: i for d, i in at.items() if d in v.dims})
                      .broadcast_like(template).transpose(*point_dims).values.ravel()
                      for v in sizes], axis=-1)
        Y = part.values.reshape(-1, X.shape[0])
        out[_key(tuple(part[d].item() for d in group_dims))] = Slice(tuple(xs), X, Y)
    return out


def sweep_slices(source: object, x: str | Sequence[str] = "width",
                 y: str = "final_test_loss", over: str | Sequence[str] | None = "seed",
                 by: str | Sequence[str] | None = None) -> dict[object, Slice]:
    """Split a sweep into fit slices.

    Args:
      source: see `read_sweep`.
      x: size dimension(s), variable(s) or column(s), e.g. "width" or ["N", "D"] (a comma
        list is allowed), in the order of the form's variables.
      y: the loss variable or column.
      over: dimension(s)/column(s) whose entries are runs of one point (seeds); the
        default "seed" is skipped when there is none.
      by: dimension(s)/column(s) that split the data into separate fits; for xarray data
        every dimension that is neither a size nor a run dimension does so anyway.

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
    return (_table_slices if table else _dataset_slices)(data, xs, y, runs, groups)


def fit_results(path: object, x: str | Sequence[str] = "width", y: str = "final_test_loss",
                reduce: str = "median", over: str | Sequence[str] | None = "seed",
                form: str | Form = "power_law_offset", *, by: str | Sequence[str] | None = None,
                **kw: object) -> FitResult | dict[object, FitResult]:
    """Fit a law to a sweep: select ``y``, reduce it over the ``over`` dimension(s)
    (``reduce``: NaN-aware "median" or "mean"), fit ``form`` against ``x``.

    ``path``: an engine results directory, a ``.nc``/``.csv`` file, or an xarray/pandas
    object (see `sweep_slices`). ``x``: one name per variable of the form, in its order.
    Returns one `FitResult`, or a dict keyed by the coordinate value(s) of the remaining
    dimensions (e.g. activation) with one fit per slice. ``**kw`` go to `fit`.
    """
    results = {}
    for key, part in sweep_slices(path, x, y, over, by).items():
        xs, ys = part.reduced(reduce)
        results[key] = fit(xs, ys, form, **kw)
    return results[None] if list(results) == [None] else results
