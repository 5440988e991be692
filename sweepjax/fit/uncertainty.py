"""Uncertainty of a fit: bootstrap (over points or over runs) with percentile intervals,
and fit-window sensitivity (how the exponents move as the smallest or largest sizes are
dropped), which is a different thing and is reported apart.

All refits of one call are rows of one batched solve (`estimate.solve_batch`): a resample
is the original points with multiplicity weights, a fit window is the points with zero
weight outside it, so every refit has the same shape and reuses one compiled program.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .estimate import (FitResult, Options, best_per_row, check_method, fit_rows, make_starts,
                       solve_batch)
from .forms import Form, get_form
from .inputs import FitInputError, check_weights, check_x, check_y, reduce_runs


@dataclass
class BootstrapResult:
    """Bootstrap distribution of a fit.

    Attributes:
      point: the `FitResult` on the un-resampled data (runs reduced by ``reduce``).
      samples: natural parameter name -> ``(n_resamples,)`` refitted values (NaN for a
        degenerate resample: fewer distinct points than parameters, or a single x value).
      converged: ``(n_resamples,)`` whether each refit's best start converged.
      level: the confidence level of `ci`. over: "points" or "runs".
      raw: ``(n_resamples, P)`` refitted raw parameter vectors (for prediction bands).
    """

    point: FitResult
    samples: dict[str, np.ndarray]
    converged: np.ndarray
    level: float
    over: str
    raw: np.ndarray = field(repr=False)

    @property
    def n_resamples(self) -> int:
        """Number of resamples drawn."""
        return len(self.converged)

    @property
    def n_valid(self) -> int:
        """Resamples that gave a fit (not degenerate)."""
        return int(np.sum(np.all(np.isfinite(self.raw), axis=1)))

    def ci(self, name: str, level: float | None = None) -> tuple[float, float]:
        """Percentile interval ``(lo, hi)`` of parameter ``name`` at ``level`` (default
        `self.level`), in the parameter's natural units; degenerate resamples are ignored."""
        if name not in self.samples:
            raise KeyError(f"no parameter {name!r}; have {', '.join(self.samples)}")
        level = self.level if level is None else level
        q = 100 * (1 - level) / 2
        lo, hi = np.nanpercentile(self.samples[name], [q, 100 - q])
        return float(lo), float(hi)

    def table(self) -> pd.DataFrame:
        """One row per parameter: point estimate, CI bounds, bootstrap std."""
        rows = [{"param": k, "value": self.point.params[k], "ci_lo": self.ci(k)[0],
                 "ci_hi": self.ci(k)[1], "boot_std": float(np.nanstd(v))}
                for k, v in self.samples.items()]
        return pd.DataFrame(rows).set_index("param")

    def summary(self) -> str:
        """Human-readable parameter table with the intervals and refit statistics."""
        pct = f"{100 * self.level:g}%"
        lines = [f"{self.point.form} [{self.point.method}], bootstrap over {self.over}: "
                 f"{self.n_valid}/{self.n_resamples} resamples fitted, "
                 f"{int(self.converged.sum())} converged; {pct} percentile intervals"]
        for k, r in self.table().iterrows():
            lines.append(f"  {k:>8} = {r.value:<12.6g} [{r.ci_lo:.6g}, {r.ci_hi:.6g}]")
        return "\n".join(lines)


REFIT_FACTOR = 2.0  # refit starts: point-fit solutions with objective <= this x the best


def _refit_starts(point: FitResult, k: int) -> np.ndarray:
    """Starts ``(k, P)`` for refits: the best solution of the point fit and the next best
    distinct ones whose objective is within `REFIT_FACTOR` of it (the best one repeated
    where fewer qualify). Far worse local minima are left out: refits from them mostly
    drift towards a boundary (e.g. E -> 0) until max_iter."""
    chosen: list[np.ndarray] = []
    limit = REFIT_FACTOR * point.objective + 1e-300
    for i in np.argsort(point.objectives):
        t = point.solutions[i]
        if len(chosen) == k or point.objectives[i] > limit:
            break
        if np.all(np.isfinite(t)) and all(np.max(np.abs(t - c)) > 1e-6 for c in chosen):
            chosen.append(t)
    return np.array(chosen + chosen[:1] * (k - len(chosen)))


def _fittable(X: np.ndarray, w: np.ndarray, n_params: int) -> np.ndarray:
    """``(B,)`` whether each weight row ``w (B, n)`` leaves at least ``n_params`` points and
    two distinct values of every variable."""
    used = w > 0
    ok = used.sum(axis=1) >= n_params
    for v in range(X.shape[1]):
        _, code = np.unique(X[:, v], return_inverse=True)
        present = np.zeros((len(w), code.max() + 1), bool)
        rows, cols = np.nonzero(used)
        present[rows, code[cols]] = True
        ok &= present.sum(axis=1) >= 2
    return ok


def _prepare(x: object, ys: object, form: str | Form, weights: object, reduce: str
             ) -> tuple[Form, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validated ``X (n, V)``; data sets ``Ys`` ``(D, n)`` (points) or ``(D, n_runs, n)``
    (runs); their runs-reduced ``(D, n)`` losses; ``(D, n)`` weights, zero where the reduced
    loss is missing."""
    spec = get_form(form)
    X = check_x(x, spec)
    Ys = np.stack([check_y(y, len(X), runs=True) for y in ys])
    y_point = Ys if Ys.ndim == 2 else reduce_runs(Ys, reduce)
    w = check_weights(weights, len(X))
    return spec, X, Ys, y_point, np.where(np.isfinite(y_point), w, 0.0)


def bootstrap_many(x: object, ys: object, form: str | Form = "power_law_offset", *,
                   n_resamples: int = 1000, seed: int = 0, level: float = 0.95,
                   reduce: str = "median", refit_starts: int | None = 4,
                   weights: object = None, starts: object = None,
                   **options: object) -> list[BootstrapResult]:
    """`bootstrap` several data sets that share ``x`` in one batched solve.

    ``ys``: a sequence (or stacked array) of y arrays of one shape, each as for `bootstrap`
    (1-D: resample points; 2-D runs x points: resample runs). Returns one `BootstrapResult`
    per data set; other arguments as for `bootstrap`.
    """
    spec, X, Ys, y_point, W = _prepare(x, ys, form, weights, reduce)
    opts = Options(**options)
    if not 0 < level < 1:
        raise FitInputError(f"level must be in (0, 1), not {level}")
    if n_resamples < 1:
        raise FitInputError(f"n_resamples must be >= 1, not {n_resamples}")
    points = fit_rows(spec, opts, X, y_point, W, starts)
    n_sets, n, p = len(Ys), len(X), len(spec.params)
    rng = np.random.default_rng(seed)
    over_points = Ys.ndim == 2 or Ys.shape[1] == 1  # a single run: resample its points
    if over_points:  # multiplicities as weights
        draw = rng.integers(0, n, size=(n_sets * n_resamples, n))
        flat = draw + n * np.arange(n_sets * n_resamples)[:, None]
        counts = np.bincount(flat.ravel(), minlength=flat.size).reshape(n_sets, n_resamples, n)
        yb = np.broadcast_to(y_point[:, None], counts.shape)
        wb = counts * W[:, None]
    else:  # resample runs, reduce each resample over its runs
        draw = rng.integers(0, Ys.shape[1], size=(n_sets, n_resamples, Ys.shape[1]))
        yb = reduce_runs(Ys[np.arange(n_sets)[:, None, None], draw], reduce)
        wb = np.where(np.isfinite(yb), W[:, None], 0.0)
    if refit_starts is None:
        S = np.stack([make_starts(spec, starts, X[w > 0], y[w > 0]) for y, w in zip(y_point, W)])
    else:
        S = np.stack([_refit_starts(pt, refit_starts) for pt in points])
    yb, wb = yb.reshape(-1, n), wb.reshape(-1, n)
    S = np.repeat(S, n_resamples, axis=0)
    ok = _fittable(X, wb, p)
    raw = np.full((len(wb), p), np.nan)
    conv = np.zeros(len(wb), bool)
    if ok.any():
        logy = np.log(np.where(wb[ok] > 0, yb[ok], 1.0))
        raw[ok], _, conv[ok] = best_per_row(*solve_batch(spec, opts, S[ok], X, logy, wb[ok]))
    raw, conv = raw.reshape(n_sets, n_resamples, p), conv.reshape(n_sets, n_resamples)
    over = "points" if over_points else "runs"
    return [BootstrapResult(point=pt, samples=spec.to_natural(r), converged=c, level=level,
                            over=over, raw=r) for pt, r, c in zip(points, raw, conv)]


def bootstrap(x: object, y: object, form: str | Form = "power_law_offset", *,
              n_resamples: int = 1000, seed: int = 0, level: float = 0.95,
              reduce: str = "median", refit_starts: int | None = 4, weights: object = None,
              starts: object = None, **options: object) -> BootstrapResult:
    """Bootstrap a fit: resample with replacement, refit, keep every refit's parameters.

    Args:
      x: sizes, as for `fit` (``n`` points).
      y: losses: 1-D ``(n,)`` resamples points; 2-D ``(n_runs, n)`` (e.g. seeds x widths,
        NaN for missing runs, +inf for diverged runs) resamples runs (rows), reduces each
        resample over runs with ``reduce`` ("median" or "mean": NaN ignored, +inf counted as
        the worst loss, see `reduce_runs`), then refits (a single run, ``(1, n)``, resamples
        its points). A point whose reduced loss is +inf (or NaN) is left out of that fit,
        the point fit and each resample's alike; a resample left with too few points to fit
        is degenerate (NaN, see `BootstrapResult.n_valid`).
      form: form name or `Form`.
      n_resamples: number of resamples. seed: seed of the resampling (reproducible).
      level: confidence level of the percentile intervals (`BootstrapResult.ci`).
      refit_starts: each resample is refitted from the ``k`` best distinct solutions of the
        point fit (default 4); None refits from the full start grid (slower).
      weights, starts, **options: as for `fit` (method, delta, max_iter, gtol, ftol).

    Returns: a `BootstrapResult` (its ``point`` is the fit on the un-resampled data).
    """
    return bootstrap_many(x, [y], form, n_resamples=n_resamples, seed=seed, level=level,
                          reduce=reduce, refit_starts=refit_starts, weights=weights,
                          starts=starts, **options)[0]


def window_sensitivity(x: object, y: object, form: str | Form = "power_law_offset",
                       drop_small: Iterable[int] = range(0, 3),
                       drop_large: Iterable[int] = range(0, 3), *, by: str | None = None,
                       reduce: str = "median", weights: object = None, starts: object = None,
                       **options: object) -> pd.DataFrame:
    """Refit on fit windows that drop the ``drop_small`` smallest and ``drop_large`` largest
    distinct sizes of variable ``by`` (default the form's first variable).

    ``y`` is 1-D, or 2-D runs x points (reduced over runs with ``reduce`` first). Returns a
    table with one row per window: drop_small, drop_large, ``<by>_min``, ``<by>_max`` (the
    window, units of x), n_points, the form's exponents, objective and converged; a window
    with too few points
    has NaN exponents. This measures the sensitivity of the law to the fit range, which
    bootstrap intervals do not include.
    """
    spec, X, _, y_points, ws = _prepare(x, [y], form, weights, reduce)
    y_point, w = y_points[0], ws[0]
    opts = Options(**options)
    check_method(spec, opts)
    by = spec.variables[0] if by is None else by
    if by not in spec.variables:
        raise FitInputError(f"by={by!r} is not a variable of form {spec.name!r} "
                            f"({', '.join(spec.variables)})")
    v = X[:, spec.variables.index(by)]
    sizes = np.unique(v[w > 0])
    windows = [(s, l) for s in drop_small for l in drop_large if s + l < len(sizes)]
    if not windows:
        raise FitInputError(f"no fit window left: only {len(sizes)} distinct {by} values")
    lo = np.array([sizes[s] for s, _ in windows])
    hi = np.array([sizes[len(sizes) - 1 - l] for _, l in windows])
    wb = np.where((v >= lo[:, None]) & (v <= hi[:, None]), w, 0.0)
    ok = _fittable(X, wb, len(spec.params))
    used = w > 0
    S = make_starts(spec, starts, X[used], y_point[used])
    raw = np.full((len(windows), len(spec.params)), np.nan)
    value = np.full(len(windows), np.nan)
    conv = np.zeros(len(windows), bool)
    if ok.any():
        logy = np.log(np.where(wb[ok] > 0, y_point, 1.0))
        raw[ok], value[ok], conv[ok] = best_per_row(*solve_batch(spec, opts, S, X, logy, wb[ok]))
    nat = spec.to_natural(raw)
    table = pd.DataFrame({"drop_small": [s for s, _ in windows],
                          "drop_large": [l for _, l in windows],
                          f"{by}_min": lo, f"{by}_max": hi, "n_points": (wb > 0).sum(axis=1),
                          **{e: nat[e] for e in spec.exponents},
                          "objective": value, "converged": conv})
    return table
