"""Estimation: fit a `Form` to data by one of four methods.

- ``huber_lbfgs`` (default, Hoffmann et al. 2022 approach 3): minimise the Huber loss of
  ``log y - log L(x)``, SUMMED over points (weighted by ``weights``), with L-BFGS from every
  start of a grid; the starts are vmapped in chunks through one jit-compiled program
  (`lbfgs.minimize_many`).
- ``wls``: the same multi-start L-BFGS on the weighted sum of squared log residuals.
- ``varpro``: variable projection for additive forms: for given shape parameters
  (exponents) the coefficients are the non-negative least-squares solution for relative
  residuals ``(y - L)/y``; L-BFGS searches over the shape parameters only.
- ``ols``: plain least squares on the log-log line (forms linear in log space: power_law).

Every solver works on a batch of data sets sharing ``x`` (``log y (B, n)``, weights
``(B, n)``), so bootstrap resamples and fit windows are just more rows; compiled
programs are cached per (form, loss) and, by ``jax.jit``, per array shape (the number of
points is padded to a power of two with zero-weight points, so most calls share one).
All arithmetic is float64 inside ``jax.enable_x64(True)``; global JAX config is untouched.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from . import lbfgs
from .forms import Form, get_form, grid_product
from .inputs import FitInputError, as_columns, check_enough, check_weights, check_x, check_y

METHODS = ("huber_lbfgs", "wls", "varpro", "ols")

# Starts whose objective is within this relative (plus absolute) tolerance of the best one
# count as reaching the best solution; the spread of their parameters is reported.
SPREAD_RTOL, SPREAD_ATOL = 1e-6, 1e-12


@dataclass(frozen=True)
class Options:
    """Solver options."""

    method: str = "huber_lbfgs"
    delta: float = 1e-3      # Huber threshold, in units of log L
    max_iter: int = 500      # L-BFGS objective evaluations per start
    gtol: float = 1e-10      # converged when max |gradient| <= gtol ...
    ftol: float = 1e-9       # ... or a step lowers the objective by a relative <= ftol

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise FitInputError(f"unknown method {self.method!r}; choose from {', '.join(METHODS)}")
        if not (self.delta > 0 and self.max_iter >= 1):
            raise FitInputError("delta must be > 0 and max_iter >= 1")


@dataclass
class FitResult:
    """The best fit of a form.

    Attributes:
      form: form name. method: estimation method.
      params: natural parameters (``A``, ``alpha``, ``E`` ...; coefficients in units of y,
        exponents dimensionless, scales such as ``x_b`` in units of x).
      objective: the method's loss at the best start (Huber sum, weighted SSE of log
        residuals, or relative SSE for varpro).
      converged: whether the best start met the convergence criterion.
      n_starts: starts tried; n_converged: how many converged; n_near_best: how many reached
        the best objective within tolerance.
      start_spread: max - min of each natural parameter over the near-best starts (a large
        spread means the data do not pin that parameter down).
      n_points: points used (positive weight).
      spec: the `Form`; raw: best raw parameter vector; solutions, objectives: every
        start's final raw vector ``(S, P)`` and objective ``(S,)``.
    """

    form: str
    method: str
    params: dict[str, float]
    objective: float
    converged: bool
    n_starts: int
    start_spread: dict[str, float]
    n_converged: int
    n_near_best: int
    n_points: int
    spec: Form = field(repr=False)
    raw: np.ndarray = field(repr=False)
    solutions: np.ndarray = field(repr=False)
    objectives: np.ndarray = field(repr=False)

    def predict(self, x: object) -> np.ndarray:
        """Predicted loss ``L(x)`` (units of y) at ``x`` (same layout as for `fit`)."""
        return predict(self.spec, self.raw, x)

    def summary(self) -> str:
        """A short human-readable report of the fit."""
        lines = [f"{self.form}: {self.spec.formula}   [{self.method}, {self.n_points} points]"]
        for k, v in self.params.items():
            lines.append(f"  {k:>8} = {v:<14.6g} (spread over near-best starts {self.start_spread[k]:.2g})")
        lines.append(f"  objective {self.objective:.6g}; best start "
                     f"{'converged' if self.converged else 'DID NOT CONVERGE'}; "
                     f"{self.n_converged}/{self.n_starts} starts converged, "
                     f"{self.n_near_best} reached the best objective")
        return "\n".join(lines)


def predict(form: Form | str, raw: np.ndarray, x: object) -> np.ndarray:
    """Loss predicted by ``form`` with raw parameters ``raw`` (``(P,)`` or a batch
    ``(..., P)``) at ``x``; returns ``(n,)`` or ``(..., n)`` in units of y."""
    spec = get_form(form)
    X = as_columns(x, spec)
    with jax.enable_x64(True):
        return np.exp(np.asarray(_log_predictor(spec)(jnp.asarray(raw, jnp.float64),
                                                      jnp.log(jnp.asarray(X, jnp.float64)))))


@functools.lru_cache(maxsize=None)
def _log_predictor(form: Form):
    """Compiled ``(raw (..., P), log x (n, V)) -> log L (..., n)``."""
    return jax.jit(jnp.vectorize(form.log_predict, signature="(p),(n,v)->(n)"))


# ----------------------------------------------------------------------------- objectives

def _huber(r: jax.Array, delta: float) -> jax.Array:
    a = jnp.abs(r)
    return jnp.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _nnls(M: jax.Array, b: jax.Array) -> jax.Array:
    """Exact non-negative least squares ``min ||M c - b||, c >= 0`` for few columns, by
    solving every active set and keeping the best feasible one."""
    k = M.shape[1]
    scale = jnp.linalg.norm(M, axis=0) + 1e-300
    Ms = M / scale
    masks = jnp.array(list(itertools.product([0.0, 1.0], repeat=k)))

    def on_set(m: jax.Array) -> tuple[jax.Array, jax.Array]:
        Mm = Ms * m
        c = jnp.linalg.solve(Mm.T @ Mm + jnp.diag(1.0 - m), Mm.T @ b) * m
        r = b - Ms @ c
        return c, jnp.where(jnp.all(c >= 0), r @ r, jnp.inf)

    cs, rss = jax.vmap(on_set)(masks)
    return cs[jnp.argmin(rss)] / scale


def _varpro_coefs(form: Form, shape: jax.Array, lx: jax.Array, logy: jax.Array,
                  w: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Relative design ``Phi / y`` and its NNLS coefficients for given shape parameters."""
    phi = jnp.exp(form.log_basis(shape, lx) - logy[:, None])
    sw = jnp.sqrt(w)
    return phi, _nnls(phi * sw[:, None], sw)


def _objective(form: Form, method: str, delta: float):
    """``f(theta, lx, logy, w) -> scalar``: the loss the method minimises over theta."""
    if method == "varpro":
        def f(shape, lx, logy, w):
            phi, c = _varpro_coefs(form, shape, lx, logy, w)
            r = 1.0 - phi @ jax.lax.stop_gradient(c)  # envelope theorem: c is optimal
            return jnp.sum(w * r * r)
        return f

    def f(theta, lx, logy, w):
        r = logy - form.log_predict(theta, lx)
        return jnp.sum(w * (_huber(r, delta) if method == "huber_lbfgs" else r * r))
    return f


# ----------------------------------------------------------------------------- solvers

@functools.lru_cache(maxsize=None)
def _solver(form: Form, method: str, delta: float):
    """Compiled multi-start L-BFGS for one form and loss (jax.jit caches it per shape)."""
    f = _objective(form, method, delta)
    return lbfgs.compile_run(lambda theta, lx, rows: f(theta, lx, *rows))


@functools.lru_cache(maxsize=None)
def _varpro_complete(form: Form):
    """Compiled ``(shape (M, P'), lx, logy (M, n), w (M, n)) -> raw theta (M, P)``: prepend
    the log of the NNLS coefficients to the shape parameters."""
    def one(shape, lx, logy, w):
        return jnp.concatenate([jnp.log(_varpro_coefs(form, shape, lx, logy, w)[1]), shape])
    return jax.jit(jax.vmap(one, in_axes=(0, None, 0, 0)))


def _ols(form: Form, lx: jax.Array, logy: jax.Array, w: jax.Array):
    """Weighted least squares of ``log y`` on a form that is affine in its raw parameters."""
    p = len(form.params)
    b0 = form.log_predict(jnp.zeros(p), lx)
    J = jax.jacfwd(form.log_predict)(jnp.zeros(p), lx)
    probe = jnp.linspace(0.3, 1.7, p)
    if not np.allclose(form.log_predict(probe, lx), b0 + J @ probe, rtol=1e-9, atol=1e-9):
        raise FitInputError(f"method 'ols' needs a form linear in log space (e.g. power_law), "
                            f"not {form.name!r}")

    def one(logy_b, w_b):
        sw = jnp.sqrt(w_b)
        theta = jnp.linalg.lstsq(J * sw[:, None], (logy_b - b0) * sw)[0]
        r = logy_b - b0 - J @ theta
        return theta[None], jnp.sum(w_b * r * r)[None], jnp.array([True])

    return jax.vmap(one)(logy, w)


def solve_batch(form: Form, opts: Options, starts: np.ndarray, X: np.ndarray,
                logy: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit every row of ``logy (B, n)`` / ``w (B, n)`` (same ``X (n, V)``) from every start
    (raw parameters: ``(S, P)`` shared by all rows, or ``(B, S, P)`` per row). Returns numpy
    ``theta (B, S, P)``, ``objective (B, S)``, ``converged (B, S)``; the ``ols`` method has a
    single "start".

    The B*S problems run through `lbfgs.minimize_many`: every call with the same number of
    points (a fit, its bootstrap, its fit windows) reuses the same compilation.
    """
    n_data, n = logy.shape
    pad = max(16, 1 << (n - 1).bit_length()) - n  # powers of two: fewer compilations
    X = np.concatenate([X, np.ones((pad, X.shape[1]))])
    logy = np.concatenate([logy, np.zeros((n_data, pad))], axis=1)
    w = np.concatenate([w, np.zeros((n_data, pad))], axis=1)  # padded points weigh nothing
    with jax.enable_x64(True):
        lx = jnp.log(jnp.asarray(X, jnp.float64))
        if opts.method == "ols":
            out = _ols(form, lx, jnp.asarray(logy, jnp.float64), jnp.asarray(w, jnp.float64))
            return tuple(np.asarray(a) for a in out)
        starts = np.broadcast_to(starts, (n_data, *starts.shape[-2:]))
        if opts.method == "varpro":  # search over the shape parameters only
            starts = starts[:, :, form.n_linear:]
            if starts.shape[0] == 1 or np.all(starts == starts[:1]):
                starts = np.unique(starts[0], axis=0)[None].repeat(n_data, axis=0)
        n_starts = starts.shape[1]
        row = np.repeat(np.arange(n_data), n_starts)
        delta = opts.delta if opts.method == "huber_lbfgs" else 0.0
        st = lbfgs.minimize_many(_solver(form, opts.method, delta),
                                 starts.reshape(n_data * n_starts, -1).astype(np.float64), lx,
                                 (logy, w), row, opts.max_iter, opts.gtol, opts.ftol)
        theta = st.theta
        if opts.method == "varpro":
            theta = np.asarray(_varpro_complete(form)(theta, lx, logy[row], w[row]))
        value = np.where(np.isfinite(st.value), st.value, np.inf)
        return (theta.reshape(n_data, n_starts, -1), value.reshape(n_data, n_starts),
                (st.converged & np.isfinite(value)).reshape(n_data, n_starts))


# ----------------------------------------------------------------------------- public fit

def make_starts(form: Form, starts: object, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Raw start vectors ``(S, P)``: the form's default grid for ``starts=None``, the
    product of a {raw name: values} mapping, or an ``(S, P)`` array of raw vectors."""
    if starts is None:
        return form.starts(X, y)
    if isinstance(starts, Mapping):
        if set(starts) != set(form.raw_names):
            raise FitInputError(f"starts for form {form.name!r} must give raw parameters "
                                f"{', '.join(form.raw_names)}")
        g = grid_product(**{r: np.atleast_1d(starts[r]) for r in form.raw_names})
        return np.stack([g[r] for r in form.raw_names], axis=-1)
    arr = np.atleast_2d(np.asarray(starts, np.float64))
    if arr.ndim != 2 or arr.shape[1] != len(form.params) or not np.all(np.isfinite(arr)):
        raise FitInputError(f"starts must be finite raw vectors of shape (S, {len(form.params)}) "
                            f"for ({', '.join(form.raw_names)})")
    return arr


def check_method(form: Form, opts: Options) -> None:
    """Raise `FitInputError` for a method the form does not support."""
    if opts.method == "varpro" and not form.n_linear:
        raise FitInputError(f"method 'varpro' needs an additive form; {form.name!r} is not")


def best_per_row(theta: np.ndarray, value: np.ndarray, conv: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Best start of each data set: ``(B, S, P), (B, S), (B, S)`` -> ``(B, P), (B,), (B,)``."""
    i = np.argmin(value, axis=1)
    rows = np.arange(len(i))
    return theta[rows, i], value[rows, i], conv[rows, i] & np.isfinite(value[rows, i])


def fit_rows(form: Form, opts: Options, X: np.ndarray, Y: np.ndarray, W: np.ndarray,
             starts: object = None) -> list[FitResult]:
    """`fit` each row of validated ``Y (B, n)`` with weights ``W (B, n)`` at ``X (n, V)``, all
    in one batched solve; Y may hold NaN where ``W == 0`` (such points are left out)."""
    check_method(form, opts)
    used = W > 0
    for u in used:
        check_enough(X, u.astype(float), form)
    S = np.stack([make_starts(form, starts, X[u], y[u]) for y, u in zip(Y, used)])
    thetas, values, convs = solve_batch(form, opts, S, X, np.log(np.where(used, Y, 1.0)), W)
    results = []
    for theta, value, conv, u in zip(thetas, values, convs, used):
        i = int(np.argmin(value))
        best = value[i]
        near = value <= best + SPREAD_RTOL * abs(best) + SPREAD_ATOL
        nat = form.to_natural(theta)
        results.append(FitResult(
            form=form.name, method=opts.method,
            params={k: float(v[i]) for k, v in nat.items()},
            objective=float(best), converged=bool(conv[i]), n_starts=len(value),
            start_spread={k: float(np.ptp(v[near])) for k, v in nat.items()},
            n_converged=int(conv.sum()), n_near_best=int(near.sum()), n_points=int(u.sum()),
            spec=form, raw=theta[i], solutions=theta, objectives=value))
    return results


def fit(x: object, y: object, form: str | Form = "power_law_offset", *,
        method: str = Options.method, delta: float = Options.delta, starts: object = None,
        weights: object = None, max_iter: int = Options.max_iter, gtol: float = Options.gtol,
        ftol: float = Options.ftol) -> FitResult:
    """Fit a scaling-law form to losses ``y`` at sizes ``x``.

    Args:
      x: sizes (positive): a 1-D array for single-variable forms, or a dict name -> 1-D
        array (or an ``(n, V)`` array) for joint forms (variables of `FORMS[form]`).
      y: losses (positive, finite), 1-D, same length as x.
      form: a registered form name (see `FORMS`) or a `Form`.
      method: "huber_lbfgs" (default), "wls", "varpro" or "ols" (see module docstring).
      delta: Huber threshold in units of log L (1e-3 by default).
      starts: None (the form's grid), a dict raw name -> values (their product), or an
        ``(S, P)`` array of raw vectors (``a = log A``, ``e = log E`` ...).
      weights: non-negative per-point weights multiplying each point's loss.
      max_iter, gtol, ftol: L-BFGS evaluations per start and convergence tolerances.

    Returns: the `FitResult` of the best start.
    """
    spec = get_form(form)
    opts = Options(method, float(delta), int(max_iter), float(gtol), float(ftol))
    X = check_x(x, spec)
    Y = check_y(y, len(X))
    return fit_rows(spec, opts, X, Y[None], check_weights(weights, len(X))[None], starts)[0]
