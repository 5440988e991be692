"""Input checking: turn user arrays into validated float64 arrays, or raise `FitInputError`
with a one-line message that says what is wrong and what to do."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .forms import Form


class FitInputError(ValueError):
    """Bad input to a fit (NaN or non-positive losses, too few points, ...); one-line message."""


def as_columns(x: object, form: Form) -> np.ndarray:
    """``x`` as a float64 ``(n, V)`` array in the order of ``form.variables``.

    ``x`` is a 1-D array (single-variable forms), a mapping name -> 1-D array (a dict or a
    DataFrame), or a 2-D array whose columns follow ``form.variables``.
    """
    names = form.variables
    if isinstance(x, Mapping) or hasattr(x, "columns"):
        keys = list(x.keys())
        if len(names) == 1 and len(keys) == 1:
            cols = [x[keys[0]]]
        else:
            missing = [v for v in names if v not in keys]
            if missing:
                raise FitInputError(f"x lacks variable(s) {', '.join(missing)} of form "
                                    f"{form.name!r} (it has {', '.join(map(str, keys))})")
            cols = [x[v] for v in names]
        cols = [np.asarray(c, dtype=np.float64).ravel() for c in cols]
        if len({c.size for c in cols}) > 1:
            raise FitInputError("x variables have mismatched lengths "
                                + ", ".join(f"{v}={c.size}" for v, c in zip(names, cols)))
        return np.stack(cols, axis=-1)
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise FitInputError("x must be numeric (an array, or a dict of arrays)") from None
    if arr.ndim == 1 and len(names) == 1:
        return arr[:, None]
    if arr.ndim == 2 and arr.shape[1] == len(names):
        return arr
    raise FitInputError(f"form {form.name!r} takes variables ({', '.join(names)}); pass x as a "
                        f"dict of 1-D arrays or an (n, {len(names)}) array, not shape {arr.shape}")


def check_x(x: object, form: Form) -> np.ndarray:
    """Validated ``(n, V)`` positive, finite x with at least two distinct values per variable."""
    X = as_columns(x, form)
    if not np.all(np.isfinite(X)):
        raise FitInputError(f"x has {int(np.sum(~np.isfinite(X)))} NaN/inf value(s)")
    if np.any(X <= 0):
        raise FitInputError(f"x must be positive (sizes); found {int(np.sum(X <= 0))} value(s) <= 0")
    if len(X) == 0:
        raise FitInputError("x has no points: nothing to fit")
    for i, v in enumerate(form.variables):
        distinct = np.unique(X[:, i])
        if distinct.size < 2:
            raise FitInputError(f"x variable {v!r} has a single distinct value ({distinct[0]:g}); "
                                "a fit needs at least two")
    return X


def check_y(y: object, n: int, *, runs: bool = False) -> np.ndarray:
    """Validated float64 y: 1-D ``(n,)`` losses (finite, positive), or with ``runs=True`` a
    2-D ``(n_runs, n)`` array where NaN marks a missing run (ignored) and +inf a diverged run
    (counted as the worst loss by `reduce_runs`)."""
    try:
        Y = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise FitInputError("y must be numeric") from None
    if Y.ndim not in ((1, 2) if runs else (1,)):
        extra = "" if runs else "; for runs x points use bootstrap(...) or reduce over runs first"
        raise FitInputError(f"y must be 1-D{' or 2-D (runs, points)' if runs else ''}, "
                            f"got shape {Y.shape}{extra}")
    if Y.shape[-1] != n:
        raise FitInputError(f"x has {n} points but y has {Y.shape[-1]}: lengths must match")
    bad_nan = np.isneginf(Y) if Y.ndim == 2 else ~np.isfinite(Y)
    if np.any(bad_nan):
        idx = np.flatnonzero(bad_nan.ravel())[:5].tolist()
        raise FitInputError(f"y has {int(bad_nan.sum())} NaN/inf value(s) (flat indices {idx}); "
                            "drop them, or pass runs as a 2-D y with NaN for missing runs "
                            "and +inf for diverged ones")
    with np.errstate(invalid="ignore"):
        nonpos = Y <= 0
    if np.any(nonpos):
        raise FitInputError(f"y must be positive (losses are fitted in log space); found "
                            f"{int(nonpos.sum())} value(s) <= 0, e.g. {Y[nonpos].ravel()[0]:g}")
    return Y


def check_weights(weights: object, n: int) -> np.ndarray:
    """Validated non-negative finite float64 weights ``(n,)`` (ones when None)."""
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise FitInputError(f"weights must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise FitInputError("weights must be finite and non-negative")
    return w


def check_enough(X: np.ndarray, w: np.ndarray, form: Form) -> None:
    """Raise unless the points with positive weight are at least as many as the parameters
    and span at least two distinct values of every variable."""
    used = w > 0
    n, p = int(used.sum()), len(form.params)
    if n < p:
        raise FitInputError(f"{n} point(s) but form {form.name!r} has {p} parameters: "
                            "fewer points than parameters")
    for i, v in enumerate(form.variables):
        if np.unique(X[used, i]).size < 2:
            raise FitInputError(f"x variable {v!r} has a single distinct value among the "
                                "points used; a fit needs at least two")


def reduce_runs(Y: np.ndarray, how: str, axis: int = -2) -> np.ndarray:
    """NaN-aware median or mean of ``Y`` over its runs ``axis``; all-NaN columns give NaN.

    NaN (a run that is missing) is ignored; +inf (a diverged run) counts as the worst loss, so a
    median is +inf once half or more of a column's runs are +inf, and a mean once any is."""
    funcs = {"median": np.nanmedian, "mean": np.nanmean}
    if how not in funcs:
        raise FitInputError(f"reduce must be 'median' or 'mean', not {how!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices -> NaN, handled by callers
        return funcs[how](Y, axis=axis)
