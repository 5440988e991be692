"""Scaling-law forms: a small registry of `Form` objects.

Every form predicts ``log L`` from ``log x`` with its coefficients kept positive by a log
parametrisation (``A = exp(a)``, ``E = exp(e)``), so that sums of terms are log-sum-exps:
``log(E + A x^-alpha) = logsumexp([a - alpha log x, e])``. The optimiser works on these
*raw* parameters; users see *natural* ones (``A``, ``alpha``, ``E``).

Forms whose loss is a positive combination of terms, ``L = sum_k c_k phi_k(x; shape)``,
also expose ``log_basis`` so that variable projection can solve the ``c_k`` linearly.

Adding a form: build a `Form` (or call `additive_form`) and pass it to `register_form`.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from .inputs import FitInputError

Array = jax.Array


@dataclass(frozen=True)
class Param:
    """One parameter: the optimiser's raw name, the user's natural name, and whether
    natural = exp(raw) (coefficients, offsets, scales) or natural = raw (exponents)."""

    raw: str
    natural: str
    log: bool = False


StartGrid = Callable[[np.ndarray, np.ndarray], Mapping[str, np.ndarray]]


@dataclass(frozen=True, eq=False)
class Form:
    """A scaling-law form.

    Attributes:
      name: registry key.
      params: the parameters, in the order of the raw vector ``theta``.
      variables: names of the input variables (columns of ``x``), e.g. ``("x",)`` or ``("N", "D")``.
      log_predict: ``(theta (P,), log_x (n, V)) -> log L (n,)``, a jnp function.
      start_grid: ``(x (n, V), y (n,)) -> {raw name: values}``; every array has the same
        length S (the grid is already expanded), so a start may depend on the data scale.
      exponents: natural names of the exponents (reported by window sensitivity).
      n_linear: for additive forms, the first ``n_linear`` raw parameters are log-coefficients
        ``log c_k`` and ``log_basis(theta[n_linear:], log_x) -> (n, n_linear)`` gives
        ``log phi_k``; 0 when variable projection does not apply.
      formula: a human-readable formula.
    """

    name: str
    params: tuple[Param, ...]
    variables: tuple[str, ...]
    log_predict: Callable[[Array, Array], Array]
    start_grid: StartGrid
    exponents: tuple[str, ...]
    n_linear: int = 0
    log_basis: Callable[[Array, Array], Array] | None = None
    formula: str = ""

    @property
    def raw_names(self) -> tuple[str, ...]:
        """Names of the raw (optimiser) parameters."""
        return tuple(p.raw for p in self.params)

    @property
    def param_names(self) -> tuple[str, ...]:
        """Names of the natural parameters."""
        return tuple(p.natural for p in self.params)

    def to_natural(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """Raw parameters ``(..., P)`` -> {natural name: values (...)}; exp of log-parametrised ones."""
        theta = np.asarray(theta, dtype=np.float64)
        with np.errstate(over="ignore"):
            return {p.natural: (np.exp(theta[..., i]) if p.log else theta[..., i])
                    for i, p in enumerate(self.params)}

    def from_natural(self, values: Mapping[str, float | np.ndarray]) -> np.ndarray:
        """{natural name: value} -> raw parameter vector(s) ``(..., P)`` (log of coefficients)."""
        missing = [p.natural for p in self.params if p.natural not in values]
        if missing:
            raise KeyError(f"form {self.name!r} needs parameters {', '.join(missing)}")
        with np.errstate(divide="ignore"):
            cols = [np.log(np.asarray(values[p.natural], np.float64)) if p.log
                    else np.asarray(values[p.natural], np.float64) for p in self.params]
        return np.stack(np.broadcast_arrays(*cols), axis=-1)

    def starts(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The default start grid for data ``x (n, V)``, ``y (n,)`` as raw vectors ``(S, P)``."""
        grid = self.start_grid(x, y)
        return np.stack([np.asarray(grid[r], np.float64) for r in self.raw_names], axis=-1)


def grid_product(**axes: np.ndarray | list[float]) -> dict[str, np.ndarray]:
    """Cartesian product of named 1-D value lists -> {name: flat array of length prod(len)}."""
    names = list(axes)
    rows = np.array(list(itertools.product(*(np.asarray(axes[k], float) for k in names))))
    return {k: rows[:, i] for i, k in enumerate(names)}


def logsumexp(z: Array) -> Array:
    """``log(sum(exp(z), axis=-1))`` over a short last axis, written out term by term
    (several times faster on CPU than a reduction over a length-K axis)."""
    cols = [z[..., i] for i in range(z.shape[-1])]
    top = jax.lax.stop_gradient(functools.reduce(jnp.maximum, cols))
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    return top + jnp.log(sum(jnp.exp(c - top) for c in cols))


def additive_form(name: str, variables: tuple[str, ...], coefs: tuple[Param, ...],
                  shape: tuple[Param, ...], log_basis: Callable[[Array, Array], Array],
                  start_grid: StartGrid, exponents: tuple[str, ...], formula: str) -> Form:
    """A form ``L = sum_k exp(coef_k) * exp(log_basis(shape, log_x)[:, k])``.

    The raw vector is ``(coefs..., shape...)``; prediction is a log-sum-exp over terms, and
    variable projection may solve the coefficients linearly for given shape parameters.
    """
    k = len(coefs)

    def log_predict(theta: Array, log_x: Array) -> Array:
        return logsumexp(theta[:k] + log_basis(theta[k:], log_x))

    return Form(name=name, params=coefs + shape, variables=variables, log_predict=log_predict,
                start_grid=start_grid, exponents=exponents, n_linear=k, log_basis=log_basis,
                formula=formula)


# ----------------------------------------------------------------------------- registry

FORMS: dict[str, Form] = {}


def register_form(form: Form) -> Form:
    """Add ``form`` to the registry (replacing one of the same name) and return it."""
    FORMS[form.name] = form
    return form


def get_form(form: str | Form) -> Form:
    """Look a form up by name (a `Form` passes through)."""
    if isinstance(form, Form):
        return form
    try:
        return FORMS[form]
    except KeyError:
        raise FitInputError(f"unknown form {form!r}; known forms: {', '.join(FORMS)}") from None


# ----------------------------------------------------------------------------- start grids
# Grids are expanded products; coefficients start where the term is about the size of the
# data (so the same grid works for losses of 1e-3 or 1e1), exponents over a fixed range.

_OFFSET_FRACTIONS = np.array([0.01, 0.3, 0.6, 0.9])  # E as a fraction of min(y)


def _single_var_grid(exponent: str, exponents: list[float], offset: bool) -> StartGrid:
    def grid(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        lx = np.log(x[:, 0])
        axes = {exponent: exponents, "da": [-2.0, 0.0, 2.0]}
        if offset:
            axes["e"] = np.log(np.min(y) * _OFFSET_FRACTIONS)
        g = grid_product(**axes)
        g["a"] = np.log(np.median(y)) + g[exponent] * np.median(lx) + g.pop("da")
        return g
    return grid


def _joint_nd_grid(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    # Hoffmann et al. (2022) approach 3 grid (4,500 starts), with the coefficient values
    # shifted by the data scale (their losses had log(median) close to 1).
    shift = np.log(np.median(y)) - 1.0
    coef = shift + np.arange(0.0, 30.0, 5.0)
    return grid_product(a=coef, b=coef, e=shift + np.arange(0.0, 2.01, 0.5),
                        alpha=np.arange(0.0, 2.01, 0.5), beta=np.arange(0.0, 2.01, 0.5))


def _width_depth_data_grid(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    third = np.log(np.median(y) / 3.0)
    med = np.median(np.log(x), axis=0)
    g = grid_product(a_m=[0.25, 0.75, 1.5], a_l=[0.25, 0.75, 1.5], a_D=[0.25, 0.75, 1.5],
                     dm=[-1.5, 1.5], dl=[-1.5, 1.5], dD=[-1.5, 1.5],
                     e=np.log(np.min(y) * _OFFSET_FRACTIONS[[0, 2, 3]]))
    for i, v in enumerate("mlD"):
        g[f"c_{v}"] = third + g[f"a_{v}"] * med[i] + g.pop(f"d{v}")
    return g


def _exponential_grid(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    g = grid_product(log_k=-np.median(np.log(x[:, 0])) + np.arange(-2.0, 2.01),
                     da=[-1.0, 1.0], e=np.log(np.min(y) * _OFFSET_FRACTIONS))
    g["a"] = np.log(np.max(y)) + np.exp(g["log_k"]) * np.min(x[:, 0]) + g.pop("da")
    return g


def _broken_grid(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    lx = np.log(x[:, 0])
    g = grid_product(alpha1=[0.1, 0.5, 1.0, 2.0], alpha2=[0.1, 0.5, 1.0, 2.0],
                     log_x_b=np.quantile(lx, [0.25, 0.5, 0.75]), da=[-1.0, 1.0],
                     e=np.log(np.min(y) * _OFFSET_FRACTIONS))
    g["a"] = np.log(np.median(y)) + g["alpha1"] * np.min(lx) + g.pop("da")
    return g


def _kaplan_grid(x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    ly = np.log(np.median(y))
    lN, lD = np.median(np.log(x), axis=0)
    g = grid_product(alpha_N=[0.05, 0.1, 0.3, 0.6], alpha_D=[0.05, 0.1, 0.3, 0.6],
                     dN=[-1.0, 0.5, 2.0], dD=[-1.0, 0.5, 2.0])
    g["log_N_c"] = lN + ly / g["alpha_N"] + g.pop("dN")
    g["log_D_c"] = lD + ly / g["alpha_D"] + g.pop("dD")
    return g


# ----------------------------------------------------------------------------- the forms

COEF_A, OFFSET_E = Param("a", "A", log=True), Param("e", "E", log=True)

POWER_LAW = register_form(additive_form(
    "power_law", ("x",), (COEF_A,), (Param("alpha", "alpha"),),
    lambda s, lx: -s[0] * lx,
    _single_var_grid("alpha", [0.0, 0.25, 0.5, 1.0, 1.5, 2.0], offset=False),
    ("alpha",), "L = A x^-alpha"))

POWER_LAW_OFFSET = register_form(additive_form(
    "power_law_offset", ("x",), (COEF_A, OFFSET_E), (Param("alpha", "alpha"),),
    lambda s, lx: jnp.concatenate([-s[0] * lx, jnp.zeros_like(lx)], axis=-1),
    _single_var_grid("alpha", [0.0, 0.25, 0.5, 1.0, 1.5, 2.0], offset=True),
    ("alpha",), "L = E + A x^-alpha"))

EXPONENTIAL = register_form(additive_form(
    "exponential", ("x",), (COEF_A, OFFSET_E), (Param("log_k", "k", log=True),),
    lambda s, lx: jnp.concatenate([-jnp.exp(s[0] + lx), jnp.zeros_like(lx)], axis=-1),
    _exponential_grid, ("k",), "L = E + A exp(-k x)"))


def broken_power_law(smoothness: float = 0.5, name: str = "broken_power_law") -> Form:
    """Smoothly broken power law with one break at ``x_b`` (a fixed ``smoothness``, in units
    of log x, sets the width of the transition from slope ``-alpha1`` to ``-alpha2``):
    ``L = E + A x^-alpha1 (1 + (x/x_b)^(1/s))^(-(alpha2 - alpha1) s)``."""

    def log_basis(s: Array, lx: Array) -> Array:
        alpha1, alpha2, log_xb = s[0], s[1], s[2]
        term = -alpha1 * lx - (alpha2 - alpha1) * smoothness * jax.nn.softplus(
            (lx - log_xb) / smoothness)
        return jnp.concatenate([term, jnp.zeros_like(lx)], axis=-1)

    return additive_form(
        name, ("x",), (COEF_A, OFFSET_E),
        (Param("alpha1", "alpha1"), Param("alpha2", "alpha2"), Param("log_x_b", "x_b", log=True)),
        log_basis, _broken_grid, ("alpha1", "alpha2"),
        f"L = E + A x^-alpha1 (1 + (x/x_b)^(1/s))^(-(alpha2-alpha1) s), s={smoothness:g}")


BROKEN_POWER_LAW = register_form(broken_power_law())

JOINT_ND = register_form(additive_form(
    "joint_nd", ("N", "D"), (COEF_A, Param("b", "B", log=True), OFFSET_E),
    (Param("alpha", "alpha"), Param("beta", "beta")),
    lambda s, lx: jnp.stack([-s[0] * lx[:, 0], -s[1] * lx[:, 1], jnp.zeros_like(lx[:, 0])], -1),
    _joint_nd_grid, ("alpha", "beta"), "L = E + A N^-alpha + B D^-beta"))

WIDTH_DEPTH_DATA = register_form(additive_form(
    "width_depth_data", ("m", "l", "D"),
    (Param("c_m", "c_m", log=True), Param("c_l", "c_l", log=True),
     Param("c_D", "c_D", log=True), OFFSET_E),
    (Param("a_m", "a_m"), Param("a_l", "a_l"), Param("a_D", "a_D")),
    lambda s, lx: jnp.concatenate([-s[None, :] * lx, jnp.zeros_like(lx[:, :1])], axis=-1),
    _width_depth_data_grid, ("a_m", "a_l", "a_D"),
    "L = E + c_m m^-a_m + c_l l^-a_l + c_D D^-a_D"))


def _kaplan_log_predict(theta: Array, lx: Array) -> Array:
    log_nc, alpha_n, log_dc, alpha_d = theta[0], theta[1], theta[2], theta[3]
    terms = jnp.stack([(alpha_n / alpha_d) * (log_nc - lx[:, 0]), log_dc - lx[:, 1]], -1)
    return alpha_d * logsumexp(terms)


KAPLAN = register_form(Form(
    name="kaplan", variables=("N", "D"),
    params=(Param("log_N_c", "N_c", log=True), Param("alpha_N", "alpha_N"),
            Param("log_D_c", "D_c", log=True), Param("alpha_D", "alpha_D")),
    log_predict=_kaplan_log_predict, start_grid=_kaplan_grid, exponents=("alpha_N", "alpha_D"),
    formula="L = ((N_c/N)^(alpha_N/alpha_D) + D_c/D)^alpha_D"))
