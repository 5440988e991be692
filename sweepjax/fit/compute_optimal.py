"""Compute-optimal model size and data (Hoffmann et al. 2022, three approaches).

Every approach returns a `ComputeOptimal`: a frontier table (compute in FLOPs, the
optimal parameter count ``n_opt``, tokens ``d_opt``, the loss there) and the exponents
``a``, ``b`` of ``N_opt ∝ C^a`` and ``D_opt ∝ C^b`` from a log-log least-squares line
through the frontier. Compute is ``C = 6 N D`` unless a FLOP function ``flops(N, D)``
(vectorised, increasing in D) is given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize_scalar

from .estimate import FitResult
from .inputs import FitInputError

Flops = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class ComputeOptimal:
    """Compute-optimal frontier and its power laws.

    Attributes:
      approach: "envelope" (1), "isoflop" (2) or "joint_fit" (3).
      frontier: columns compute (FLOPs), n_opt (parameters), d_opt (tokens), loss, and
        for IsoFLOP also curvature_ok / inside (the parabola has a minimum / it lies inside
        the sampled sizes).
      a, b: exponents of ``N_opt = k_n C^a`` and ``D_opt = k_d C^b``. k_n, k_d: prefactors.
    """

    approach: str
    frontier: pd.DataFrame
    a: float
    b: float
    k_n: float
    k_d: float

    def n_opt(self, compute: np.ndarray | float) -> np.ndarray:
        """Optimal parameter count at ``compute`` FLOPs from the fitted power law."""
        return self.k_n * np.asarray(compute, float) ** self.a

    def d_opt(self, compute: np.ndarray | float) -> np.ndarray:
        """Optimal token count at ``compute`` FLOPs from the fitted power law."""
        return self.k_d * np.asarray(compute, float) ** self.b


def tokens_for(n: np.ndarray, compute: np.ndarray, flops: Flops | None = None) -> np.ndarray:
    """Tokens D with ``flops(N, D) = C`` (``C / 6N`` by default; else bisection in log D)."""
    n, compute = np.broadcast_arrays(np.asarray(n, float), np.asarray(compute, float))
    if flops is None:
        return compute / (6.0 * n)
    return _invert(lambda d: flops(n, d), compute)


def _invert(g: Callable[[np.ndarray], np.ndarray], target: np.ndarray) -> np.ndarray:
    """``v`` with ``g(v) = target`` for an increasing ``g``, by bisection in log v over
    [e^-50, e^150] (vectorised over ``target``)."""
    target = np.asarray(target, float)
    lo, hi = np.full(target.shape, -50.0), np.full(target.shape, 150.0)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        low = g(np.exp(mid)) < target
        lo, hi = np.where(low, mid, lo), np.where(low, hi, mid)
    return np.exp(0.5 * (lo + hi))


def _make(approach: str, frontier: pd.DataFrame, use: np.ndarray) -> ComputeOptimal:
    """Fit the two log-log lines through the frontier rows marked ``use``."""
    if int(np.sum(use)) < 2:
        raise FitInputError(f"{approach}: fewer than two frontier points to fit N_opt(C)")
    lc = np.log(frontier["compute"].to_numpy()[use])
    a, ln_kn = np.polyfit(lc, np.log(frontier["n_opt"].to_numpy()[use]), 1)
    b, ln_kd = np.polyfit(lc, np.log(frontier["d_opt"].to_numpy()[use]), 1)
    return ComputeOptimal(approach, frontier, float(a), float(b), float(np.exp(ln_kn)),
                          float(np.exp(ln_kd)))


def envelope(compute: np.ndarray, loss: np.ndarray, n_params: np.ndarray, *,
             tokens: np.ndarray | None = None, flops: Flops | None = None,
             n_points: int = 40) -> ComputeOptimal:
    """Approach 1: the lower envelope of loss against compute over training curves.

    Args:
      compute: ``(R, T)`` FLOPs spent at each eval of each run (NaN where absent).
      loss: ``(R, T)`` loss at those evals.
      n_params: ``(R,)`` parameter count of each run.
      tokens: optional ``(R, T)`` tokens seen; default from ``flops`` (``C / 6N``).
      n_points: compute values (log-spaced over the range covered by the runs) at which
        each run's curve is interpolated (in log-log) and the best run taken.
    """
    C, L = np.asarray(compute, float), np.asarray(loss, float)
    N = np.asarray(n_params, float)
    if C.shape != L.shape or C.ndim != 2 or N.shape != (C.shape[0],):
        raise FitInputError("envelope: compute and loss must be (runs, evals), n_params (runs,)")
    ok = np.isfinite(C) & np.isfinite(L) & (C > 0) & (L > 0)
    if ok.sum() < 2:
        raise FitInputError("envelope: fewer than two finite positive (compute, loss) points")
    grid = np.geomspace(C[ok].min(), C[ok].max(), n_points)
    best = np.full(n_points, np.inf)
    who = np.full(n_points, -1)
    for r in range(len(C)):
        c, l = C[r, ok[r]], L[r, ok[r]]
        if c.size < 2:
            continue
        order = np.argsort(c)
        inside = (grid >= c.min()) & (grid <= c.max())
        lr = np.exp(np.interp(np.log(grid), np.log(c[order]), np.log(l[order])))
        better = inside & (lr < best)
        best, who = np.where(better, lr, best), np.where(better, r, who)
    use = who >= 0
    n_opt = np.where(use, N[np.maximum(who, 0)], np.nan)
    if tokens is None:
        d_opt = tokens_for(n_opt, grid, flops)
    else:
        D = np.asarray(tokens, float)
        d_opt = np.array([np.exp(np.interp(np.log(g), np.log(C[r, ok[r]]), np.log(D[r, ok[r]])))
                          if r >= 0 else np.nan for g, r in zip(grid, who)])
    frontier = pd.DataFrame({"compute": grid, "n_opt": n_opt, "d_opt": d_opt,
                             "loss": np.where(use, best, np.nan)})
    return _make("envelope", frontier, use)


def isoflop(compute: np.ndarray, n_params: np.ndarray, loss: np.ndarray, *,
            flops: Flops | None = None) -> ComputeOptimal:
    """Approach 2: IsoFLOP profiles. For each compute budget (distinct value of
    ``compute``), fit a parabola of loss against log N and take its minimum.

    Known to be biased when the parabola is a poor description or its minimum lies
    outside the sampled sizes; the frontier flags both (curvature_ok, inside), and only
    budgets with a minimum (curvature_ok) enter the exponent fit.
    """
    C, N, L = (np.asarray(a, float).ravel() for a in (compute, n_params, loss))
    if not C.shape == N.shape == L.shape:
        raise FitInputError("isoflop: compute, n_params and loss must have the same length")
    keep = np.isfinite(C) & np.isfinite(N) & np.isfinite(L) & (N > 0) & (L > 0)
    rows = []
    for budget in np.unique(C[keep]):
        sel = keep & (C == budget)
        u = np.log(N[sel])
        if np.unique(u).size < 3:
            continue
        p2, p1, p0 = np.polyfit(u, L[sel], 2)
        u_star = -p1 / (2 * p2) if p2 > 0 else u[np.argmin(L[sel])]
        rows.append({"compute": budget, "n_opt": np.exp(u_star),
                     "loss": np.polyval([p2, p1, p0], u_star), "curvature_ok": bool(p2 > 0),
                     "inside": bool(u.min() <= u_star <= u.max())})
    if not rows:
        raise FitInputError("isoflop: no compute budget has three or more distinct model sizes")
    frontier = pd.DataFrame(rows)
    frontier.insert(2, "d_opt", tokens_for(frontier["n_opt"], frontier["compute"], flops))
    return _make("isoflop", frontier, frontier["curvature_ok"].to_numpy())


def from_joint_fit(result: FitResult, compute: np.ndarray, *, flops: Flops | None = None,
                   grid_size: int = 2001) -> ComputeOptimal:
    """Approach 3: minimise the fitted ``L(N, D)`` along each compute budget.

    ``result`` is a fit of a form with variables ("N", "D") (joint_nd, kaplan, or a
    registered one). For ``joint_nd`` with ``C = 6ND`` the closed form
    ``N_opt = G (C/6)^(beta/(alpha+beta))``, ``G = (alpha A / (beta B))^(1/(alpha+beta))``
    is used; otherwise a dense grid over log N followed by a bounded 1-D refinement.
    """
    if tuple(result.spec.variables) != ("N", "D"):
        raise FitInputError(f"from_joint_fit needs a form over (N, D), not {result.form!r} "
                            f"over {result.spec.variables}")
    C = np.atleast_1d(np.asarray(compute, float))
    if not np.all(np.isfinite(C) & (C > 0)):
        raise FitInputError("from_joint_fit: compute budgets must be positive and finite")
    p = result.params
    bad = {k: p[k] for k in ("A", "alpha", "B", "beta") if k in p and not p[k] > 0}
    if bad:   # a law that does not fall in both N and D has no compute-optimal trade-off
        raise FitInputError(f"from_joint_fit: the fitted law has non-positive {bad}: no compute-optimal frontier")
    if result.form == "joint_nd" and flops is None:
        al, be = p["alpha"], p["beta"]
        G = (al * p["A"] / (be * p["B"])) ** (1 / (al + be))
        n_opt = G * (C / 6) ** (be / (al + be))
    else:
        def loss_at(log_n: np.ndarray, c: float) -> np.ndarray:
            n = np.exp(log_n)
            return result.predict({"N": n, "D": tokens_for(n, c, flops)})

        n_opt = np.empty_like(C)
        for i, c in enumerate(C):
            # N from 1 up to the size that leaves a single token
            hi = np.log(c / 6.0 if flops is None else _invert(lambda n: flops(n, 1.0), c))
            grid = np.linspace(0.0, hi, grid_size)
            j = int(np.nanargmin(loss_at(grid, c)))
            lo_b, hi_b = grid[max(j - 1, 0)], grid[min(j + 1, grid_size - 1)]
            res = minimize_scalar(lambda u: float(loss_at(np.array([u]), c)[0]),
                                  bounds=(lo_b, hi_b), method="bounded",
                                  options={"xatol": 1e-12})
            n_opt[i] = np.exp(res.x)
    d_opt = tokens_for(n_opt, C, flops)
    frontier = pd.DataFrame({"compute": C, "n_opt": n_opt, "d_opt": d_opt,
                             "loss": result.predict({"N": n_opt, "D": d_opt})})
    return _make("joint_fit", frontier, np.ones(len(C), bool))
