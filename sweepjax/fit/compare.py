"""Model comparison by extrapolation: fit each form on the smaller sizes, predict the
largest, rank forms by the held-out error (not by in-sample error, which always favours
the form with more parameters)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .estimate import Options, fit_rows
from .forms import Form, get_form
from .inputs import FitInputError, check_weights, check_x, check_y, reduce_runs

DEFAULT_FORMS = ("power_law", "power_law_offset", "exponential", "broken_power_law")


def extrapolation_errors(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[float, float]:
    """(mean absolute relative error, root mean squared log error) of predictions."""
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    mare = float(np.mean(np.abs(y_pred - y_true) / y_true))
    rmsle = float(np.sqrt(np.mean((np.log(y_pred) - np.log(y_true)) ** 2)))
    return mare, rmsle


def compare_forms(x: object, y: object, forms: Sequence[str | Form] = DEFAULT_FORMS,
                  holdout: int = 2, *, by: str | None = None, reduce: str = "median",
                  weights: object = None, **options: object) -> pd.DataFrame:
    """Rank forms by how well a fit on all but the ``holdout`` largest sizes predicts them.

    Args:
      x: sizes: a 1-D array, or a dict name -> array holding every variable of every form.
      y: losses (1-D), or 2-D runs x points reduced over runs with ``reduce`` first.
      forms: form names or `Form` objects.
      holdout: how many of the largest distinct values of ``by`` are held out.
      by: the variable that orders sizes (default: the first form's first variable).
      weights, **options: as for `fit` (method, delta, max_iter, gtol, ftol).

    Returns: a table indexed by rank (1 = best), with form, n_params, extrap_mare (mean
    absolute relative error on the held-out points), extrap_rmsle, train_rmsle,
    converged and note (why a form could not be fitted, if so).
    """
    specs = [get_form(f) for f in forms]
    if not specs:
        raise FitInputError("compare_forms needs at least one form")
    by = specs[0].variables[0] if by is None else by
    opts = Options(**options)
    rows = []
    for spec in specs:
        if by not in spec.variables:
            raise FitInputError(f"form {spec.name!r} has no variable {by!r}; pass by=...")
        X = check_x(x, spec)
        Y = check_y(y, len(X), runs=True)
        y_point = Y if Y.ndim == 1 else reduce_runs(Y, reduce)
        w = np.where(np.isfinite(y_point), check_weights(weights, len(X)), 0.0)
        v = X[:, spec.variables.index(by)]
        sizes = np.unique(v[w > 0])
        if not 1 <= holdout <= len(sizes) - 2:
            raise FitInputError(f"holdout must be between 1 and {len(sizes) - 2} "
                                f"({len(sizes)} distinct {by} values), not {holdout}")
        held = (v >= sizes[-holdout]) & (w > 0)
        train = np.where(held, 0.0, w)
        row = {"form": spec.name, "n_params": len(spec.params), "extrap_mare": np.nan,
               "extrap_rmsle": np.nan, "train_rmsle": np.nan, "converged": False, "note": ""}
        try:
            res = fit_rows(spec, opts, X, y_point[None], train[None])[0]
        except FitInputError as err:
            row["note"] = str(err)
        else:
            row["extrap_mare"], row["extrap_rmsle"] = extrapolation_errors(
                y_point[held], res.predict(X[held]))
            row["train_rmsle"] = extrapolation_errors(y_point[train > 0],
                                                      res.predict(X[train > 0]))[1]
            row["converged"] = res.converged
        rows.append(row)
    table = pd.DataFrame(rows).sort_values("extrap_mare", na_position="last")
    table.index = pd.RangeIndex(1, len(table) + 1, name="rank")
    return table
