"""Study 4 (Barkeshli, Alfarano & Gromov 2026): scaling laws of next-token prediction on random-walk
languages (issue 14), after a sweep of 2-layer transformers over widths, learning rates, seeds and one-epoch
data budgets (``train.steps`` swept with fresh data each step, so D = ``tokens`` seen; with a fixed training
set, ``task.dataset_size`` > 0, D is the unique tokens, min(tokens seen, dataset_size x tokens per example)).

Reads a results Dataset with dims ``width`` (required), ``steps`` (D; optional), ``lr`` (optional),
``seed`` / ``data_seed`` (runs: the bootstrap resamples them) and any other swept dims (``bias`` = kappa,
``parameterization``, ``graph`` ...): every combination of the other dims is a *slice*, analysed apart.

The excess loss
    :func:`excess`: ``final_test_loss - test_bayes_loss`` (the true walk's loss on the very test sequences,
    so the test set's sampling offset cancels; ``irreducible_loss``, the entropy rate, is reported beside
    it, and used only for results that lack ``test_bayes_loss``). Diverged members are +inf (the worst
    loss, never dropped); members at or below the floor cannot be fitted in log space and are left out
    (counted, one warning per slice). :func:`floor_check`: the minimum of ``final_test_loss -
    test_bayes_loss`` over all members (the study's "never below the floor minus 0.01 nats": reported).
    A slice whose floor is unknown (NaN or absent, e.g. the ``text`` task's ``source = "corpus"``) has no
    excess: its laws are fitted to the raw loss with a free irreducible term (``power_law_offset`` in 1-D,
    ``joint_nd`` in 2-D; rows ``floor_fitted``, the fitted floor ``E`` with its interval), and every E-fixed
    variant is "n/a (no exact floor)".

Best learning rate
    With an ``lr`` dim, :func:`sweepjax.analysis.selection.best_over` keeps per (width, steps, slice) the lr
    with the lowest median over seeds (diverged seeds the worst); which lr won, and whether it is the
    smallest or largest swept, is reported per point. The bootstrap then treats the winner as fixed.

N and D scaling (:func:`n_scaling`, :func:`d_scaling`)
    Median over runs of the excess vs N at the largest D, and vs D at the largest width, fitted as
    ``excess = A x^-alpha`` (the irreducible term fixed at the exact floor) by the fit module's Huber /
    L-BFGS fit, with a percentile bootstrap over runs (``n_boot`` resamples, 95 %). N is
    ``n_params_non_embedding`` (Kaplan's count; also the N of ``train_flops_6nd`` = 6 N D); the count with
    embeddings is a row of the sensitivity table. The *headline window* (:func:`headline_window`): the
    largest window of >= 4 consecutive fitted sizes whose log-log least-squares line falls with R^2 >= 0.98
    (ties: the window reaching the larger sizes, then the higher R^2); with no such window, all fitted sizes
    (flagged). With fewer than 4 fitted sizes the window is all of them, never passed ("too few sizes"); no
    law is fitted to fewer than 3. Its R^2 and the decades of x it spans are reported, and "excess strictly
    decreasing in width" (medians at the largest D, all widths). Bootstrap intervals need >= 3 runs per point
    (else None, with ``ci_note``); one whose resamples take fewer than 10 distinct values is flagged
    (``ci_coarse``).

Fit sensitivity (:func:`sensitivity`), reported apart from the bootstrap error
    The N exponent at the largest D under: the irreducible term fixed at the exact floor (power law on
    the excess) or free (``power_law_offset`` on the raw loss); N without or with embeddings; and every
    window of >= 4 consecutive fitted widths (>= 3 when fewer than 4 are fitted). One row per variant (point
    estimate for every window; a bootstrap interval for the headline window and for all widths), and per
    slice the spread (max - min) of the exponent across variants and per factor, next to the median
    bootstrap interval width.

2-D fit (:func:`joint_fits`)
    ``L = E + A/N^alpha + B/D^beta`` on every (N, D) point: E fixed at the floor (``A/N^alpha + B/D^beta``
    fitted to the excess) and E free (the fit module's ``joint_nd`` on the raw loss), each with a bootstrap
    over runs (at most ``JOINT_BOOT_MAX`` resamples), compared with the 1-D exponents.

Compute-optimal frontier (:func:`compute_frontier`), for C = 6 N D (``train_flops_6nd``) and the exact
    FLOP count (``train_flops`` = 3 x forward FLOPs x tokens), with N = non-embedding parameters:
    approach 1, the lower envelope of excess vs C over each width's points along D (only *certified* points
    enter the headline exponent: the winning width is neither the smallest nor the largest swept and both
    neighbouring widths reach that compute, so it beat them on equal terms; for a unimodal IsoFLOP profile
    that is the optimum over the swept widths), with a bootstrap over runs (at most ``FRONTIER_BOOT_MAX``
    resamples); approach 2, IsoFLOP parabolas on budgets where each width's excess is interpolated along
    its D points (log-log; known to be biased; no interval); approach 3, the minimum of the 2-D fit along
    each budget (for 6ND the fit module's ``from_joint_fit``; for the exact count the same minimisation on a
    grid of log N with D = C / (training FLOPs per token at N), the measured per-token count interpolated
    log-log in N between the swept widths), its interval from the 2-D fit's bootstrap (each resample's law
    minimised the same way). Each gives ``N_opt ~ C^a`` and ``D_opt ~ C^b``.

muP vs SP (:func:`mup_vs_sp`)
    With a ``parameterization`` dim: the excess vs N at the largest D at the best lr of each, both
    N-exponents (headline windows, and over the widths both have), and at which widths each is lower.

:func:`summarize` gathers everything (JSON-ready with :func:`to_json`), :func:`describe` prints it,
:func:`make_figures` draws it, :func:`analyse` is the task's study step (``language.json`` + figures).
"""
from __future__ import annotations

import itertools
import json
from types import SimpleNamespace
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import jax.numpy as jnp
import numpy as np
import xarray as xr

from sweepjax import fit as fitting
from sweepjax.analysis.ladder import describe as describe_ladder, ladder, plot_ladder
from sweepjax.fit.forms import Param, grid_product
from sweepjax.fit.inputs import FitInputError, reduce_runs
from sweepjax.fit.io import FLOORS, fitted_loss, slice_name

__all__ = ["HEADLINE_N", "JOINT_ND_EXCESS", "Prepared", "SliceData", "analyse", "compute_frontier",
           "d_scaling", "describe", "excess", "floor_check", "headline_window", "joint_fits", "make_figures",
           "mup_vs_sp", "n_scaling", "prepare", "sensitivity", "summarize", "to_json"]

RUN_DIMS = ("seed", "data_seed")
"""Dims whose entries are repeated runs of one point (resampled by the bootstrap)."""
HEADLINE_N = "n_params_non_embedding"
"""The parameter count of the headline N fits, the 2-D fit and the frontier (Kaplan's; the N of 6ND)."""
N_COUNTS = ("n_params_non_embedding", "n_params")
MIN_WINDOW = 4            # sizes in a headline / sensitivity window (fewer when fewer are fitted)
MIN_LAW_POINTS = 3        # sizes any fit reported as a law needs (a window of fewer than MIN_WINDOW never passes)
MIN_BOOT_RUNS = 3         # runs per point a bootstrap interval needs (2 runs: 3 distinct medians)
MIN_DISTINCT = 10         # distinct resample values below which an interval is flagged as coarse
R2_MIN = 0.98             # log-log R^2 a headline window must reach
FLOOR_TOLERANCE = 0.01    # nats: a member below floor - this is reported as below the floor
LEVEL = 0.95              # bootstrap percentile intervals
START_SPREAD_MAX = 0.01   # exponent spread over a fit's near-best starts above which it is flagged as not identified
JOINT_BOOT_MAX = 200      # bootstrap resamples of the 2-D fits (each a 4-5 parameter multi-start refit)
FRONTIER_BOOT_MAX = 200   # bootstrap resamples of the approach-1 envelope
ENVELOPE_POINTS = 40      # compute values of the approach-1 envelope
ISO_BUDGETS = 12          # IsoFLOP budgets (log-spaced over the compute range)
JOINT_BUDGETS = 20        # compute budgets of the approach-3 frontier
COMPUTES = {"6ND": "train_flops_6nd", "exact": "train_flops"}
"""Compute counts of the frontier -> the results variable holding each member's training FLOPs."""
FLOOR_FORMS = {"fixed": "power_law", "free": "power_law_offset"}
"""Irreducible term -> the form: fixed at the floor (power law on the excess), free (offset, raw loss)."""
NO_FLOOR = "n/a (no exact floor)"
FITTED_LABEL = "final test loss, floor fitted (L = E + A x^-alpha)"


# ------------------------------------------------------------------------------------------ the 2-D law

def _joint_excess_grid(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    # the joint_nd grid (Hoffmann et al. approach 3) without the offset: 6 x 6 x 5 x 5 starts
    shift = np.log(np.median(y)) - 1.0
    coef = shift + np.arange(0.0, 30.0, 5.0)
    return grid_product(a=coef, b=coef, alpha=np.arange(0.0, 2.01, 0.5), beta=np.arange(0.0, 2.01, 0.5))


JOINT_ND_EXCESS = fitting.additive_form(
    "joint_nd_excess", ("N", "D"), (Param("a", "A", log=True), Param("b", "B", log=True)),
    (Param("alpha", "alpha"), Param("beta", "beta")),
    lambda s, lx: jnp.stack([-s[0] * lx[:, 0], -s[1] * lx[:, 1]], -1),
    _joint_excess_grid, ("alpha", "beta"), "L - E = A N^-alpha + B D^-beta (E fixed at the floor)")
"""The 2-D law with E fixed at the exact floor, fitted to the excess (not registered in ``FORMS``)."""


# ------------------------------------------------------------------------------------------ data

def excess(ds: xr.Dataset, y: str = "final_test_loss") -> xr.DataArray:
    """``y`` minus the loss floor, in the loss unit (nats): ``test_bayes_loss`` (the true walk's loss on the
    same test set), or ``irreducible_loss`` for results without it; diverged members +inf (the worst loss),
    members not run NaN. The floor's name is in ``attrs["floor"]`` (None when the results carry none)."""
    da, label = fitted_loss(ds, y)
    da.attrs.update(label=label, floor=next((f for f in FLOORS if f in ds.data_vars), None))
    return da


def _py(v):
    """A numpy scalar as a Python one (NaN kept)."""
    return v.item() if hasattr(v, "item") else v


def floor_check(ds: xr.Dataset, tolerance: float = FLOOR_TOLERANCE) -> dict:
    """The minimum over every member that ran and did not diverge (every lr) of ``final_test_loss -
    test_bayes_loss`` (nats), where it is, and how many members are below ``-tolerance`` and at or below 0;
    ``ok``: the minimum is >= -tolerance (the study's acceptance: reported, not asserted). Also the floors
    (``test_bayes_loss``, ``irreducible_loss``) with the dims they vary along."""
    out: dict = {"tolerance": tolerance, "floors": {}}
    for name in FLOORS:
        if name in ds.data_vars:
            v = ds[name]
            out["floors"][name] = float(v) if v.ndim == 0 else {"dims": list(v.dims), "values": v.values.tolist()}
    if "test_bayes_loss" not in ds.data_vars:
        out.update(min_excess=None, ok=None, note="no test_bayes_loss in the results: no floor check")
        return out
    loss = ds["final_test_loss"].astype(float)
    if "diverged" in ds.data_vars:
        loss = loss.where(~ds["diverged"].fillna(False).astype(bool))
    diff = loss - ds["test_bayes_loss"]
    vals = np.asarray(diff.values, float)
    if not np.isfinite(vals).any():
        out.update(min_excess=None, ok=None, note="no member with a finite loss")
        return out
    i = np.unravel_index(int(np.nanargmin(vals)), vals.shape)
    m = float(vals[i])
    out.update(min_excess=m, at={d: _py(diff[d].values[j]) for d, j in zip(diff.dims, i)},
               n_members=int(np.isfinite(vals).sum()), n_below_tolerance=int(np.sum(vals < -tolerance)),
               n_at_or_below_floor=int(np.sum(vals <= 0)), ok=bool(m >= -tolerance))
    return out


@dataclass
class SliceData:
    """One slice's arrays, widths sorted: W widths, S data budgets (S = 1 without a ``steps`` dim), R runs.

    ``excess``/``loss`` (R, W, S) in nats: loss - floor / loss, +inf for diverged members, NaN for members not
    run (and, in ``excess``, members at or below the floor: ``n_below_floor``; all NaN when the slice has no
    known floor, ``floor`` None: then the floor is fitted, see :attr:`y`). ``n``: count name -> (W,)
    parameters; ``tokens`` (W, S): D, the unique training tokens; ``compute``: "6ND"/"exact" -> (W, S)
    training FLOPs; ``best_lr`` / ``lr_at_edge`` (W, S) when an lr was selected."""

    sel: dict
    width: np.ndarray
    n: dict[str, np.ndarray]
    steps: np.ndarray | None
    tokens: np.ndarray
    compute: dict[str, np.ndarray]
    excess: np.ndarray
    loss: np.ndarray
    floor: float | None
    irreducible: float | None
    best_lr: np.ndarray | None = None
    lr_at_edge: np.ndarray | None = None
    n_below_floor: int = 0
    notes: list[str] = field(default_factory=list)
    label: str = ""

    @property
    def floor_fitted(self) -> bool:
        """No known floor: the 1-D and 2-D laws are fitted to the raw loss with a free irreducible term."""
        return self.floor is None

    @property
    def y(self) -> np.ndarray:
        """(R, W, S) what the laws are fitted to: the excess, or the raw loss when the floor is fitted."""
        return self.loss if self.floor_fitted else self.excess

    @property
    def form(self) -> str:
        """The 1-D form fitted to :attr:`y`."""
        return FLOOR_FORMS["free" if self.floor_fitted else "fixed"]

    @property
    def median_y(self) -> np.ndarray:
        return reduce_runs(self.y, "median", axis=0)

    @property
    def name(self) -> str:
        return slice_name(self.sel)

    @property
    def runs(self) -> int:
        return self.excess.shape[0]

    @property
    def median_excess(self) -> np.ndarray:
        """(W, S) median over runs (diverged counted as worst; NaN where none ran)."""
        return reduce_runs(self.excess, "median", axis=0)

    @property
    def median_loss(self) -> np.ndarray:
        return reduce_runs(self.loss, "median", axis=0)

    def table(self) -> dict:
        """The slice's numbers (JSON-ready lists; W x S tables indexed [width][steps])."""
        out = {"slice": self.sel, "width": self.width, **self.n, "steps": self.steps, "tokens": self.tokens,
               **{f"compute_{k}": v for k, v in self.compute.items()}, "median_excess": self.median_excess,
               "median_loss": self.median_loss, "floor": self.floor, "irreducible_loss": self.irreducible,
               "runs": self.runs, "n_below_floor": self.n_below_floor, "floor_fitted": self.floor_fitted,
               "label": self.label}
        if self.best_lr is not None:
            out.update(best_lr=self.best_lr, lr_at_edge=self.lr_at_edge)
        return out


@dataclass
class Prepared:
    """A results Dataset reduced for the study: the best lr taken, split into slices."""

    slices: list[SliceData]
    has_d: bool
    lr: dict
    floors: dict
    notes: list[str]


def _grid(part: xr.Dataset, da: xr.DataArray, runs: list[str], has_steps: bool) -> np.ndarray:
    """``da`` broadcast over the slice's members as (R, W, S) float."""
    template = part["final_test_loss"]
    extra = [d for d in da.dims if d not in template.dims]
    if extra:
        da = da.isel({d: 0 for d in extra})
    dims = runs + ["width"] + (["steps"] if has_steps else [])
    v = np.asarray(da.broadcast_like(template).transpose(*dims).values, float)
    v = v.reshape((-1,) + v.shape[len(runs):]) if runs else v[None]
    return v if has_steps else v[..., None]


def prepare(ds: xr.Dataset, log: TextIO | None = None) -> Prepared:
    """Select the best lr (when swept) and split ``ds`` into :class:`SliceData`; ``log`` gets one warning
    line per slice with members at or below the floor."""
    if "width" not in ds.dims:
        raise ValueError(f"the language analysis needs a width dim (dims: {', '.join(map(str, ds.dims))})")
    notes: list[str] = []
    floors = floor_check(ds)
    runs = [d for d in RUN_DIMS if d in ds["final_test_loss"].dims]
    lr: dict = {"swept": None}
    if "lr" in ds.dims and ds.sizes["lr"] == 1:
        lr = {"swept": None, "single": _py(ds["lr"].values[0])}
        notes.append(f"lr not tuned: a single lr ({lr['single']:g}) was run")
        ds = ds.isel(lr=0, drop=True)
    elif "lr" in ds.dims:
        lr = {"swept": ds["lr"].values.tolist()}
        from sweepjax.analysis.selection import best_over
        ds = best_over(ds, "lr", "final_test_loss", runs[0] if runs else "seed")
    else:
        notes.append("lr not swept: each (N, D) point is its single lr run")
    if not runs:
        notes.append("no seed dim: one run per point, no bootstrap intervals")
    has_steps = "steps" in ds.dims
    has_d = has_steps and ds.sizes["steps"] > 1
    if not has_d:
        notes.append("no steps dim with two or more values: D-scaling, the 2-D fit and the compute-optimal "
                     "frontier are skipped (N-scaling at the single D)")
    ds = ds.sortby("width")
    if has_steps:
        ds = ds.sortby("steps")
    ex = excess(ds)
    seen = ds["tokens"] if "tokens" in ds.data_vars else None
    unique, note = _unique_tokens(ds, seen) if seen is not None else (None, None)
    if note:
        notes.append(note)
    raw = ds["final_test_loss"].astype(float)
    if "diverged" in ds.data_vars:
        raw = raw.where(~ds["diverged"].fillna(False).astype(bool), np.inf)
    other = [d for d in ds["final_test_loss"].dims if d not in runs + ["width", "steps"]]
    slices = []
    for combo in itertools.product(*(range(ds.sizes[d]) for d in other)):
        at = dict(zip(other, combo))
        part = ds.isel(at)
        sel = {d: _py(part[d].values) for d in other}
        g = lambda da: _grid(part, da.isel({d: i for d, i in at.items() if d in da.dims}), runs, has_steps)
        floor = _known(g(part[ex.attrs["floor"]])) if ex.attrs["floor"] else None
        irr = _known(g(part["irreducible_loss"])) if "irreducible_loss" in part.data_vars else None
        e, loss = g(ex), g(raw)
        if floor is None:   # no known floor: no excess (fitted_loss would subtract 0); the floor is fitted
            e = np.full_like(e, np.nan)
        low = np.isfinite(e) & (e <= 0)
        if low.any() and log is not None:
            print(f"warning: {slice_name(sel)}: {int(low.sum())} member(s) at or below the loss floor "
                  f"(lowest excess {np.min(e[low]):.3g} nats) are left out of the fits", file=log)
        e = np.where(low, np.nan, e)
        sd_notes = []
        n = {}
        for name in N_COUNTS:
            if name in part.data_vars:
                n[name] = g(part[name])[0, :, 0]
        if not n:
            n = {"width": part["width"].values.astype(float)}
            sd_notes.append("no parameter counts in the results: N = width")
        elif HEADLINE_N not in n:
            sd_notes.append(f"no {HEADLINE_N}: N counts all parameters")
        if seen is not None:
            tokens_seen = g(seen)[0]
            tokens = g(unique)[0]
            repeated = int(np.sum(tokens < tokens_seen))
            if repeated:
                sd_notes.append(f"{repeated} (N, D) point(s) trained past one epoch of a fixed training set: D is "
                                "their unique tokens, shared with the points that saw more")
        else:
            s = part["steps"].values.astype(float) if has_steps else np.ones(1)
            tokens = tokens_seen = np.broadcast_to(s, (part.sizes["width"], len(s))).copy()
            sd_notes.append("no tokens in the results: D = steps")
        n_head = n.get(HEADLINE_N, next(iter(n.values())))
        compute = {"6ND": g(part["train_flops_6nd"])[0] if "train_flops_6nd" in part.data_vars
                   else 6.0 * n_head[:, None] * tokens_seen}
        if "train_flops" in part.data_vars:
            compute["exact"] = g(part["train_flops"])[0]
        if floor is None:
            sd_notes.append("no known loss floor: every law is fitted to the raw loss with a free irreducible "
                            f"term (floor fitted); the E-fixed variants are {NO_FLOOR}")
        sd = SliceData(sel=sel, width=part["width"].values.astype(float), n=n,
                       steps=part["steps"].values.astype(float) if has_steps else None, tokens=tokens,
                       compute=compute, excess=e, loss=loss, floor=floor, irreducible=irr,
                       n_below_floor=int(low.sum()), notes=sd_notes,
                       label=ex.attrs["label"] if floor is not None else FITTED_LABEL)
        if "best_lr" in part.data_vars:
            sd.best_lr = g(part["best_lr"])[0]
            sd.lr_at_edge = g(part["best_lr_at_edge"].astype(float))[0].astype(bool)
        slices.append(sd)
    if lr["swept"] is not None:
        edges = [{"slice": s.sel, "width": float(s.width[w]), "tokens": float(s.tokens[w, k]),
                  "best_lr": float(s.best_lr[w, k])}
                 for s in slices for w, k in zip(*np.nonzero(s.lr_at_edge))]
        lr.update(n_points=int(sum(s.best_lr.size for s in slices)), n_at_edge=len(edges), at_edge=edges)
    return Prepared(slices, has_d, lr, floors, notes)


def _known(v: np.ndarray) -> float | None:
    """The median of the finite values of a floor (None when it has none: the floor is unknown)."""
    v = np.asarray(v, float)
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else None


def _unique_tokens(ds: xr.Dataset, tokens: xr.DataArray) -> tuple[xr.DataArray, str | None]:
    """D of every member: ``tokens`` (tokens seen), or for a fixed training set (``task.dataset_size`` > 0,
    swept or not) its unique tokens ``min(tokens seen, dataset_size x tokens per example)``, tokens per example
    from the task the results' config names (``Task.tokens_per_example`` with the swept task keys applied).
    Also a note when any member has a fixed set. ValueError when the results do not say how many tokens an
    example holds."""
    from sweepjax.results import saved_task
    task = saved_task(ds)
    size = ds["dataset_size"] if "dataset_size" in ds.variables else xr.DataArray(task.get("dataset_size", 0))
    if not bool((size > 0).any()):
        return tokens, None
    if "name" not in task:
        raise ValueError("fixed training sets (task.dataset_size > 0) but the results carry no config "
                         "(attribute sweepjax_config) to count tokens per example: the unique data D is unknown")
    from sweepjax.tasks import task_class
    keys = SimpleNamespace(**{**task, **{k: ds[k] for k in task if k in ds.coords}})
    cap = size * task_class(task["name"]).tokens_per_example(keys)
    unique = tokens.where(~(size > 0), np.minimum(tokens, cap))
    return unique, ("D = unique training tokens, min(tokens seen, dataset_size x tokens per example), for the "
                    "members with a fixed training set (task.dataset_size > 0)")


def _prepared(data: xr.Dataset | Prepared, log: TextIO | None = None) -> Prepared:
    return data if isinstance(data, Prepared) else prepare(data, log)


# ------------------------------------------------------------------------------------------ fitting helpers

def _r2(lx: np.ndarray, ly: np.ndarray) -> tuple[float, float]:
    """R^2 and slope of the least-squares line of ``ly`` on ``lx`` (R^2 NaN when ``ly`` is constant; both NaN
    with fewer than two distinct ``lx``)."""
    if len(lx) < 2 or np.ptp(lx) == 0:
        return float("nan"), float("nan")
    slope, icpt = np.polyfit(lx, ly, 1)
    ss = np.sum((ly - ly.mean()) ** 2)
    return (float(1 - np.sum((ly - slope * lx - icpt) ** 2) / ss) if ss > 0 else float("nan")), float(slope)


def _windows(n: int, min_points: int) -> list[tuple[int, int]]:
    """(first, last) index pairs of every window of >= ``min_points`` consecutive of ``n`` sizes."""
    m = max(min(min_points, n), 1)
    return [(i, j) for i in range(n) for j in range(i + m - 1, n)]


def _window(x: np.ndarray, i0: int, i1: int, r2: float, slope: float, passed: bool, rule: str,
            too_few: bool = False) -> dict:
    return {"i0": int(i0), "i1": int(i1), "lo": float(x[i0]), "hi": float(x[i1]), "n_points": int(i1 - i0 + 1),
            "r2": r2, "decades": float(np.log10(x[i1] / x[i0])), "passed": bool(passed), "rule": rule,
            "falling": bool(slope < 0), "too_few": bool(too_few)}


def headline_window(x: np.ndarray, y: np.ndarray, min_points: int = MIN_WINDOW, r2_min: float = R2_MIN) -> dict:
    """The headline fit window of the positive ``y`` at the increasing sizes ``x``: the largest window of
    >= ``min_points`` consecutive sizes whose log-log least-squares line falls (slope < 0) with R^2 >=
    ``r2_min``; ties go to the window reaching the larger sizes, then to the higher R^2. Without one, all sizes
    (``passed`` False). With fewer than ``min_points`` sizes the rule cannot apply: all sizes, ``passed`` False,
    ``too_few`` True (a law needs >= ``MIN_LAW_POINTS`` sizes: fewer are not fitted). Returns ``i0``, ``i1``
    (first and last index), ``lo``, ``hi`` (sizes), ``n_points``, ``r2``, ``decades`` (log10 hi/lo),
    ``passed``, ``falling`` (the window's line falls), ``too_few`` and ``rule`` (text)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    lx, ly = np.log(x), np.log(y)
    n = len(x)
    if n < min_points:
        r2, slope = _r2(lx, ly)
        return _window(x, 0, n - 1, r2, slope, False, f"too few sizes: {n} (the window rule needs >= {min_points}"
                       f", a law >= {MIN_LAW_POINTS}): all sizes, not passed", too_few=True)
    cands = [(j - i + 1, j, r2, i, slope) for i, j in _windows(n, min_points)
             for r2, slope in [_r2(lx[i:j + 1], ly[i:j + 1])]]
    good = [c for c in cands if c[2] >= r2_min and c[4] < 0]
    if good:
        _, i1, r2, i0, slope = max(good, key=lambda c: (c[0], c[1], c[2]))
        rule = f"largest window of >= {min_points} consecutive sizes whose excess falls with log-log R^2 >= {r2_min}"
    else:
        i0, i1 = 0, n - 1
        r2, slope = _r2(lx, ly)
        rule = (f"all sizes: no window of >= {min_points} consecutive sizes falls with log-log R^2 >= {r2_min}")
    return _window(x, i0, i1, r2, slope, bool(good), rule)


def _distinct(samples) -> int:
    """Distinct finite values among bootstrap resamples (to 9 significant digits)."""
    s = np.asarray(samples, float)
    s = s[np.isfinite(s)]
    return int(np.unique(np.array([float(f"{v:.9g}") for v in s])).size)


def _ci_quality(out: dict, samples: dict, names) -> None:
    """Record in ``out`` how many distinct values the resamples of ``names`` take (``ci_distinct``) and flag
    (``ci_coarse``, ``ci_note``) intervals resting on fewer than ``MIN_DISTINCT``."""
    distinct = {k: _distinct(samples[k]) for k in names if k in samples}
    out["ci_distinct"] = distinct
    low = min(distinct.values()) if distinct else 0
    out["ci_coarse"] = bool(low < MIN_DISTINCT)
    if low == 0:
        out["ci_note"] = "no bootstrap interval: no resample gave a finite value"
    elif out["ci_coarse"]:
        out["ci_note"] = (f"coarse interval: the resamples take only {low} distinct value(s) (< {MIN_DISTINCT}); "
                          "its ends are not a meaningful uncertainty")


def _no_boot_note(runs: int) -> str:
    return (f"no bootstrap interval: {runs} run(s) per point (fewer than {MIN_BOOT_RUNS}; with 2 runs a median "
            "takes only 3 distinct resample values)")


def _tied_range(res: fitting.FitResult, name: str) -> list[float]:
    """[min, max] of the natural parameter ``name`` over the starts whose objective ties the best (as
    ``start_spread`` counts them)."""
    from sweepjax.fit.estimate import SPREAD_ATOL, SPREAD_RTOL
    best = float(np.min(res.objectives))
    near = res.objectives <= best + SPREAD_RTOL * abs(best) + SPREAD_ATOL
    values = np.asarray(res.spec.to_natural(res.solutions)[name])[near]
    return [float(values.min()), float(values.max())]


def _fit(x: np.ndarray, Y: np.ndarray, form, n_boot: int, seed: int, level: float,
         keep: bool = False) -> dict:
    """Fit ``form`` to the median over runs of ``Y`` (runs, points) at ``x`` (1-D sizes or a dict of them),
    with a percentile bootstrap over runs when there are ``MIN_BOOT_RUNS`` or more runs and ``n_boot`` > 0:
    ``params``, ``alpha``, ``alpha_ci`` (and ``beta``, ``beta_ci`` for 2-D forms), ``converged``,
    ``boot_valid``, ``ci_distinct``/``ci_coarse`` (intervals from fewer than ``MIN_DISTINCT`` distinct
    resamples are flagged), ``ci_note`` (why there is no interval, or why it is coarse); or ``note`` when there
    is no fit (fewer than ``MIN_LAW_POINTS`` points). ``keep``: also ``_result`` and ``_boot``."""
    spec = fitting.get_form(form)
    out: dict = {"form": spec.name, "params": {}, "converged": None, "boot_valid": None, "note": "",
                 "ci_note": "", "ci_coarse": None}
    for e in spec.exponents:
        out[e], out[f"{e}_ci"] = None, None
    med = reduce_runs(Y, "median", axis=0)
    n_ok = int(np.sum(np.isfinite(med) & (med > 0)))
    if n_ok < max(MIN_LAW_POINTS, len(spec.params)):
        out["note"] = (f"no fit: too few sizes ({n_ok} with a finite positive median; the law needs >= "
                       f"{max(MIN_LAW_POINTS, len(spec.params))})")
        return out
    boot = None
    if n_boot > 0 and Y.shape[0] < MIN_BOOT_RUNS:
        out["ci_note"] = _no_boot_note(Y.shape[0])
    try:
        if n_boot > 0 and Y.shape[0] >= MIN_BOOT_RUNS:
            boot = fitting.bootstrap(x, Y, spec, n_resamples=n_boot, seed=seed, level=level, reduce="median")
            res = boot.point
        else:
            ok = np.isfinite(med) & (med > 0)
            xs = {k: np.asarray(v)[ok] for k, v in x.items()} if isinstance(x, dict) else np.asarray(x)[ok]
            res = fitting.fit(xs, med[ok], spec)
    except FitInputError as err:
        out["note"] = f"no fit: {err}"
        return out
    out.update(params={k: float(v) for k, v in res.params.items()}, converged=bool(res.converged),
               n_points=res.n_points, start_spread={k: float(v) for k, v in res.start_spread.items()})
    for e in spec.exponents:
        out[e] = float(res.params[e])
    spread = max(float(res.start_spread.get(e, 0.0)) for e in spec.exponents)
    out["unidentified"] = bool(spread > START_SPREAD_MAX)
    if out["unidentified"]:
        tied = _tied_range(res, spec.exponents[0])
        out[f"{spec.exponents[0]}_tied"] = tied
        out["identified_note"] = (
            f"NOT IDENTIFIED: starts whose robust objective ties the best give {spec.exponents[0]} from {tied[0]:.3f} "
            f"to {tied[1]:.3f} (the Huber loss is flat there: few points with residuals past its delta); the value "
            f"is one of them")
    if boot is not None:
        out["boot_valid"] = boot.n_valid
        if boot.n_valid:
            out.update({f"{k}_ci": list(boot.ci(k)) for k in spec.param_names})
            _ci_quality(out, boot.samples, spec.exponents)
    if keep:
        out.update(_result=res, _boot=boot)
    return out


def _slopes(x: np.ndarray, y: np.ndarray) -> list:
    """-d log y / d log x between neighbours (None where either is not finite and positive)."""
    ok = np.isfinite(y) & (y > 0)
    return [float(-np.log(y[i + 1] / y[i]) / np.log(x[i + 1] / x[i])) if ok[i] and ok[i + 1] and x[i + 1] != x[i]
            else None for i in range(len(x) - 1)]


def _curve(sd: SliceData, kind: str, x: np.ndarray, Y: np.ndarray, x_name: str, fixed: dict, n_boot: int,
           seed: int, level: float) -> dict:
    """One 1-D scaling row: ``Y`` (runs, sizes; the slice's :attr:`SliceData.y`) vs ``x``: the excess fitted
    as a power law over the headline window, or, when the slice's floor is fitted, the raw loss as a power law
    plus offset over every size (``E``, ``E_ci``: the fitted floor; ``median_excess``: the median loss - E)."""
    med = reduce_runs(Y, "median", axis=0)
    ok = np.isfinite(med) & (med > 0)
    finite = np.isfinite(med)
    row = {"slice": sd.sel, "kind": kind, "x_name": x_name, "x": x, "median_excess": med, "fixed": fixed,
           "runs": sd.runs, "local_slopes": _slopes(x, med),
           "decreasing": bool(finite.all() and np.all(np.diff(med) < 0)) if len(x) > 1 else None,
           "unfitted": x[~ok], "window": None, "alpha": None, "alpha_ci": None, "params": {}, "note": "",
           "floor": sd.floor, "floor_fitted": sd.floor_fitted, "label": sd.label, "_median_y": med}
    if kind == "N":
        row["width"] = sd.width
    need = MIN_LAW_POINTS + sd.floor_fitted          # the offset law: one point more than its parameters
    if ok.sum() < need:
        row["note"] = (f"no fit: too few sizes ({int(ok.sum())} with a finite positive median; a law needs "
                       f">= {need})")
        return row
    idx = np.flatnonzero(ok)
    if sd.floor_fitted:
        row.update(_fit(x[idx], Y[:, idx], sd.form, n_boot, seed, level))
        row.update(E=row["params"].get("E"), E_ci=row.get("E_ci"), median_loss=med)
        fitted = med - row["E"] if row["E"] is not None else np.full_like(med, np.nan)
        row["median_excess"] = np.where(fitted > 0, fitted, np.nan)
        pos = fitted[idx] > 0
        r2, slope = _r2(np.log(x[idx][pos]), np.log(fitted[idx][pos])) if pos.sum() >= 2 else (np.nan, np.nan)
        win = _window(x[idx], 0, len(idx) - 1, r2, slope, False, "all sizes: no exact floor (floor fitted); "
                      "the window rule needs the excess", too_few=len(idx) < MIN_WINDOW)
        win.update(index=idx)
        if kind == "N":
            win["widths"] = [float(sd.width[idx[0]]), float(sd.width[idx[-1]])]
        row.update(window=win, _x=x, _Y=Y, _fitted=idx)
        return row
    win = headline_window(x[idx], med[idx])
    use = idx[win["i0"]: win["i1"] + 1]
    win.update(index=use)
    if kind == "N":
        win["widths"] = [float(sd.width[use[0]]), float(sd.width[use[-1]])]
    row["window"] = win
    row.update(_fit(x[use], Y[:, use], "power_law", n_boot, seed, level))
    row.update(_x=x, _Y=Y, _fitted=idx)
    return row


# ------------------------------------------------------------------------------------------ 1-D scaling

def _largest(med: np.ndarray, axis: int) -> int:
    """Index along ``axis`` of ``med`` (W, S) of the largest size with at least min(3, other sizes) finite
    positive medians across the other axis (the last index when none has)."""
    ok = (np.isfinite(med) & (med > 0)).sum(axis=1 - axis)
    need = min(3, med.shape[1 - axis])
    good = np.flatnonzero(ok >= need)
    return int(good[-1]) if good.size else med.shape[axis] - 1


def n_scaling(data: xr.Dataset | Prepared, n_boot: int = 1000, seed: int = 0, level: float = LEVEL,
              n_name: str = HEADLINE_N) -> list[dict]:
    """Excess vs N (``n_name``, falling back to the count the results have) at the largest D, one row per
    slice: ``x`` (N), ``width``, ``median_excess`` (nats), ``decreasing`` (strictly, over all widths; a width
    whose median is not finite counts as not decreasing), ``unfitted`` (N without a finite positive median),
    ``window`` (:func:`headline_window`), ``alpha`` (excess ~ A N^-alpha), ``alpha_ci`` (percentile bootstrap
    over runs), ``params``, ``converged``, ``local_slopes``, ``alpha_by_d`` (the exponent over all widths at
    every D: how the D term bends the N law) and ``fixed`` (the D held: ``tokens``, ``steps``, ``index``;
    ``largest`` False when the largest D has fewer than three fitted widths and a smaller D is used)."""
    prep = _prepared(data)
    rows = []
    for sd in prep.slices:
        name = n_name if n_name in sd.n else next(iter(sd.n))
        k = _largest(sd.median_y, 1)
        fixed = {"tokens": float(sd.tokens[-1, k]), "steps": None if sd.steps is None else float(sd.steps[k]),
                 "index": k, "largest": k == sd.tokens.shape[1] - 1}
        row = _curve(sd, "N", sd.n[name], sd.y[:, :, k], name, fixed, n_boot, seed, level)
        row["alpha_by_d"] = []
        if prep.has_d:
            for k in range(sd.tokens.shape[1]):
                f = _fit(sd.n[name], sd.y[:, :, k], sd.form, 0, seed, level)
                row["alpha_by_d"].append({"tokens": float(sd.tokens[-1, k]), "alpha": f["alpha"]})
        rows.append(row)
    return rows


def d_scaling(data: xr.Dataset | Prepared, n_boot: int = 1000, seed: int = 0, level: float = LEVEL) -> list[dict]:
    """Excess vs D (tokens) at the largest width (the largest with three or more fitted D: ``fixed``), one row
    per slice (as :func:`n_scaling`, with ``alpha`` the D exponent and ``alpha_by_n`` the exponent over all D
    at every width); [] without a steps dim."""
    prep = _prepared(data)
    if not prep.has_d:
        return []
    rows = []
    for sd in prep.slices:
        w = _largest(sd.median_y, 0)
        fixed = {"width": float(sd.width[w]), **{k: float(v[w]) for k, v in sd.n.items()}, "index": w,
                 "largest": w == len(sd.width) - 1}
        row = _curve(sd, "D", sd.tokens[w], sd.y[:, w, :], "tokens", fixed, n_boot, seed, level)
        row["alpha_by_n"] = [{"width": float(sd.width[w]),
                              "alpha": _fit(sd.tokens[w], sd.y[:, w, :], sd.form, 0, seed, level)["alpha"]}
                             for w in range(len(sd.width))]
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ sensitivity

def sensitivity(data: xr.Dataset | Prepared, n_rows: list[dict] | None = None, n_boot: int = 1000, seed: int = 0,
                level: float = LEVEL) -> dict:
    """The N exponent at the largest D under every variant: ``floor`` fixed / free x ``n`` (count) x window
    (every window of >= 4 consecutive fitted widths). ``rows``: one per variant with ``alpha`` (point estimate),
    ``alpha_ci`` (bootstrap over runs, for the ``headline`` window and the ``all_widths`` window; else None),
    ``window`` (widths), ``n_range``, ``n_points``, ``converged`` and for free-floor headline / all-widths rows
    ``E`` (fitted) beside ``floor``, with ``floor_below_exact`` (E below the exact floor - ``FLOOR_TOLERANCE``).
    A slice without a known floor has no E-fixed rows (:data:`NO_FLOOR`). ``summary``: one per slice:
    ``alpha_min``/``alpha_max``/``spread`` over all rows, the headline exponent under each floor and count, the
    window range (``window_varied`` False, with ``window_note``, when only one window is possible),
    ``median_ci_width`` (over the intervals not flagged coarse) and ``spread_over_ci`` (how many bootstrap
    widths the variants span; None with ``spread_over_ci_note`` when there is no meaningful interval).
    ``n_rows``: :func:`n_scaling` rows (computed when None: they fix each slice's headline window)."""
    prep = _prepared(data)
    n_rows = n_scaling(prep, 0, seed, level) if n_rows is None else n_rows
    rows, summary = [], []
    for sd, nr in zip(prep.slices, n_rows):
        if nr.get("window") is None:
            summary.append({"slice": sd.sel, "note": nr["note"] or "no fit"})
            continue
        fit_idx = nr["_fitted"]
        n_fit = len(fit_idx)
        head = (int(nr["window"]["index"][0]), int(nr["window"]["index"][-1]))
        wins = [(int(fit_idx[i]), int(fit_idx[j])) for i, j in _windows(n_fit, MIN_WINDOW)]
        # consecutive among the fitted widths: a window is the fitted widths between its ends
        k = nr["fixed"]["index"]
        ys = {"fixed": sd.excess[:, :, k], "free": sd.loss[:, :, k]}
        part = []
        for floor, form in FLOOR_FORMS.items():
            n_par = len(fitting.get_form(form).params)
            if n_fit < n_par or (floor == "fixed" and sd.floor_fitted):
                continue
            for count, N in sd.n.items():
                x, Y = N[fit_idx], ys[floor][:, fit_idx]
                try:
                    table = fitting.window_sensitivity(x, Y, form, drop_small=range(n_fit), drop_large=range(n_fit))
                except FitInputError:
                    continue
                by_lohi = {(float(r.x_min), float(r.x_max)): r for r in table.itertuples()}
                for lo, hi in wins:
                    r = by_lohi.get((float(N[lo]), float(N[hi])))
                    if r is None or r.n_points < n_par:
                        continue
                    row = {"slice": sd.sel, "floor": floor, "form": form, "n": count,
                           "window": [float(sd.width[lo]), float(sd.width[hi])], "n_range": [float(N[lo]), float(N[hi])],
                           "n_points": int(r.n_points), "alpha": float(r.alpha), "alpha_ci": None,
                           "converged": bool(r.converged), "headline": (lo, hi) == head,
                           "all_widths": (lo, hi) == (int(fit_idx[0]), int(fit_idx[-1])), "floor_value": sd.floor,
                           "floor_fitted": sd.floor_fitted}
                    if row["headline"] or row["all_widths"]:
                        use = fit_idx[(fit_idx >= lo) & (fit_idx <= hi)]
                        f = _fit(N[use], ys[floor][:, use], form, n_boot, seed, level)
                        row.update({k: f[k] for k in ("alpha", "alpha_ci", "converged", "ci_note", "ci_coarse")})
                        if floor == "free" and f["params"]:
                            row.update(E=f["params"]["E"], E_ci=f.get("E_ci"),
                                       floor_below_exact=_below_exact(f["params"]["E"], sd.floor))
                    part.append(row)
        rows += part
        summary.append(_sensitivity_summary(sd, part))
    return {"rows": rows, "summary": summary}


def _below_exact(E: float | None, floor: float | None) -> bool | None:
    """Whether a fitted floor ``E`` lies below the exact ``floor`` - ``FLOOR_TOLERANCE`` (None: no exact floor)."""
    return None if E is None or floor is None else bool(E < floor - FLOOR_TOLERANCE)


def _sensitivity_summary(sd: SliceData, part: list[dict]) -> dict:
    alphas = np.array([r["alpha"] for r in part if r["alpha"] is not None and np.isfinite(r["alpha"])])
    pick = lambda floor, count: next((r["alpha"] for r in part if r["headline"] and r["floor"] == floor
                                      and r["n"] == count), None)
    head_n = HEADLINE_N if HEADLINE_N in sd.n else next(iter(sd.n))
    main = "free" if sd.floor_fitted else "fixed"
    win_rows = [r for r in part if r["floor"] == main and r["n"] == head_n and r["alpha"] is not None]
    windows = [r["alpha"] for r in win_rows]
    n_windows = len({tuple(r["window"]) for r in win_rows})
    cis = [r for r in part if r["alpha_ci"]]
    widths = [r["alpha_ci"][1] - r["alpha_ci"][0] for r in cis if not r.get("ci_coarse")]
    out = {"slice": sd.sel, "n_variants": len(part),
           "alpha_min": float(alphas.min()) if alphas.size else None,
           "alpha_max": float(alphas.max()) if alphas.size else None,
           "spread": float(np.ptp(alphas)) if alphas.size else None,
           "headline": {f"{floor}/{count}": pick(floor, count) for floor in FLOOR_FORMS for count in sd.n},
           "window_range": [min(windows), max(windows)] if n_windows > 1 else None,
           "n_windows": n_windows, "window_varied": n_windows > 1,
           "median_ci_width": float(np.median(widths)) if widths else None,
           "floor_fitted": sd.floor_fitted, "fixed_floor": NO_FLOOR if sd.floor_fitted else None,
           "floor_below_exact": sum(bool(r.get("floor_below_exact")) for r in part)}
    if n_windows <= 1:
        out["window_note"] = (f"the fit window could not vary: {n_windows} window(s) of >= {MIN_WINDOW} consecutive "
                              "fitted widths (window sensitivity not measured)")
    fixed, free = pick("fixed", head_n), pick("free", head_n)
    out["floor_shift"] = None if fixed is None or free is None else free - fixed
    other = [c for c in sd.n if c != head_n]
    emb = pick("fixed", other[0]) if other else None
    out["embedding_shift"] = None if fixed is None or emb is None else emb - fixed
    out["spread_over_ci"] = (out["spread"] / out["median_ci_width"]
                             if out["spread"] is not None and out["median_ci_width"] else None)
    if out["spread_over_ci"] is None:
        why = (f"{len(cis)} bootstrap interval(s), all coarse (< {MIN_DISTINCT} distinct resamples)" if cis else
               next((r["ci_note"] for r in part if r.get("ci_note")), "no bootstrap interval"))
        out["spread_over_ci_note"] = f"no spread / interval ratio: {why}"
    return out


# ------------------------------------------------------------------------------------------ 2-D fit

def joint_fits(data: xr.Dataset | Prepared, n_boot: int = 1000, seed: int = 0, level: float = LEVEL,
               n_rows: list[dict] | None = None, d_rows: list[dict] | None = None) -> list[dict]:
    """``L(N, D) = E + A/N^alpha + B/D^beta`` on every (N, D) point with a finite median excess, per slice:
    ``floor`` "fixed" (:data:`JOINT_ND_EXCESS` on the excess) and "free" (``joint_nd`` on the raw loss), each
    with ``alpha``, ``beta`` (and intervals: bootstrap over runs, at most ``JOINT_BOOT_MAX`` resamples),
    ``params``, ``start_spread`` (a large spread: the data do not pin the parameter), ``converged``, and
    ``alpha_1d`` / ``beta_1d`` (the 1-D exponents of ``n_rows`` / ``d_rows``); the free row's
    ``floor_below_exact`` (fitted E below the exact floor - ``FLOOR_TOLERANCE``). A slice without a known
    floor: the fixed row is :data:`NO_FLOOR` (no fit), the free one on every finite median loss. [] without a
    steps dim."""
    prep = _prepared(data)
    if not prep.has_d:
        return []
    out = []
    for i, sd in enumerate(prep.slices):
        N = sd.n.get(HEADLINE_N, next(iter(sd.n)))
        med = sd.median_y
        ok = (np.isfinite(med) & (med > 0)).ravel()
        NN = np.broadcast_to(N[:, None], med.shape).ravel()[ok]
        DD = sd.tokens.ravel()[ok]
        R = sd.runs
        for floor, form, Y in (("fixed", JOINT_ND_EXCESS, sd.excess), ("free", "joint_nd", sd.loss)):
            if floor == "fixed" and sd.floor_fitted:
                f = {"form": JOINT_ND_EXCESS.name, "params": {}, "converged": None, "alpha": None, "beta": None,
                     "alpha_ci": None, "beta_ci": None, "note": NO_FLOOR}
            else:
                f = _fit({"N": NN, "D": DD}, Y.reshape(R, -1)[:, ok], form, min(n_boot, JOINT_BOOT_MAX), seed, level,
                         keep=True)
            if floor == "free":
                f["floor_below_exact"] = _below_exact(f["params"].get("E"), sd.floor)
            row = {"slice": sd.sel, "floor": floor, "n_count": HEADLINE_N if HEADLINE_N in sd.n else next(iter(sd.n)),
                   "floor_value": sd.floor, "floor_fitted": sd.floor_fitted, **f,
                   "alpha_1d": n_rows[i]["alpha"] if n_rows else None,
                   "alpha_1d_ci": n_rows[i]["alpha_ci"] if n_rows else None,
                   "beta_1d": d_rows[i]["alpha"] if d_rows else None,
                   "beta_1d_ci": d_rows[i]["alpha_ci"] if d_rows else None}
            out.append(row)
    return out


# ------------------------------------------------------------------------------------------ frontier

def _flops_per_token(N: np.ndarray, per_token: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Training FLOPs per token as a function of N: log-log interpolation of the measured values, extended
    linearly (in log-log) past the ends."""
    o = np.argsort(N)
    lx, ly = np.log(N[o]), np.log(per_token[o])
    if len(lx) == 1:
        return lambda n: per_token[o][0] * np.asarray(n, float) / N[o][0]

    def f(n):
        u = np.log(np.asarray(n, float))
        v = np.interp(u, lx, ly)
        lo = ly[0] + (u - lx[0]) * (ly[1] - ly[0]) / (lx[1] - lx[0])
        hi = ly[-1] + (u - lx[-1]) * (ly[-1] - ly[-2]) / (lx[-1] - lx[-2])
        return np.exp(np.where(u < lx[0], lo, np.where(u > lx[-1], hi, v)))
    return f


def _line(lc: np.ndarray, lv: np.ndarray) -> tuple[float, float] | tuple[None, None]:
    """Slope and intercept of the least-squares line (None with fewer than two distinct points)."""
    ok = np.isfinite(lc) & np.isfinite(lv)
    if ok.sum() < 2 or np.ptp(lc[ok]) == 0:
        return None, None
    s, i = np.polyfit(lc[ok], lv[ok], 1)
    return float(s), float(i)


def _certified(env: fitting.ComputeOptimal, C: np.ndarray, med: np.ndarray, N: np.ndarray) -> np.ndarray:
    """(rows,) whether each envelope point is certified: the winning width is interior and both neighbours
    reach that compute (see the module docstring)."""
    ok = np.isfinite(C) & np.isfinite(med) & (med > 0) & (C > 0)
    cmin = np.array([C[w, ok[w]].min() if ok[w].sum() >= 2 else np.inf for w in range(len(N))])
    cmax = np.array([C[w, ok[w]].max() if ok[w].sum() >= 2 else -np.inf for w in range(len(N))])
    out = []
    for c, n in zip(env.frontier["compute"], env.frontier["n_opt"]):
        if not np.isfinite(n):
            out.append(False)
            continue
        r = int(np.argmin(np.abs(np.log(N) - np.log(n))))
        out.append(bool(0 < r < len(N) - 1 and all(cmin[k] <= c <= cmax[k] for k in (r - 1, r + 1))))
    return np.array(out, bool)


def _envelope(C: np.ndarray, med: np.ndarray, N: np.ndarray, tokens: np.ndarray) -> dict:
    """Approach 1 on median excesses ``med`` (W, S): the frontier, and ``a``, ``b`` from its certified points
    (``a_all``, ``b_all``: from every point, as the fit module reports); each None, with ``note``, when its
    points hold fewer than ``MIN_LAW_POINTS`` distinct sizes (no frontier)."""
    env = fitting.envelope(C, med, N, tokens=tokens, n_points=ENVELOPE_POINTS)
    cert = _certified(env, C, med, N)
    fr = env.frontier
    lc = np.log(fr["compute"].to_numpy())
    n_opt = fr["n_opt"].to_numpy()
    sizes, cert_sizes = np.unique(n_opt[np.isfinite(n_opt)]).size, np.unique(n_opt[cert]).size
    a = b = None
    if cert_sizes >= MIN_LAW_POINTS:
        a, _ = _line(lc[cert], np.log(n_opt[cert]))
        b, _ = _line(lc[cert], np.log(fr["d_opt"].to_numpy()[cert]))
    a_all, b_all, k_n = (env.a, env.b, env.k_n) if sizes >= MIN_LAW_POINTS else (None, None, None)
    note = "; ".join(f"no frontier{what}: {k} distinct size(s) on the envelope{where} (needs >= {MIN_LAW_POINTS})"
                     for what, k, where in (("", sizes, ""), (" from certified points", cert_sizes, ", certified"))
                     if k < MIN_LAW_POINTS)
    return {"a": a, "b": b, "a_all": a_all, "b_all": b_all, "k_n": k_n, "n_certified": int(cert.sum()),
            "n_sizes": int(sizes), "note": note, "n_certified_sizes": int(cert_sizes),
            "n_frontier": int(np.isfinite(fr["n_opt"].to_numpy()).sum()),
            "frontier": {"compute": fr["compute"].to_numpy(), "n_opt": fr["n_opt"].to_numpy(),
                         "d_opt": fr["d_opt"].to_numpy(), "loss": fr["loss"].to_numpy(), "certified": cert}}


def _isoflop(C: np.ndarray, med: np.ndarray, N: np.ndarray, flops) -> dict:
    """Approach 2: each width's median excess interpolated (log-log, inside its own points) at
    ``ISO_BUDGETS`` log-spaced budgets, a parabola in log N per budget (the fit module's ``isoflop``)."""
    ok = np.isfinite(C) & np.isfinite(med) & (med > 0) & (C > 0)
    if not ok.any():
        return {"a": None, "b": None, "note": "no IsoFLOP frontier: no data (no point with a finite median)"}
    budgets = np.geomspace(C[ok].min(), C[ok].max(), ISO_BUDGETS)
    cs, ns, ls = [], [], []
    for w in range(len(N)):
        if ok[w].sum() < 2:
            continue
        c, l = C[w, ok[w]], med[w, ok[w]]
        o = np.argsort(c)
        inside = (budgets >= c.min()) & (budgets <= c.max())
        cs.append(budgets[inside])
        ns.append(np.full(inside.sum(), N[w]))
        ls.append(np.exp(np.interp(np.log(budgets[inside]), np.log(c[o]), np.log(l[o]))))
    try:
        iso = fitting.isoflop(np.concatenate(cs), np.concatenate(ns), np.concatenate(ls), flops=flops)
    except (FitInputError, ValueError) as err:
        return {"a": None, "b": None, "note": f"no IsoFLOP frontier: {err}"}
    fr = iso.frontier
    inside = fr["inside"].to_numpy() & fr["curvature_ok"].to_numpy()
    a_in = _line(np.log(fr["compute"].to_numpy()[inside]), np.log(fr["n_opt"].to_numpy()[inside]))[0]
    return {"a": iso.a, "b": iso.b, "a_inside": a_in, "n_budgets": len(fr),
            "n_curvature_ok": int(fr["curvature_ok"].sum()), "n_inside": int(inside.sum()),
            "frontier": {k: fr[k].to_numpy() for k in ("compute", "n_opt", "d_opt", "loss", "curvature_ok", "inside")},
            "note": "biased when a parabola is a poor description or its minimum lies outside the swept sizes"}


def _law_log_n_opt(A, alpha, B, beta, budgets: np.ndarray, per_token, n_range: tuple[float, float],
                   chunk: int = 50) -> np.ndarray:
    """log N_opt (K, M) minimising ``A N^-alpha + B D^-beta`` along each budget C (M,) with D = C / per_token(N)
    (training FLOPs per token), for K parameter sets (arrays (K,)): a grid of 801 log N values 8 e-folds past
    ``n_range`` each side, refined by a parabola through the best three; NaN where the minimum is at the grid's
    edge. (D is explicit in N here, so this is a vectorised version of ``from_joint_fit`` with a FLOP count.)"""
    A, al, B, be = (np.atleast_1d(np.asarray(v, float)) for v in (A, alpha, B, beta))
    lg = np.linspace(np.log(n_range[0]) - 8, np.log(n_range[1]) + 8, 801)
    n = np.exp(lg)
    D = budgets[:, None] / per_token(n)[None, :]                        # (M, G)
    out = np.full((len(A), len(budgets)), np.nan)
    for k0 in range(0, len(A), chunk):
        s = slice(k0, k0 + chunk)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            L = A[s, None, None] * n ** -al[s, None, None] + B[s, None, None] * D[None] ** -be[s, None, None]
            L = np.where(np.isfinite(L), L, np.inf)
            j = np.argmin(L, axis=-1)                                   # (k, M)
            jc = np.clip(j, 1, len(lg) - 2)
            y0, y1, y2 = (np.take_along_axis(L, (jc + d)[..., None], -1)[..., 0] for d in (-1, 0, 1))
            den = y0 - 2 * y1 + y2
            shift = np.where(den > 0, np.clip(0.5 * (y0 - y2) / den, -1, 1), 0.0)
            u = lg[jc] + shift * (lg[1] - lg[0])
        out[s] = np.where((j == 0) | (j == len(lg) - 1) | ~np.isfinite(y1), np.nan, u)
    return out


def _law_a(samples: dict, budgets: np.ndarray, per_token, n_range: tuple[float, float]) -> np.ndarray:
    """Approach-3 exponent ``a`` of each bootstrap sample of ``A, alpha, B, beta`` (arrays (K,)): with
    ``per_token`` None (C = 6ND) the closed form beta/(alpha+beta); else the log-log slope of
    :func:`_law_log_n_opt` over the budgets."""
    al, be = np.asarray(samples["alpha"], float), np.asarray(samples["beta"], float)
    if per_token is None:
        with np.errstate(invalid="ignore", divide="ignore"):
            return be / (al + be)
    u = _law_log_n_opt(samples["A"], al, samples["B"], be, budgets, per_token, n_range)
    lc = np.log(budgets)
    return np.array([np.nan if (v := _line(lc, row)[0]) is None else v for row in u])


def _joint_frontier(res: fitting.FitResult, budgets: np.ndarray, per_token, n_range) -> dict:
    """Approach 3 for one 2-D fit: ``from_joint_fit`` for C = 6ND (``per_token`` None), else
    :func:`_law_log_n_opt` with the fitted parameters; ``a``, ``b``, ``k_n`` and the frontier table."""
    if per_token is None:
        co = fitting.from_joint_fit(res, budgets)
        fr = {k: co.frontier[k].to_numpy() for k in ("compute", "n_opt", "d_opt", "loss")}
        return {"a": co.a, "b": co.b, "k_n": co.k_n, "frontier": fr}
    p = res.params
    n_opt = np.exp(_law_log_n_opt(p["A"], p["alpha"], p["B"], p["beta"], budgets, per_token, n_range)[0])
    ok = np.isfinite(n_opt)
    d_opt = budgets / per_token(np.where(ok, n_opt, 1.0))
    loss = np.full(len(budgets), np.nan)
    if ok.any():
        loss[ok] = res.predict({"N": n_opt[ok], "D": d_opt[ok]})
    lc = np.log(budgets)
    a, icpt = _line(lc, np.log(n_opt))
    b, _ = _line(lc, np.log(np.where(ok, d_opt, np.nan)))
    return {"a": a, "b": b, "k_n": None if icpt is None else float(np.exp(icpt)),
            "frontier": {"compute": budgets, "n_opt": n_opt, "d_opt": np.where(ok, d_opt, np.nan), "loss": loss}}


def _ci(samples: np.ndarray, level: float) -> list | None:
    s = np.asarray(samples, float)
    s = s[np.isfinite(s)]
    if s.size < 2:
        return None
    q = 100 * (1 - level) / 2
    return [float(v) for v in np.percentile(s, [q, 100 - q])]


def compute_frontier(data: xr.Dataset | Prepared, joint: list[dict] | None = None, n_boot: int = 1000,
                     seed: int = 0, level: float = LEVEL) -> list[dict]:
    """The compute-optimal frontier per slice and compute count (``compute``: "6ND" or "exact", see
    :data:`COMPUTES`), N = non-embedding parameters, on the median excess: ``envelope`` (approach 1: ``a``,
    ``b`` from certified points, ``a_ci`` bootstrap over runs, ``a_all`` from every point), ``isoflop``
    (approach 2: ``a``, ``b``, ``a_inside``), ``joint_fit`` (approach 3 per floor variant of ``joint``
    (:func:`joint_fits` rows, computed when None): ``a``, ``b``, ``a_ci``, ``expected_a``
    = beta/(alpha+beta), the value for C = 6ND). A slice without a known floor: approaches 1 and 2 on the median
    raw loss (``note``; the envelope's minimisers are the same). A slice with no finite median: "no data".
    [] without a steps dim."""
    prep = _prepared(data)
    if not prep.has_d:
        return []
    joint = joint_fits(prep, n_boot, seed, level) if joint is None else joint
    rng = np.random.default_rng(seed)
    out = []
    for sd in prep.slices:
        N = sd.n.get(HEADLINE_N, next(iter(sd.n)))
        med = sd.median_y
        for count, C in sd.compute.items():
            row: dict = {"slice": sd.sel, "compute": count, "n_count": HEADLINE_N if HEADLINE_N in sd.n else
                         next(iter(sd.n)), "points": {"compute": C, "median_excess": med, "n": N},
                         "note": ("no exact floor: approaches 1 and 2 on the median raw loss" if sd.floor_fitted
                                  else "")}
            ok = np.isfinite(C) & (C > 0) & np.isfinite(med) & (med > 0)
            if not ok.any():
                none = {"a": None, "b": None, "note": "no data: no (N, D) point with a finite median loss"}
                row.update(envelope=dict(none), isoflop=dict(none), joint_fit={}, note=none["note"])
                out.append(row)
                continue
            per_token = flops = None
            if count == "exact":
                with np.errstate(invalid="ignore", divide="ignore"):
                    ratio = np.nanmedian(np.where(sd.tokens > 0, C / sd.tokens, np.nan), axis=1)
                per_token = _flops_per_token(N, ratio)
                flops = lambda n, d, f=per_token: f(n) * np.asarray(d, float)
            try:
                env = _envelope(C, med, N, sd.tokens)
            except FitInputError as err:
                env = {"a": None, "note": f"no envelope: {err}"}
            if env.get("a") is not None and n_boot > 0 and sd.runs < MIN_BOOT_RUNS:
                env["ci_note"] = _no_boot_note(sd.runs)
            elif env.get("a") is not None and n_boot > 0:
                draws = []
                for _ in range(min(n_boot, FRONTIER_BOOT_MAX)):
                    idx = rng.integers(0, sd.runs, sd.runs)
                    try:
                        a = _envelope(C, reduce_runs(sd.y[idx], "median", axis=0), N, sd.tokens)["a"]
                    except FitInputError:
                        a = None
                    draws.append(np.nan if a is None else a)
                env.update(a_ci=_ci(draws, level), boot_valid=int(np.isfinite(draws).sum()))
                _ci_quality(env, {"a": draws}, ["a"])
            row["envelope"] = env
            row["isoflop"] = _isoflop(C, med, N, flops)
            cok = np.isfinite(C) & (C > 0)
            budgets = np.geomspace(C[cok].min(), C[cok].max(), JOINT_BUDGETS)
            row["joint_fit"] = {}
            for j in (r for r in joint if r["slice"] == sd.sel and r.get("_result") is not None):
                p = j["_result"].params
                n_range = (float(N.min()), float(N.max()))
                if not all(p[k] > 0 for k in ("A", "alpha", "B", "beta")):
                    row["joint_fit"][j["floor"]] = {"a": None, "b": None, "a_ci": None, "note": (
                        "no frontier: the 2-D fit does not fall in both N and D (" +
                        ", ".join(f"{k} = {p[k]:.3g}" for k in ("A", "alpha", "B", "beta")) + ")")}
                    continue
                entry = {**_joint_frontier(j["_result"], budgets, per_token, n_range),
                         "expected_a": p["beta"] / (p["alpha"] + p["beta"]), "a_ci": None}
                boot = j.get("_boot")
                if boot is not None and boot.n_valid:
                    a_s = _law_a(boot.samples, budgets, per_token, n_range)
                    entry.update(a_ci=_ci(a_s, level), boot_valid=int(np.isfinite(a_s).sum()))
                    _ci_quality(entry, {"a": a_s}, ["a"])
                elif j.get("ci_note"):
                    entry["ci_note"] = j["ci_note"]
                row["joint_fit"][j["floor"]] = entry
            out.append(row)
    return out


# ------------------------------------------------------------------------------------------ muP vs SP

def mup_vs_sp(data: xr.Dataset | Prepared, n_rows: list[dict] | None = None, n_boot: int = 1000, seed: int = 0,
              level: float = LEVEL) -> list[dict]:
    """With a ``parameterization`` dim: per value of the other slice dims, each parameterization's excess vs N
    at the largest D at its own best lr: ``by`` {parameterization: ``alpha``, ``alpha_ci``, ``window``
    (headline), ``alpha_common``, ``alpha_common_ci`` (over the widths every parameterization has fitted),
    ``median_excess``, ``best_lr`` per width}, ``lower`` (per common width, the parameterization with the
    lowest excess; the lowest loss when the floor is fitted), ``contrast`` (False, with ``note``, when only one
    parameterization is present: nothing is compared). [] without the dim."""
    prep = _prepared(data)
    if not any("parameterization" in sd.sel for sd in prep.slices):
        return []
    n_rows = n_scaling(prep, n_boot, seed, level) if n_rows is None else n_rows
    groups: dict = {}
    for sd, row in zip(prep.slices, n_rows):
        key = tuple((k, v) for k, v in sd.sel.items() if k != "parameterization")
        groups.setdefault(key, []).append((sd, row))
    out = []
    for key, members in groups.items():
        fitted = [set(np.flatnonzero(np.isfinite(r["_median_y"]) & (r["_median_y"] > 0))) for _, r in members]
        common = np.array(sorted(set.intersection(*fitted))) if fitted else np.array([], int)
        entry = {"slice": dict(key), "by": {}, "common_widths": members[0][0].width[common] if common.size else [],
                 "contrast": len(members) > 1, "note": ""}
        if not entry["contrast"]:
            entry["note"] = (f"no muP-vs-SP contrast: only parameterization {members[0][0].sel['parameterization']!r} "
                             "is present")
        for sd, r in members:
            k = r["fixed"]["index"]
            e = {"alpha": r["alpha"], "alpha_ci": r["alpha_ci"], "window": r["window"], "x": r["x"],
                 "width": sd.width, "median_excess": r["median_excess"], "tokens": r["fixed"]["tokens"],
                 "best_lr": sd.best_lr[:, k] if sd.best_lr is not None else None,
                 "lr_at_edge": sd.lr_at_edge[:, k] if sd.lr_at_edge is not None else None,
                 "alpha_common": None, "alpha_common_ci": None}
            if entry["contrast"] and common.size >= MIN_LAW_POINTS:
                f = _fit(r["x"][common], sd.y[:, common, k], sd.form, n_boot, seed, level)
                e.update(alpha_common=f["alpha"], alpha_common_ci=f["alpha_ci"])
            entry["by"][str(sd.sel["parameterization"])] = e
        names = list(entry["by"])
        meds = {str(sd.sel["parameterization"]): r["_median_y"] for sd, r in members}
        entry["lower"] = [names[int(np.argmin([meds[p][w] for p in names]))]
                          for w in common] if entry["contrast"] else []
        out.append(entry)
    return out


# ------------------------------------------------------------------------------------------ summary

def summarize(ds: xr.Dataset, n_boot: int = 1000, seed: int = 0, level: float = LEVEL,
              log: TextIO | None = None) -> dict:
    """Every part of the study: ``floors`` (:func:`floor_check`), ``lr`` (which lr won, edges), ``slices``
    (each slice's tables), ``n_scaling``, ``d_scaling``, ``sensitivity``, ``joint``, ``frontier``,
    ``mup_vs_sp``, ``ladder`` (the rungs of a ``task.source`` sweep side by side, :mod:`sweepjax.analysis.ladder`;
    None without one), ``notes`` (what was skipped and why). Rows keep private ``_`` keys (arrays, fit objects)
    that :func:`to_json` drops."""
    prep = prepare(ds, log)
    n_rows = n_scaling(prep, n_boot, seed, level)
    d_rows = d_scaling(prep, n_boot, seed, level)
    joint = joint_fits(prep, n_boot, seed, level, n_rows=n_rows, d_rows=d_rows)
    return {"floors": prep.floors, "lr": prep.lr, "slices": [sd.table() for sd in prep.slices],
            "n_scaling": n_rows, "d_scaling": d_rows,
            "sensitivity": sensitivity(prep, n_rows, n_boot, seed, level), "joint": joint,
            "frontier": compute_frontier(prep, joint, n_boot, seed, level),
            "mup_vs_sp": mup_vs_sp(prep, n_rows, n_boot, seed, level),
            "ladder": ladder({"n_scaling": n_rows, "d_scaling": d_rows}),
            "notes": prep.notes + [f"{sd.name}: {n}" for sd in prep.slices for n in sd.notes],
            "settings": {"n_boot": n_boot, "joint_boot": min(n_boot, JOINT_BOOT_MAX),
                         "frontier_boot": min(n_boot, FRONTIER_BOOT_MAX), "level": level, "seed": seed,
                         "n_count": HEADLINE_N, "min_window": MIN_WINDOW, "r2_min": R2_MIN,
                         "floor_tolerance": FLOOR_TOLERANCE}}


def to_json(obj):
    """``obj`` as strict-JSON-ready Python: keys starting with ``_`` dropped, numpy arrays and scalars as
    lists and numbers, non-finite floats as None."""
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_json(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def _f(v, fmt: str = ".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, fmt)


def _ci_text(ci, fmt: str = ".3f") -> str:
    return f" [{_f(ci[0], fmt)}, {_f(ci[1], fmt)}]" if ci else ""


def _ci_flag(r: dict, key: str = "alpha_ci") -> str:
    """Why an interval is missing, or that it is coarse (from ``ci_note``), as text after the interval."""
    return f" ({r['ci_note']})" if r.get("ci_note") and (r.get("ci_coarse") or not r.get(key)) else ""


def describe(summary: dict) -> str:
    """Printable lines: floors and the floor check, lr winners at the edge, each slice's N and D exponents
    with window and R^2, the sensitivity spread, the 2-D fit, the frontier exponents, muP vs SP, skips."""
    lines = []
    fl = summary["floors"]
    floors = ", ".join(f"{slice_name(s['slice'])}: "
                       + ("unknown (floor fitted)" if s.get("floor_fitted") else _f(s["floor"], ".4f"))
                       + (f" (entropy rate {_f(s['irreducible_loss'], '.4f')})" if s.get("irreducible_loss") is not None
                          else "") for s in summary["slices"])
    lines.append(f"loss floors (test-set Bayes loss, nats): {floors}")
    if fl.get("min_excess") is not None:
        lines.append(f"min over members of final test loss - test-set Bayes loss: {fl['min_excess']:.4f} nats at "
                     f"{slice_name(fl['at'])} ({'ok' if fl['ok'] else 'BELOW'} the floor - {fl['tolerance']:g}; "
                     f"{fl['n_below_tolerance']} member(s) below it)")
    lr = summary["lr"]
    if lr.get("single") is not None:
        lines.append(f"lr not tuned: a single lr ({lr['single']:g}) was run, so no best lr per (N, D)")
    if lr.get("swept"):
        lines.append(f"best lr per (N, D) over {len(lr['swept'])} values: {lr['n_at_edge']} of {lr['n_points']} "
                     "points won at the edge of the swept range")
    for r in summary["n_scaling"] + summary["d_scaling"]:
        what = "N" if r["kind"] == "N" else "D"
        at = (f"at D = {r['fixed']['tokens']:.3g} tokens" if r["kind"] == "N" else f"at width {r['fixed']['width']:g}")
        if not r["fixed"].get("largest", True):
            at += f" (the largest {'D' if r['kind'] == 'N' else 'width'} with three or more fitted points)"
        if r["alpha"] is None:
            lines.append(f"{what}-scaling ({slice_name(r['slice'])}) {at}: {r['note']}")
            continue
        w = r["window"]
        span = (f"widths {w['widths'][0]:g}-{w['widths'][1]:g} (N {w['lo']:.3g}-{w['hi']:.3g})" if r["kind"] == "N"
                else f"D {w['lo']:.3g}-{w['hi']:.3g}")
        dec = "" if r["decreasing"] is None else f"; excess strictly decreasing: {'yes' if r['decreasing'] else 'NO'}"
        if len(r["unfitted"]):
            dec += f" (not fitted, no finite median: {', '.join(f'{v:.3g}' for v in r['unfitted'])})"
        law = (f"loss ~ E + A {what}^-alpha (floor fitted: E = {_f(r.get('E'), '.4f')}{_ci_text(r.get('E_ci'), '.4f')})"
               if r.get("floor_fitted") else f"excess ~ {what}^-alpha")
        status = ("too few sizes for the window rule: " if w.get("too_few") else "" if w["passed"]
                  else "no window passed: ")
        if w["passed"] is False and not w.get("falling", True):
            status = "the excess does NOT fall: "
        lines.append(f"{what}-scaling ({slice_name(r['slice'])}) {at}: {law}, alpha = "
                     f"{r['alpha']:.3f}{_ci_text(r['alpha_ci'])}{_ci_flag(r)} over {span}, {w['decades']:.2f} decades, "
                     f"R^2 {_f(w['r2'], '.4f')} ({status}{w['n_points']} points){dec}"
                     + (f"; {r['identified_note']}" if r.get("unidentified") else ""))
    for s in summary["sensitivity"]["summary"]:
        if s.get("spread") is None:
            continue
        h = s["headline"]
        parts = ", ".join(f"{k} {NO_FLOOR if s.get('floor_fitted') and k.startswith('fixed/') else _f(v)}"
                          for k, v in h.items())
        wr = s["window_range"]
        windows = (f"windows {_f(wr[0])} to {_f(wr[1])}" if s.get("window_varied", wr is not None)
                   else s.get("window_note", "the fit window could not vary"))
        extra = "".join(f"; {s[k]}" for k in ("spread_over_ci_note",) if s.get(k))
        if s.get("floor_below_exact"):
            extra += f"; {s['floor_below_exact']} E-free fit(s) put the floor BELOW the exact floor"
        lines.append(f"fit sensitivity ({slice_name(s['slice'])}): alpha_N {s['alpha_min']:.3f} to {s['alpha_max']:.3f} "
                     f"over {s['n_variants']} variants (spread {s['spread']:.3f}) vs median bootstrap interval "
                     f"width {_f(s['median_ci_width'])}; headline window: {parts}; {windows}{extra}")
    for j in summary["joint"]:
        if j["alpha"] is None:
            lines.append(f"2-D fit ({slice_name(j['slice'])}, E {j['floor']}): {j['note']}")
            continue
        e = "" if j["floor"] == "fixed" else f", E = {j['params']['E']:.4f} (floor {_f(j['floor_value'], '.4f')})"
        if j.get("floor_below_exact"):
            e += " (fitted E BELOW the exact floor)"
        lines.append(f"2-D fit ({slice_name(j['slice'])}, E {j['floor']}): alpha = {j['alpha']:.3f}"
                     f"{_ci_text(j['alpha_ci'])}, beta = {j['beta']:.3f}{_ci_text(j['beta_ci'])}{e}; 1-D: alpha_N "
                     f"{_f(j['alpha_1d'])}, alpha_D {_f(j['beta_1d'])}"
                     + ("" if j["converged"] else " (did NOT converge)"))
    for fr in summary["frontier"]:
        env, iso = fr["envelope"], fr["isoflop"]
        parts = [f"envelope a = {_f(env.get('a'))}{_ci_text(env.get('a_ci'))}{_ci_flag(env, 'a_ci')} "
                 f"({env.get('n_certified', 0)} certified points at {env.get('n_certified_sizes', 0)} sizes; all "
                 f"points {_f(env.get('a_all'))}{'; ' + env['note'] if env.get('note') else ''})",
                 f"IsoFLOP a = {_f(iso.get('a'))} ({iso.get('n_inside', 0)}/{iso.get('n_budgets', 0)} budgets inside)"]
        for floor, j in fr["joint_fit"].items():
            parts.append(f"2-D fit (E {floor}) a = {_f(j['a'])}{_ci_text(j['a_ci'])}{_ci_flag(j, 'a_ci')}")
        lines.append(f"compute-optimal ({slice_name(fr['slice'])}, C = {'6ND' if fr['compute'] == '6ND' else 'exact FLOPs'}"
                     f"): N_opt ~ C^a: " + "; ".join(parts) + (f" ({fr['note']})" if fr.get("note") else ""))
    for m in summary["mup_vs_sp"]:
        if not m.get("contrast", True):
            lines.append(f"muP vs SP ({slice_name(m['slice'])}): {m['note']}")
            continue
        parts = [f"{p}: alpha_N {_f(e['alpha'])}{_ci_text(e['alpha_ci'])} (common widths {_f(e['alpha_common'])})"
                 for p, e in m["by"].items()]
        counts = {p: m["lower"].count(p) for p in m["by"]}
        lines.append(f"muP vs SP ({slice_name(m['slice'])}): " + "; ".join(parts) + "; lower excess at "
                     + ", ".join(f"{p} {c}/{len(m['lower'])}" for p, c in counts.items()) + " widths")
    if summary.get("ladder"):
        lines.append(describe_ladder(summary["ladder"]))
    lines += [f"note: {n}" for n in summary["notes"]]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ figures

def _panels(n: int, size=(4.6, 3.8)):
    from sweepjax.plots import plt
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()


def _arr(v) -> np.ndarray:
    return np.array([np.nan if x is None else x for x in np.asarray(v, dtype=object).ravel()],
                    float).reshape(np.shape(v))


def plot_excess_vs_n(summary: dict, path: Path) -> Path:
    """Per slice: median excess vs N (non-embedding), one line per D (viridis), the fitted power law at the
    largest D over its headline window (shaded)."""
    from sweepjax.plots import plt, save
    slices, rows = summary["slices"], summary["n_scaling"]
    fig, axes = _panels(len(rows))
    for ax, sl, r in zip(axes, slices, rows):
        x = _arr(r["x"])
        med = _plotted_excess(sl, r)
        S = med.shape[1]
        for k in range(S):
            tok = _arr(sl["tokens"])[-1, k]
            ax.plot(x, med[:, k], "o-", ms=3, lw=1, color=plt.cm.viridis(k / max(S - 1, 1)),
                    label=f"D = {tok:.2g}" if S <= 8 or k in (0, S - 1) else None)
        _draw_law(ax, r, "alpha_N")
        _log_axes(ax, xlabel=f"N ({r['x_name']})", ylabel="excess loss L - L_irr (nats)",
                  title=f"Excess vs N ({slice_name(r['slice'])})")
        ax.legend(fontsize=6)
    return save(fig, path)


def _plotted_excess(sl: dict, r: dict) -> np.ndarray:
    """A slice's median excess (width x D) as plotted: over its exact floor, or, where the floor is fitted
    (no exact one), the median loss minus the law's fitted E (non-positive values left out)."""
    if r.get("floor_fitted") and r.get("E") is not None:
        med = _arr(sl["median_loss"]) - r["E"]
        med[~(med > 0)] = np.nan
        return med
    return _arr(sl["median_excess"])


def _log_axes(ax, **labels) -> None:
    """Log-log axes with ``labels``; where the panel has no positive finite value to show (a slice whose floor
    could not be fitted: its excess is unknown) a linear y axis and a note instead of matplotlib's error."""
    ys = np.concatenate([np.asarray(line.get_ydata(), float).ravel() for line in ax.lines] or [np.zeros(0)])
    ax.set(xscale="log", **labels)
    if np.any(np.isfinite(ys) & (ys > 0)):
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no excess to show (floor unknown and not fitted)", transform=ax.transAxes,
                ha="center", fontsize=8)


def _draw_law(ax, r: dict, name: str) -> None:
    """The fitted power law of row ``r`` over its window (shaded), labelled with its exponent ``name``."""
    if r["alpha"] is None:
        return
    w = r["window"]
    ax.axvspan(w["lo"], w["hi"], color="0.9", zorder=0)
    xs = np.geomspace(w["lo"], w["hi"], 50)
    ax.plot(xs, r["params"]["A"] * xs ** -r["alpha"], "k--", lw=1.2,
            label=f"{name} = {r['alpha']:.3f}{_ci_text(r['alpha_ci'])}, R^2 {_f(w.get('r2'))}")


def plot_excess_vs_d(summary: dict, path: Path) -> Path:
    """Per slice: median excess vs D (tokens), one line per width, the fit at the largest width."""
    from sweepjax.plots import plt, save
    rows = summary["d_scaling"]
    fig, axes = _panels(len(rows))
    for ax, sl, r in zip(axes, summary["slices"], rows):
        med, tok, widths = _plotted_excess(sl, r), _arr(sl["tokens"]), sl["width"]
        W = med.shape[0]
        for w in range(W):
            ax.plot(tok[w], med[w], "o-", ms=3, lw=1, color=plt.cm.plasma(w / max(W - 1, 1) * 0.9),
                    label=f"width {widths[w]:g}" if W <= 8 or w in (0, W - 1) else None)
        _draw_law(ax, r, "alpha_D")
        _log_axes(ax, xlabel="D (training tokens)", ylabel="excess loss L - L_irr (nats)",
                  title=f"Excess vs D ({slice_name(r['slice'])})")
        ax.legend(fontsize=6)
    return save(fig, path)


def plot_loss_vs_n(summary: dict, path: Path) -> Path:
    """Raw median test loss vs N at the largest D, one colour per slice, each slice's floor (test-set Bayes
    loss) dashed: which slice has the lower floor, on one graph."""
    from sweepjax.plots import plt, save
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for i, (sl, r) in enumerate(zip(summary["slices"], summary["n_scaling"])):
        c = f"C{i % 10}"
        loss = _arr(sl["median_loss"])[:, r["fixed"]["index"]]
        ax.plot(_arr(r["x"]), loss, "o-", ms=3, color=c, label=f"{slice_name(r['slice'])}")
        if sl["floor"] is not None:
            ax.axhline(sl["floor"], color=c, ls="--", lw=1, label=f"floor {sl['floor']:.3f}")
    ax.set(xscale="log", xlabel=f"N ({summary['n_scaling'][0]['x_name']})", ylabel="final test loss (nats, median)",
           title="Test loss at the largest D, with each slice's floor")
    ax.legend(fontsize=7)
    return save(fig, path)


def plot_frontier(summary: dict, count: str, path: Path) -> Path:
    """Per slice (rows): left, the median excess vs compute of every (N, D) (one line per width), the
    approach-1 envelope (certified points filled) and the approach-3 frontier; right, N_opt vs C for the
    three approaches with their fitted N_opt ~ C^a (intervals in the legend), the swept N as grey lines."""
    from sweepjax.plots import plt, save
    rows = [r for r in summary["frontier"] if r["compute"] == count]
    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 4.2 * len(rows)), squeeze=False)
    cname = "C = 6 N D, FLOPs" if count == "6ND" else "C = exact training FLOPs"
    for (ax, bx), r in zip(axes, rows):
        C, med, N = _arr(r["points"]["compute"]), _arr(r["points"]["median_excess"]), _arr(r["points"]["n"])
        W = len(N)
        for w in range(W):
            ax.plot(C[w], med[w], "-", lw=1, color=plt.cm.viridis(w / max(W - 1, 1)),
                    label=f"N = {N[w]:.2g}" if W <= 8 or w in (0, W - 1) else None)
        env, iso = r["envelope"], r["isoflop"]
        if env.get("frontier"):
            fr = env["frontier"]
            c, l, n, cert = _arr(fr["compute"]), _arr(fr["loss"]), _arr(fr["n_opt"]), np.asarray(fr["certified"], bool)
            ax.plot(c, l, "k-", lw=2, alpha=0.5, label="envelope (approach 1)")
            bx.plot(c[cert], n[cert], "o", color="C0", ms=4, label="envelope, certified")
            bx.plot(c[~cert], n[~cert], "o", color="C0", mfc="none", ms=4, label="envelope, not certified")
            if env.get("a") is not None:
                cc = c[cert] if cert.any() else c
                k = np.exp(np.mean(np.log(n[cert])) - env["a"] * np.mean(np.log(cc))) if cert.any() else env["k_n"]
                bx.plot(cc, k * cc ** env["a"], "-", color="C0",
                        label=f"approach 1: a = {env['a']:.3f}{_ci_text(env.get('a_ci'))}")
        if iso.get("frontier"):
            fr = iso["frontier"]
            ok = np.asarray(fr["inside"], bool) & np.asarray(fr["curvature_ok"], bool)
            bx.plot(_arr(fr["compute"])[ok], _arr(fr["n_opt"])[ok], "s", color="C1", ms=4,
                    label=f"IsoFLOP (approach 2): a = {_f(iso['a'])}")
        for i, (floor, j) in enumerate(r["joint_fit"].items()):
            if not j.get("frontier"):   # the 2-D law does not fall in both N and D: no frontier to draw
                continue
            fr = j["frontier"]
            c3, n3 = _arr(fr["compute"]), _arr(fr["n_opt"])
            style = "-" if floor == "fixed" else ":"
            bx.plot(c3, n3, style, color="C3", lw=1.5,
                    label=f"2-D fit, E {floor} (approach 3): a = {j['a']:.3f}{_ci_text(j.get('a_ci'))}")
            if floor == "fixed":
                ax.plot(c3, _arr(fr["loss"]), "--", color="C3", lw=1.2, label="2-D fit frontier (E fixed)")
        for n in N:
            bx.axhline(n, color="0.85", lw=0.6, zorder=0)
        ax.set(xscale="log", yscale="log", xlabel=f"compute ({cname})", ylabel="excess loss (nats, median)",
               title=f"Loss vs compute ({slice_name(r['slice'])})")
        bx.set(xscale="log", yscale="log", xlabel=f"compute ({cname})", ylabel="N_opt (non-embedding)",
               title=f"Compute-optimal N ({slice_name(r['slice'])})")
        ax.legend(fontsize=6)
        bx.legend(fontsize=6)
    return save(fig, path)


def plot_sensitivity(summary: dict, path: Path) -> Path:
    """Per slice: the N exponent per fit window (x: the window's widths), one series per (floor, count),
    bootstrap intervals where computed, the headline window marked."""
    from sweepjax.plots import save
    rows = summary["sensitivity"]["rows"]
    sels = []
    for r in rows:
        if r["slice"] not in sels:
            sels.append(r["slice"])
    fig, axes = _panels(max(len(sels), 1), size=(5.5, 4))
    for ax, sel in zip(axes, sels):
        part = [r for r in rows if r["slice"] == sel]
        wins = sorted({tuple(r["window"]) for r in part})
        pos = {w: i for i, w in enumerate(wins)}
        series = sorted({(r["floor"], r["n"]) for r in part})
        for k, (floor, count) in enumerate(series):
            sr = [r for r in part if (r["floor"], r["n"]) == (floor, count) and r["alpha"] is not None]
            x = np.array([pos[tuple(r["window"])] for r in sr]) + (k - (len(series) - 1) / 2) * 0.12
            a = np.array([r["alpha"] for r in sr])
            ax.plot(x, a, "o", ms=3, color=f"C{k}", label=f"E {floor}, N = {count}")
            for xi, r in zip(x, sr):
                if r["alpha_ci"]:
                    ax.plot([xi, xi], r["alpha_ci"], "-", color=f"C{k}", lw=1.2)
                if r["headline"]:
                    ax.plot(xi, r["alpha"], "*", ms=9, color=f"C{k}", mec="k", mew=0.5)
        ax.set_xticks(range(len(wins)), [f"{w[0]:g}-{w[1]:g}" for w in wins], rotation=90, fontsize=6)
        ax.set_xlim(-0.6, len(wins) - 0.4)
        ax.set(xlabel="fit window (widths)", ylabel="alpha_N", title=f"Fit sensitivity ({slice_name(sel)}); * headline")
        ax.legend(fontsize=6)
    return save(fig, path)


def plot_mup_sp(summary: dict, path: Path) -> Path:
    """Per group: excess vs N at the largest D for each parameterization at its best lr (annotated), with
    the fitted power laws."""
    from sweepjax.plots import save
    groups = [g for g in summary["mup_vs_sp"] if g.get("contrast", True)]
    fig, axes = _panels(len(groups), size=(5.5, 4.2))
    for ax, g in zip(axes, groups):
        for i, (p, e) in enumerate(g["by"].items()):
            c = f"C{i}"
            x, y = _arr(e["x"]), _arr(e["median_excess"])
            ax.plot(x, y, "o", color=c, label=p)
            if e["best_lr"] is not None:
                for xi, yi, lr, edge in zip(x, y, e["best_lr"], e["lr_at_edge"]):
                    if np.isfinite(yi) and lr is not None:
                        ax.annotate(f"{lr:.0e}" + ("*" if edge else ""), (xi, yi), fontsize=5, color=c,
                                    xytext=(3, 3 if i == 0 else -8), textcoords="offset points")
            if e["alpha"] is not None:
                w = e["window"]
                xs = np.geomspace(w["lo"], w["hi"], 50)
                A = np.exp(np.mean(np.log(y[w["index"]])) + e["alpha"] * np.mean(np.log(x[w["index"]])))
                ax.plot(xs, A * xs ** -e["alpha"], "-", color=c, lw=1,
                        label=f"{p}: alpha_N = {e['alpha']:.3f}{_ci_text(e['alpha_ci'])}")
        ax.set(xscale="log", yscale="log", xlabel="N (non-embedding)", ylabel="excess loss at the largest D (nats)",
               title=f"muP vs SP at the best lr ({slice_name(g['slice'])}); * lr at edge")
        ax.legend(fontsize=6)
    return save(fig, path)


def make_figures(summary: dict, outdir: str | Path) -> list[Path]:
    """The study's figures in ``outdir`` (those the summary supports): ``language_excess_vs_n.png``,
    ``language_loss_vs_n.png``, ``language_sensitivity.png``, ``language_excess_vs_d.png``,
    ``language_frontier_6nd.png``, ``language_frontier_exact.png``, ``language_mup_sp.png``.
    ``summary``: :func:`summarize`'s dict, or the same read back from ``language.json``."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_excess_vs_n(summary, out / "language_excess_vs_n.png"),
             plot_loss_vs_n(summary, out / "language_loss_vs_n.png")]
    if summary["sensitivity"]["rows"]:
        paths.append(plot_sensitivity(summary, out / "language_sensitivity.png"))
    if summary["d_scaling"]:
        paths.append(plot_excess_vs_d(summary, out / "language_excess_vs_d.png"))
    for count in COMPUTES:
        if any(r["compute"] == count for r in summary["frontier"]):
            paths.append(plot_frontier(summary, count, out / f"language_frontier_{count.lower()}.png"))
    if any(g.get("contrast", True) for g in summary["mup_vs_sp"]):
        paths.append(plot_mup_sp(summary, out / "language_mup_sp.png"))
    if summary.get("ladder"):
        paths.append(plot_ladder(summary["ladder"], out / "language_ladder.png"))
    return paths


def analyse(ds: xr.Dataset, out: str | Path, run_cfg, width_rows: list[dict], log: TextIO | None = None,
            warn: TextIO | None = None) -> list[Path]:
    """The study's step after a run (the task's ``STUDY``): :func:`summarize` with ``run.bootstrap``
    resamples, printed to ``log``, written to ``language.json`` (strict JSON: NaN -> null), then the figures
    when ``run.figures``. ``width_rows`` (the generic width fit over every lr and D) is not used: the fits
    here are on the best lr at each (N, D)."""
    from sweepjax.files import FIGURES_DIR, atomic_write
    if "width" not in ds.dims:   # a sweep of other things (the ladder's generators: depth only): no study
        if log:
            print("language analysis skipped: the sweep has no width axis (N-scaling needs one)", file=log)
        return []
    summary = summarize(ds, n_boot=int(run_cfg.bootstrap), log=warn)
    if log:
        print(describe(summary), file=log)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report = out / "language.json"
    clean = to_json(summary)
    atomic_write(report, lambda p: p.write_text(json.dumps(clean, indent=1, allow_nan=False)))
    return [report] + (make_figures(clean, out / FIGURES_DIR) if run_cfg.figures else [])
