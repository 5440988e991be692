"""The quantization model study (Michaud, Liu, Girit & Tegmark 2023) on multitask sparse parity.

Reads the results Dataset of a ``sparse-parity`` sweep (see :mod:`sweepjax.tasks.sparse_parity`): dims
from the sweep (``zipf_exponent``, ``width``, ``seed``, ``dataset_size`` ...) plus ``eval_step`` (curves)
and ``subtask`` (``subtask_loss``, each subtask's mean test loss in bits at every evaluation).

Task frequencies are p_k proportional to k^-zipf_exponent, so the paper's alpha is ``zipf_exponent - 1``
and the theory's exponents are alpha_N = alpha, alpha_D = alpha_S = alpha / (alpha + 1).

- :func:`n_scaling`, :func:`d_scaling`, :func:`s_scaling`: power-law fits of the median over seeds of the
  final test loss vs ``n_params``, the best (early-stopped) test loss vs ``dataset_size`` (D > 0), and the
  test-loss curve vs ``eval_step`` of the widest member; one row (dict) per value of the other swept dims,
  with a bootstrap interval over seeds and the theory's exponent. They go through
  :func:`sweepjax.fit.sweep_slices`, so diverged members count as the worst loss (+inf) and a loss floor,
  if the results carry one, is subtracted, exactly as in the width fit (:mod:`sweepjax.analysis.scaling`).
- :func:`learned`: how many subtasks are below a loss threshold, vs N and vs D, with the log-log slope
  against the theory's (1 vs N, 1/(alpha+1) vs D).
- :func:`convergence_steps`: the first evaluation at which each subtask is below the threshold, its slope
  against log p_k (the paper: -0.81) and the Spearman correlation of learning order with frequency rank.
- Figures: :func:`plot_exponents`, :func:`plot_laws`, :func:`plot_emergence`, :func:`plot_convergence`,
  and :func:`make_figures` (those the Dataset supports). :func:`describe`: printable lines.

Every row is JSON-serialisable (plain floats, ints, lists; None for a missing number).
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import sys
from pathlib import Path
from typing import TextIO

import numpy as np
import xarray as xr

from sweepjax.fit.inputs import FitInputError, reduce_runs
from sweepjax.analysis.scaling import fit_medians
from sweepjax.files import FIGURES_DIR, atomic_write
from sweepjax.results import saved_task
from sweepjax.fit.io import Slice, slice_name, sweep_slices

__all__ = ["PAPER", "convergence_steps", "d_scaling", "describe", "frequencies", "learned", "learned_counts",
           "make_figures", "n_scaling", "plot_convergence", "plot_emergence", "plot_exponents", "plot_laws",
           "s_scaling", "subtask_losses", "task_keys", "theory"]

PAPER = {
    "N": {1.1: 0.21, 1.2: 0.27, 1.3: 0.31, 1.4: 0.33, 1.5: 0.42, 1.6: 0.47, 1.7: 0.56, 1.8: 0.58},
    "D": {1.4: 0.31},
    "S": {1.4: 0.35},
    "convergence_slope": -0.81,
}
"""Exponents measured in the paper, keyed by zipf_exponent (= alpha + 1), and its convergence-step slope."""

KINDS = {"N": ("n_params", "final_test_loss"), "D": ("dataset_size", "best_test_loss"),
         "S": ("eval_step", "test_loss")}
"""Scaling kind -> (size, loss variable) of its fit."""


# ---------------------------------------------------------------------------------------------- helpers

def _num(v) -> float | None:
    """A float, or None when missing / not finite (JSON has no NaN)."""
    if v is None:
        return None
    v = float(v)
    return v if np.isfinite(v) else None


def task_keys(ds: xr.Dataset) -> dict:
    """The ``[task]`` table of the resolved config the results carry (``{}`` when there is none)."""
    return saved_task(ds)


def _zipf(ds: xr.Dataset, sel: dict) -> float | None:
    """The Zipf exponent of a slice: its coordinate when swept, else the config's."""
    z = sel.get("zipf_exponent", ds.coords["zipf_exponent"].values if "zipf_exponent" in ds.coords
                and ds.coords["zipf_exponent"].ndim == 0 else task_keys(ds).get("zipf_exponent"))
    return None if z is None else float(z)


def theory(kind: str, zipf_exponent: float | None) -> float | None:
    """The quantization model's exponent of ``kind`` for p_k ~ k^-zipf_exponent (alpha = zipf_exponent - 1).

    ``N``: alpha_N = alpha; ``D`` and ``S``: alpha / (alpha + 1); ``learned_N``: 1 (the number of subtasks
    learned grows in proportion to the parameters, which is what gives alpha_N = alpha); ``learned_D``:
    1 / (alpha + 1) (subtask k is learned once D p_k reaches a constant); ``convergence``: -1 (the step at
    which subtask k is learned ~ 1 / p_k; the paper measured -0.81)."""
    if zipf_exponent is None:
        return None
    a = float(zipf_exponent) - 1.0
    values = {"N": a, "D": a / (a + 1), "S": a / (a + 1), "learned_N": 1.0, "learned_D": 1 / (a + 1),
              "convergence": -1.0}
    if kind not in values:
        raise ValueError(f"kind must be one of {', '.join(values)}, not {kind!r}")
    return float(values[kind])


def frequencies(n_tasks: int, zipf_exponent: float) -> np.ndarray:
    """p_k ~ k^-zipf_exponent, k = 1 .. n_tasks, normalised (numpy twin of
    :func:`sweepjax.tasks.sparse_parity.frequencies`, in float64)."""
    w = np.arange(1, n_tasks + 1, dtype=float) ** -float(zipf_exponent)
    return w / w.sum()


def _swept(ds: xr.Dataset, dim: str, positive: bool = False) -> bool:
    """Whether ``dim`` is a dimension with at least two (positive) values."""
    if dim not in ds.dims:
        return False
    v = ds[dim].values
    return int(np.sum(v > 0) if positive else len(v)) >= 2


def _diverged(ds: xr.Dataset) -> xr.DataArray:
    return ds["diverged"].fillna(False).astype(bool) if "diverged" in ds else xr.DataArray(False)


def _combos(da: xr.DataArray, skip: tuple[str, ...]) -> list[dict]:
    """Every combination of coordinates of the dims of ``da`` not in ``skip`` (``[{}]`` when none)."""
    other = [d for d in da.dims if d not in skip]
    return [dict(zip(other, c)) for c in itertools.product(*(da[d].values.tolist() for d in other))]


def _in_window(part: Slice, window: tuple[float | None, float | None] | None) -> Slice:
    """``part`` with only the points whose size lies in ``window`` (None: no bound)."""
    if window is None:
        return part
    lo, hi = window
    x = part.x[:, 0]
    keep = (x >= (lo if lo is not None else -np.inf)) & (x <= (hi if hi is not None else np.inf))
    return dataclasses.replace(part, x=part.x[keep], y=part.y[:, keep])


# -------------------------------------------------------------------------------------- loss-vs-size fits

def _fit_row(part: Slice, kind: str, ds: xr.Dataset, form: str, n_boot: int, seed: int, level: float,
             extra: dict) -> dict:
    """One row of a loss-vs-size fit (the keys are listed in :func:`n_scaling`)."""
    x, loss = part.x[:, 0], part.y
    med = reduce_runs(loss, "median")
    ok = np.isfinite(med)
    z = _zipf(ds, {**extra, **part.sel})
    row = {"kind": kind, "x": KINDS[kind][0], "y": KINDS[kind][1], "slice": dict(part.sel), **extra,
           "zipf_exponent": z, "task_alpha": None if z is None else z - 1.0, "theory": theory(kind, z),
           "paper": PAPER[kind].get(round(z, 2)) if z is not None else None,
           "form": form, "loss": part.label, "sizes": x[ok].tolist(), "median_loss": med[ok].tolist(),
           "all_sizes": x.tolist(), "seeds_per_size": (~np.isnan(loss)).sum(axis=0).tolist(),
           "diverged_per_size": np.isposinf(loss).sum(axis=0).tolist(), "unfitted_sizes": x[~ok].tolist(),
           "n_below_floor": part.n_below_floor, "params": {}, "alpha": None, "alpha_ci": None,
           "boot_failed": 0, "level": level, "converged": False, "note": ""}
    return {**row, **fit_medians(x, loss, form, n_boot, seed, level)}


def _law(ds: xr.Dataset, kind: str, window, form: str, n_boot: int, seed: int, level: float,
         log: TextIO | None, extra: dict | None = None) -> list[dict]:
    x, y = KINDS[kind]
    return [_fit_row(_in_window(part, window), kind, ds, form, n_boot, seed, level, extra or {})
            for part in sweep_slices(ds, x, y, "seed", log=log).values()]


def n_scaling(ds: xr.Dataset, n_boot: int = 1000, level: float = 0.95, *, form: str = "power_law",
              window: tuple[float | None, float | None] | None = None, seed: int = 0,
              log: TextIO | None = sys.stderr) -> list[dict]:
    """alpha_N: the median over seeds of ``final_test_loss`` vs ``n_params``, fitted as ``form``.

    One row per value of the other swept dims (e.g. per ``zipf_exponent``). The slices come from
    :func:`sweepjax.fit.sweep_slices` over ``seed``: a diverged member counts as the worst loss (+inf),
    so a size where half or more of the seeds diverged has median +inf and is not fitted (listed in
    ``unfitted_sizes``); the interval is a percentile bootstrap over seeds (``n_boot`` resamples, None
    when 0 or a single seed). ``window``: (lo, hi) bounds on n_params (None: no bound).

    Each row: ``kind`` ("N"), ``x``/``y`` (variable names), ``slice`` (coords of the other dims),
    ``zipf_exponent``, ``task_alpha`` (= zipf_exponent - 1), ``theory`` (the predicted exponent),
    ``paper`` (the paper's measured one at that exponent, or None), ``form``, ``loss`` (axis label),
    ``sizes``/``median_loss`` (fitted points), ``all_sizes``, ``seeds_per_size``, ``diverged_per_size``,
    ``unfitted_sizes``, ``n_below_floor``, ``params``, ``alpha``, ``alpha_ci``, ``boot_failed``,
    ``level``, ``converged``, ``note`` (why there is no fit, when ``alpha`` is None).
    """
    if "n_params" not in ds or not _swept(ds, "width"):
        raise FitInputError("N-scaling needs n_params and a sweep over model.width (two or more widths)")
    return _law(ds, "N", window, form, n_boot, seed, level, log)


def d_scaling(ds: xr.Dataset, n_boot: int = 1000, level: float = 0.95, *, form: str = "power_law",
              window: tuple[float | None, float | None] | None = None, seed: int = 0,
              log: TextIO | None = sys.stderr) -> list[dict]:
    """alpha_D: the median over seeds of ``best_test_loss`` (the minimum over evaluations: early stopping)
    vs ``dataset_size``, fixed training sets only (D > 0; D = 0 is fresh samples). Rows as
    :func:`n_scaling` with ``kind`` "D" and theory alpha / (alpha + 1); one per value of the other dims
    (e.g. width, zipf_exponent)."""
    if not _swept(ds, "dataset_size", positive=True):
        raise FitInputError("D-scaling needs a sweep over task.dataset_size with two or more sizes > 0")
    ds = ds.isel(dataset_size=np.flatnonzero(ds["dataset_size"].values > 0))
    return _law(ds, "D", window, form, n_boot, seed, level, log)


def s_scaling(ds: xr.Dataset, n_boot: int = 1000, level: float = 0.95, *, form: str = "power_law",
              window: tuple[float | None, float | None] | None = None, width: int | None = None,
              seed: int = 0, log: TextIO | None = sys.stderr) -> list[dict]:
    """alpha_S: the median over seeds of the ``test_loss`` curve vs ``eval_step`` (steps > 0) of the widest
    member (or ``width``; with a dataset_size axis, fresh data D = 0 if swept, else the largest D), fitted in ``window`` = (first, last) step (None: no bound; the paper fitted
    steps 500 .. 15,000 of 200,000, after the initial plateau). Rows as :func:`n_scaling` with ``kind``
    "S", theory alpha / (alpha + 1), and ``width`` (the member's width, None when width is not swept)."""
    if "eval_step" not in ds.dims or int(np.sum(ds["eval_step"].values > 0)) < 2:
        raise FitInputError("S-scaling needs test-loss curves with two or more evaluations after step 0")
    extra = {"width": None}
    if "width" in ds.dims:
        w = int(ds["width"].max()) if width is None else int(width)
        ds, extra = ds.sel(width=w), {"width": w}
    if "dataset_size" in ds.dims:   # fresh data (D = 0) if swept, else the largest set: a fixed set overfits
        sizes = ds["dataset_size"].values
        d = 0 if 0 in sizes else int(sizes.max())
        ds, extra = ds.sel(dataset_size=d), {**extra, "dataset_size": d}
    ds = ds.isel(eval_step=np.flatnonzero(ds["eval_step"].values > 0))
    return _law(ds, "S", window, form, n_boot, seed, level, log, extra)


# ------------------------------------------------------------------------------------ subtask analyses

def subtask_losses(ds: xr.Dataset, at: str = "final") -> xr.DataArray:
    """Each member's per-subtask test loss (bits), dims = sweep dims + ``subtask``.

    ``at``: "final" (each member's own last evaluation) or "min" (the minimum over evaluations: early
    stopping, as for fixed training sets). Diverged members are +inf (the worst loss); members not run
    stay NaN."""
    sub = ds["subtask_loss"]
    if at == "final":
        ran = sub.notnull().any("subtask")
        last = (ran * xr.DataArray(np.arange(sub.sizes["eval_step"]), dims="eval_step")).max("eval_step")
        out = sub.isel(eval_step=last).drop_vars("eval_step", errors="ignore")
    elif at == "min":
        out = sub.min("eval_step", skipna=True)
    else:
        raise ValueError(f"at must be 'final' or 'min', not {at!r}")
    return out.where(~_diverged(ds), np.inf)


def _at(ds: xr.Dataset, at: str) -> str:
    return ("min" if "dataset_size" in ds.dims else "final") if at == "auto" else at


def learned_counts(ds: xr.Dataset, threshold: float = 0.1, at: str = "auto") -> xr.DataArray:
    """Number of subtasks each member has learned (loss < ``threshold`` bits), over the sweep dims.

    ``at``: "final", "min" (see :func:`subtask_losses`) or "auto" (min when dataset_size is swept, the
    paper's early stopping, else final). A diverged member has learned none (0); one not run is NaN."""
    sub = subtask_losses(ds, _at(ds, at))
    return (sub < threshold).sum("subtask").astype(float).where(sub.notnull().any("subtask"))


def _slope(x: np.ndarray, y: np.ndarray) -> float | None:
    """Least-squares slope of log y vs log x (None with fewer than two distinct x)."""
    if len(np.unique(x)) < 2:
        return None
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def learned(ds: xr.Dataset, threshold: float = 0.1, at: str = "auto", n_boot: int = 1000,
            level: float = 0.95, seed: int = 0) -> list[dict]:
    """The number of subtasks learned (loss < ``threshold`` bits, see :func:`learned_counts`) vs N
    (``n_params``, when width is swept) and vs D (``dataset_size`` > 0, when swept), with its log-log
    slope against the theory's: 1 vs N (n learned ~ N, giving alpha_N = alpha) and 1 / (alpha + 1) vs D
    (the paper: "number learned grows ~ D^(1/(alpha+1))").

    One row per kind and value of the other swept dims. The count is the median over seeds (a diverged
    member counts 0); the slope is fitted where that median is strictly between 0 and n_tasks (neither
    nothing nor everything learned); ``slope_ci``: percentile bootstrap over seeds (None when n_boot = 0
    or a single seed). Row keys: ``kind`` ("learned_N"/"learned_D"), ``x``, ``slice``, ``zipf_exponent``,
    ``threshold``, ``at``, ``n_tasks``, ``sizes``, ``median_learned`` (per size, None if not run),
    ``fitted_sizes``, ``slope``, ``slope_ci``, ``theory``, ``level``, ``note``.
    """
    at = _at(ds, at)
    counts = learned_counts(ds, threshold, at)
    n_tasks = int(ds.sizes["subtask"])
    rows = []
    plans = []
    if _swept(ds, "width") and "n_params" in ds:
        plans.append(("learned_N", "width", "n_params", ds))
    if _swept(ds, "dataset_size", positive=True):
        plans.append(("learned_D", "dataset_size", "dataset_size",
                      ds.isel(dataset_size=np.flatnonzero(ds["dataset_size"].values > 0))))
    rng = np.random.default_rng(seed)
    for kind, dim, xname, part in plans:
        c_all = counts.sel({dim: part[dim]})
        for sel in _combos(c_all, (dim, "seed")):
            c = c_all.sel(sel)
            C = c.transpose("seed", dim).values if "seed" in c.dims else c.values[None]
            xv = part[xname].sel({k: v for k, v in sel.items() if k in part[xname].dims})
            x = (xv.max([d for d in xv.dims if d != dim]) if xv.ndim > 1 else xv).values.astype(float)
            z = _zipf(ds, sel)
            row = {"kind": kind, "x": xname, "slice": sel, "zipf_exponent": z, "threshold": threshold, "at": at,
                   "n_tasks": n_tasks, "sizes": x.tolist(), "median_learned": None, "fitted_sizes": [],
                   "slope": None, "slope_ci": None, "theory": theory(kind, z), "level": level, "note": ""}
            med = reduce_runs(C, "median", axis=0)
            fit = (med > 0) & (med < n_tasks) & (x > 0)
            row.update(median_learned=[_num(v) for v in med], fitted_sizes=x[fit].tolist(),
                       slope=_slope(x[fit], med[fit]))
            if row["slope"] is None:
                row["note"] = "no fit: fewer than two sizes with some but not all subtasks learned"
            elif n_boot and C.shape[0] > 1:
                draws = []
                for _ in range(n_boot):
                    m = reduce_runs(C[rng.integers(0, C.shape[0], C.shape[0])], "median", axis=0)
                    f = (m > 0) & (m < n_tasks) & (x > 0)
                    s = _slope(x[f], m[f])
                    if s is not None:
                        draws.append(s)
                if draws:
                    q = 100 * (1 - level) / 2
                    row["slope_ci"] = [float(v) for v in np.percentile(draws, [q, 100 - q])]
            rows.append(row)
    return rows


def convergence_steps(ds: xr.Dataset, threshold: float = 0.1, width: int | None = None) -> list[dict]:
    """When each subtask is learned: the first ``eval_step`` at which its loss is below ``threshold``
    bits (None if never), for the widest member (or ``width``), its subtask curves reduced to the median
    over seeds (a diverged seed counts as +inf). One row per value of the other swept dims.

    Row keys: ``kind`` ("convergence"), ``slice``, ``width``, ``zipf_exponent``, ``threshold``,
    ``steps`` (per subtask, most frequent first), ``frequencies`` (p_k), ``n_learned``, ``slope``
    (least-squares slope of log step vs log p_k over the learned subtasks with step > 0; the paper:
    -0.81, the naive theory -1) and ``n_fitted``, ``theory``, ``paper``, ``spearman`` / ``spearman_p``
    (Spearman rank correlation of frequency rank with learning step over the subtasks up to the rarest
    learned one, unlearned ones counting as learned last: +1 when they are learned in order of frequency;
    None with fewer than two learned, or when all tie; ``spearman_p``: its one-sided permutation p-value,
    :func:`spearman_p`), ``note``.
    """
    from scipy.stats import spearmanr
    sub = ds["subtask_loss"].where(~_diverged(ds), np.inf)
    w = None
    if "width" in sub.dims:
        w = int(ds["width"].max()) if width is None else int(width)
        sub = sub.sel(width=w)
    steps = ds["eval_step"].values
    n_tasks = int(ds.sizes["subtask"])
    rows = []
    for sel in _combos(sub, ("seed", "eval_step", "subtask")):
        s = sub.sel(sel)
        arr = s.transpose("seed", "eval_step", "subtask").values if "seed" in s.dims else s.values[None]
        med = reduce_runs(arr, "median", axis=0)                      # (eval_step, subtask)
        with np.errstate(invalid="ignore"):
            below = med < threshold
        first = np.where(below.any(axis=0), steps[np.argmax(below, axis=0)], np.nan).astype(float)
        z = _zipf(ds, sel)
        p = frequencies(n_tasks, z) if z is not None else None
        got = np.isfinite(first)
        row = {"kind": "convergence", "slice": sel, "width": w, "zipf_exponent": z, "threshold": threshold,
               "steps": [_num(v) for v in first], "frequencies": None if p is None else p.tolist(),
               "n_learned": int(got.sum()), "slope": None, "n_fitted": 0, "theory": theory("convergence", z),
               "paper": PAPER["convergence_slope"], "spearman": None, "spearman_p": None, "note": ""}
        fit = got & (first > 0)
        if p is not None and int(fit.sum()) >= 2:
            row.update(slope=_slope(p[fit], first[fit]), n_fitted=int(fit.sum()))
        else:
            row["note"] = "no slope: fewer than two subtasks learned after step 0 (or no zipf_exponent)"
        # Over the subtasks up to the rarest learned one, an unlearned subtask counting as learned last
        # (tied): a rare subtask learned while more frequent ones are not lowers the score.
        upto = int(np.flatnonzero(got).max()) + 1 if got.any() else 0
        order = np.where(got, first, np.inf)[:upto]
        if got.sum() >= 2 and len(np.unique(order)) > 1:
            row.update(spearman=_num(spearmanr(np.arange(upto), order).statistic),
                       spearman_p=_num(spearman_p(order)))
        rows.append(row)
    return rows


def spearman_p(order: np.ndarray, resamples: int = 9999) -> float:
    """One-sided p-value of a Spearman correlation between ``order`` and its index at least as large as observed,
    by permutation (exact: every ordering, when there are at most ``resamples`` of them, else ``resamples`` random
    ones from a fixed seed). The t approximation scipy's ``spearmanr`` uses is meaningless for the few subtasks
    a CPU member learns (3 learned subtasks in perfect order: t-approximate p = 0, exact p = 1/6)."""
    from scipy.stats import permutation_test, spearmanr
    rank = np.arange(len(order))
    res = permutation_test((order,), lambda o: spearmanr(rank, o).statistic, permutation_type="pairings",
                           n_resamples=resamples, alternative="greater", rng=np.random.default_rng(0))
    return float(res.pvalue)


# ----------------------------------------------------------------------------------------------- text

def describe(rows: dict | list[dict]) -> str:
    """Short printable lines, one per row of any function of this module."""
    rows = [rows] if isinstance(rows, dict) else rows
    lines = []
    for r in rows:
        name = slice_name(r.get("slice", {}))
        th = f", theory {r['theory']:.3f}" if r.get("theory") is not None else ""
        kind = r["kind"]
        if kind in KINDS:
            head = f"alpha_{kind} ({r['y']} ~ {r['x']}^-alpha) {name}"
            if r.get("width") is not None:
                head += f", width {r['width']}"
            if r["alpha"] is None:
                lines.append(f"{head}: {r['note']}")
                continue
            ci = f" [{r['alpha_ci'][0]:.3f}, {r['alpha_ci'][1]:.3f}]" if r["alpha_ci"] else ""
            paper = f", paper {r['paper']:.2f}" if r.get("paper") is not None else ""
            div = sum(r["diverged_per_size"])
            extra = (f"; {div} diverged member(s) counted as worst" if div else "") + \
                    (f"; unfitted {r['unfitted_sizes']}" if r["unfitted_sizes"] else "") + \
                    ("" if r["converged"] else "  (fit did NOT converge)")
            s = r["sizes"]
            lines.append(f"{head}: alpha = {r['alpha']:.3f}{ci}{th}{paper}; {r['x']} {s[0]:g}-{s[-1]:g}{extra}")
        elif kind.startswith("learned"):
            head = f"subtasks learned (< {r['threshold']:g} bits, {r['at']}) vs {r['x']} {name}"
            if r["slope"] is None:
                lines.append(f"{head}: {r['note']}")
                continue
            ci = f" [{r['slope_ci'][0]:.3f}, {r['slope_ci'][1]:.3f}]" if r["slope_ci"] else ""
            counts = " ".join(f"{x:g}:{'-' if c is None else f'{c:g}'}"
                              for x, c in zip(r["sizes"], r["median_learned"]))
            lines.append(f"{head}: slope {r['slope']:.3f}{ci}{th}; of {r['n_tasks']}: {counts}")
        elif kind == "convergence":
            head = f"convergence step (< {r['threshold']:g} bits) {name}" + \
                   (f", width {r['width']}" if r["width"] is not None else "")
            slope = (f"step ~ p_k^{r['slope']:.3f} (paper {r['paper']:.2f}, naive theory -1)"
                     if r["slope"] is not None else r["note"])
            rho = f", Spearman(rank, step) {r['spearman']:.3f}" if r["spearman"] is not None else ""
            lines.append(f"{head}: {r['n_learned']}/{len(r['steps'])} learned; {slope}{rho}")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------- figures

LABELS = {"N": "alpha_N (loss vs parameters)", "D": "alpha_D (loss vs data)", "S": "alpha_S (loss vs steps)"}
MARKERS = {"N": "o", "D": "s", "S": "^"}


def plot_exponents(rows: list[dict], path: Path) -> Path:
    """Fitted alpha_N / alpha_D / alpha_S (whichever ``rows`` hold) vs zipf_exponent with their bootstrap
    intervals, the theory's lines (alpha_N = alpha, alpha_D = alpha_S = alpha / (alpha + 1)) and the
    paper's measured alpha_N (grey)."""
    from sweepjax.plots import plt, save
    fig, ax = plt.subplots(figsize=(6, 4.5))
    rows = [r for r in rows if r.get("kind") in KINDS and r.get("alpha") is not None
            and r.get("zipf_exponent") is not None]
    zs = [r["zipf_exponent"] for r in rows] or [1.4]
    span = max(max(zs) - min(zs), 0.2)
    grid = np.linspace(max(min(zs) - 0.1 * span, 1.001), max(zs) + 0.1 * span, 100)
    kinds = [k for k in KINDS if any(r["kind"] == k for r in rows)]
    offsets = {k: (i - (len(kinds) - 1) / 2) * 0.006 * span for i, k in enumerate(kinds)}
    for i, kind in enumerate(kinds):
        sel = [r for r in rows if r["kind"] == kind]
        z = np.array([r["zipf_exponent"] for r in sel]) + offsets[kind]
        a = np.array([r["alpha"] for r in sel])
        err = np.array([[r["alpha"] - r["alpha_ci"][0], r["alpha_ci"][1] - r["alpha"]] if r["alpha_ci"]
                        else [0.0, 0.0] for r in sel]).T
        ax.errorbar(z, a, yerr=np.clip(err, 0, None), fmt=MARKERS[kind], color=f"C{i}", capsize=3,
                    label=f"fitted {LABELS[kind]}")
    if "N" in kinds or not kinds:
        ax.plot(grid, grid - 1, "--", color="C0" if "N" in kinds else "k", lw=1, label="theory alpha_N = alpha")
    if {"D", "S"} & set(kinds):
        ax.plot(grid, (grid - 1) / grid, ":", color="k", lw=1, label="theory alpha_D = alpha_S = alpha/(alpha+1)")
    pz = [z for z in PAPER["N"] if grid[0] <= z <= grid[-1]]
    if pz:
        ax.plot(pz, [PAPER["N"][z] for z in pz], "x", color="0.5", label="paper's measured alpha_N")
    ax.set(xlabel="zipf_exponent = alpha + 1  (p_k ~ k^-(alpha+1))", ylabel="scaling exponent",
           title="Quantization model: exponents vs task-frequency exponent")
    ax.axhline(0, color="0.8", lw=0.5)
    ax.legend(fontsize=7)
    return save(fig, path)


def plot_laws(rows: list[dict], path: Path) -> Path:
    """Median loss vs size with the fitted power law: one panel per kind (N, D, S), one colour per slice."""
    from sweepjax.plots import plt, save
    kinds = [k for k in KINDS if any(r.get("kind") == k for r in rows)]
    fig, axes = plt.subplots(1, max(len(kinds), 1), figsize=(4.5 * max(len(kinds), 1), 4), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        drawn = False
        for i, r in enumerate(r for r in rows if r.get("kind") == kind):
            color = f"C{i % 10}"
            name = slice_name(r["slice"])
            pts = [(x, y) for x, y in zip(r["sizes"], r["median_loss"]) if y is not None and np.isfinite(y) and y > 0]
            if not pts:   # e.g. every seed of the widest width diverged: nothing to draw for S
                continue
            drawn = True
            ax.plot(*zip(*pts), "o", ms=3, color=color, label=name)
            if r["alpha"] is not None:
                x = np.geomspace(r["sizes"][0], r["sizes"][-1], 50)
                p = r["params"]
                ax.plot(x, p["A"] * x ** -p["alpha"] + p.get("E", 0.0), "-", lw=1, color=color,
                        label=f"alpha = {r['alpha']:.2f}" + (f" (theory {r['theory']:.2f})" if r["theory"] is not None
                                                             else ""))
        first = next(r for r in rows if r.get("kind") == kind)
        ax.set(xlabel=first["x"], ylabel=f"{first['loss']} (median over seeds)", title=f"{kind}-scaling")
        if not drawn:
            ax.text(0.5, 0.5, "no finite losses", ha="center", transform=ax.transAxes)
            continue
        ax.set(xscale="log", yscale="log")
        ax.legend(fontsize=6)
    return save(fig, path)


def _ticks(ax, values, n: int = 8) -> None:
    idx = np.unique(np.linspace(0, len(values) - 1, min(n, len(values))).round().astype(int))
    ax.set_xticks(idx, [f"{values[i]:g}" for i in idx], rotation=45 if len(values) > 6 else 0, fontsize=7)


def plot_emergence(ds: xr.Dataset, path: Path, over: str = "width", threshold: float = 0.1) -> Path:
    """Heat map of each subtask's test loss (median over seeds, bits) vs ``over``: "width" (final loss),
    "dataset_size" (D > 0, minimum over evaluations), or "eval_step" (the curve of the widest member).
    Subtasks run down the rows, most frequent first; one panel per value of the other swept dims (at most
    8). Quanta emerge as the dark region spreading to rarer subtasks; the colour bar marks ``threshold``."""
    from sweepjax.plots import plt   # not plots.save: tight_layout fights the shared colour bar
    if over == "width":
        sub = subtask_losses(ds, "final")
    elif over == "dataset_size":
        ds = ds.isel(dataset_size=np.flatnonzero(ds["dataset_size"].values > 0))
        sub = subtask_losses(ds, "min")
    elif over == "eval_step":
        sub = ds["subtask_loss"].where(~_diverged(ds), np.inf)
        if "width" in sub.dims:
            sub = sub.sel(width=int(ds["width"].max()))
    else:
        raise ValueError(f"over must be 'width', 'dataset_size' or 'eval_step', not {over!r}")
    panels = _combos(sub, (over, "seed", "subtask", "eval_step") if over != "eval_step"
                     else (over, "seed", "subtask"))[:8]
    ncol = min(len(panels), 4)
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.6 * ncol + 0.8, 3.4 * nrow), squeeze=False)
    values = sub[over].values
    mesh = None
    for ax, sel in zip(axes.flat, panels):
        s = sub.sel(sel)
        if "eval_step" in s.dims and over != "eval_step":   # a leftover curve axis: its last evaluation
            s = s.isel(eval_step=-1)
        arr = s.transpose(*(["seed"] if "seed" in s.dims else []), "subtask", over).values
        med = reduce_runs(arr.reshape(-1, *arr.shape[-2:]), "median", axis=0)
        mesh = ax.pcolormesh(np.arange(len(values) + 1) - 0.5, np.arange(med.shape[0] + 1) - 0.5,
                             np.where(np.isfinite(med), med, np.nan), cmap="viridis", vmin=0, vmax=1,
                             shading="flat")
        ax.set_ylim(med.shape[0] - 0.5, -0.5)
        _ticks(ax, values)
        ax.set(xlabel=over, title=slice_name(sel))
        if ax in axes[:, 0]:
            ax.set_ylabel("subtask (most frequent first)")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    if mesh is not None:
        bar = fig.colorbar(mesh, ax=axes.ravel().tolist(), fraction=0.04)
        bar.set_label("subtask test loss (bits, median over seeds)")
        bar.ax.axhline(threshold, color="w", lw=1.5)
    what = {"width": "final loss", "dataset_size": "min loss over training", "eval_step": "widest member"}[over]
    fig.suptitle(f"Emergence of subtasks vs {over} ({what})", fontsize=10)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_convergence(rows: list[dict], path: Path) -> Path:
    """Convergence step of each learned subtask vs its frequency p_k (log-log), the fitted slope and the
    paper's p_k^-0.81, one colour per slice (rows of :func:`convergence_steps`)."""
    from sweepjax.plots import plt, save
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, r in enumerate(r for r in rows if r.get("frequencies")):
        p = np.array(r["frequencies"])
        s = np.array([np.nan if v is None else v for v in r["steps"]])
        ok = np.isfinite(s) & (s > 0)
        if not ok.any():
            continue
        color = f"C{i % 10}"
        rho = f", Spearman {r['spearman']:.2f}" if r["spearman"] is not None else ""
        ax.plot(p[ok], s[ok], "o", ms=3, color=color, label=f"{slice_name(r['slice'])}{rho}")
        if r["slope"] is not None:
            c = np.exp(np.mean(np.log(s[ok]) - r["slope"] * np.log(p[ok])))
            x = np.geomspace(p[ok].min(), p[ok].max(), 20)
            ax.plot(x, c * x ** r["slope"], "-", lw=1, color=color, label=f"slope {r['slope']:.2f}")
            cp = np.exp(np.mean(np.log(s[ok]) - PAPER["convergence_slope"] * np.log(p[ok])))
            ax.plot(x, cp * x ** PAPER["convergence_slope"], ":", lw=1, color="k",
                    label="paper p_k^-0.81" if i == 0 else None)
    ax.set(xscale="log", yscale="log", xlabel="subtask frequency p_k",
           ylabel=f"first step with loss < {rows[0]['threshold']:g} bits" if rows else "step",
           title="When each subtask is learned")
    ax.xaxis.set_minor_formatter(plt.NullFormatter())   # minor labels overlap over one decade
    ax.legend(fontsize=7)
    return save(fig, path)


def summarize(ds: xr.Dataset, n_boot: int = 1000, threshold: float = 0.1,
              log: TextIO | None = sys.stderr) -> dict:
    """The study's numbers: ``scaling`` (the N / D / S fits the sweep supports: N needs a width sweep,
    D a dataset_size sweep, S curves), ``learned`` (subtasks learned vs N and D) and ``convergence``."""
    rows: list[dict] = []
    for func in (n_scaling, d_scaling, s_scaling):
        try:
            rows += func(ds, n_boot=n_boot, log=log)
        except FitInputError:
            pass   # not supported by this sweep
    has_subtasks = "subtask_loss" in ds
    return {"scaling": rows, "learned": learned(ds, threshold, n_boot=n_boot) if has_subtasks else [],
            "convergence": convergence_steps(ds, threshold) if has_subtasks else []}


def make_figures(ds: xr.Dataset, outdir: str | Path, summary: dict | None = None, threshold: float = 0.1) -> list[Path]:
    """Write the figures the Dataset supports into ``outdir``; returns their paths. ``summary``: the
    :func:`summarize` of ``ds`` (computed with 200 resamples if not given).

    ``quanta_exponents.png`` and ``quanta_laws.png`` (when a fit was made), ``quanta_emergence_<over>.png``
    (over width and dataset_size when swept, over eval_step always) and ``quanta_convergence.png`` (when
    some subtask is learned after step 0)."""
    summary = summary or summarize(ds, n_boot=200, threshold=threshold, log=None)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    rows, paths = summary["scaling"], []
    if any(r["alpha"] is not None for r in rows):
        paths += [plot_exponents(rows, out / "quanta_exponents.png"), plot_laws(rows, out / "quanta_laws.png")]
    if "subtask_loss" in ds:
        for over in ("width", "dataset_size", "eval_step"):
            if over == "eval_step" or _swept(ds, over, positive=over == "dataset_size"):
                paths.append(plot_emergence(ds, out / f"quanta_emergence_{over}.png", over, threshold))
        if any(r["slope"] is not None for r in summary["convergence"]):
            paths.append(plot_convergence(summary["convergence"], out / "quanta_convergence.png"))
    return paths


def analyse(ds: xr.Dataset, out: str | Path, run_cfg, width_rows: list[dict], log: TextIO | None = None,
            warn: TextIO | None = None) -> list[Path]:
    """The study's step after a run (the task's ``STUDY``): :func:`summarize` with ``run.bootstrap``
    resamples, printed to ``log`` and written to ``quanta.json``, then the figures when ``run.figures``.
    ``width_rows`` (the generic width fit) is not used: the N fit here is against n_params."""
    summary = summarize(ds, n_boot=run_cfg.bootstrap, log=warn)
    if log:
        for part in summary.values():
            if part:
                print(describe(part), file=log)
    Path(out).mkdir(parents=True, exist_ok=True)
    report = Path(out) / "quanta.json"
    atomic_write(report, lambda p: p.write_text(json.dumps(summary, indent=2)))
    return [report] + (make_figures(ds, Path(out) / FIGURES_DIR, summary) if run_cfg.figures else [])
