"""Noise-free data from every registered form: the default fit recovers the parameters."""

import numpy as np
import pytest

from sweepjax.fit import FORMS, additive_form, fit, predict, register_form
from sweepjax.fit.forms import Param

RTOL = 1e-6


def _grid(*axes):
    mesh = np.meshgrid(*axes, indexing="ij")
    return [m.ravel() for m in mesh]


# one synthetic design per form: sizes (dict name -> array) and true natural parameters
X1 = np.geomspace(16, 16384, 14)
N, D = _grid(np.geomspace(1e6, 1e9, 5), np.geomspace(1e8, 1e11, 5))
M, L, DD = _grid(np.geomspace(32, 2048, 3), np.array([2.0, 4.0, 8.0]), np.geomspace(1e6, 1e8, 3))
CASES = {
    "power_law": ({"x": X1}, dict(A=7.0, alpha=0.35)),
    "power_law_offset": ({"x": X1}, dict(A=5.0, alpha=0.45, E=1.2)),
    "exponential": ({"x": np.linspace(50, 3000, 14)}, dict(A=3.0, k=1.5e-3, E=0.8)),
    "broken_power_law": ({"x": np.geomspace(10, 1e5, 16)},
                         dict(A=9.0, alpha1=0.15, alpha2=0.8, x_b=800.0, E=0.4)),
    "joint_nd": ({"N": N, "D": D}, dict(A=406.4, alpha=0.34, B=410.7, beta=0.28, E=1.69)),
    "width_depth_data": ({"m": M, "l": L, "D": DD},
                         dict(c_m=20.0, a_m=0.6, c_l=0.5, a_l=1.1, c_D=300.0, a_D=0.4, E=0.9)),
    "kaplan": ({"N": N, "D": D}, dict(N_c=8.8e13, alpha_N=0.076, D_c=5.4e13, alpha_D=0.095)),
}


def _data(name):
    x, true = CASES[name]
    form = FORMS[name]
    y = predict(form, form.from_natural(true), x)
    return x, y, true


def _assert_recovered(res, true):
    for k, v in true.items():
        assert res.params[k] == pytest.approx(v, rel=RTOL), (res.form, k, res.params)


def test_every_registered_form_has_a_case():
    assert set(CASES) == set(FORMS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_noise_free_recovery(name):
    x, y, true = _data(name)
    res = fit(x, y, name)
    assert res.converged
    _assert_recovered(res, true)
    np.testing.assert_allclose(res.predict(x), y, rtol=1e-8)


@pytest.mark.parametrize("name,method", [("power_law_offset", "varpro"),
                                         ("power_law_offset", "wls"),
                                         ("joint_nd", "varpro"),
                                         ("power_law", "ols")])
def test_other_methods_recover(name, method):
    x, y, true = _data(name)
    res = fit(x, y, name, method=method)
    assert res.method == method and res.converged
    _assert_recovered(res, true)


def test_new_form_is_easy_to_add():
    form = register_form(additive_form(
        "two_power_laws", ("x",), (Param("a", "A", log=True), Param("b", "B", log=True)),
        (Param("alpha", "alpha"), Param("beta", "beta")),
        lambda s, lx: -s[None, :] * lx,
        lambda x, y: {"a": np.repeat([1.0, 3.0], 9), "b": np.tile(np.repeat([0.0, 2.0], 3), 3),
                      "alpha": np.tile([0.2, 0.6, 1.0], 6), "beta": np.full(18, 1.5)},
        ("alpha", "beta"), "L = A x^-alpha + B x^-beta"))
    try:
        true = dict(A=3.0, alpha=0.2, B=40.0, beta=1.3)
        y = predict(form, form.from_natural(true), X1)
        _assert_recovered(fit(X1, y, form), true)
        _assert_recovered(fit(X1, y, "two_power_laws", method="varpro"), true)
    finally:
        del FORMS["two_power_laws"]
