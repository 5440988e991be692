"""Model comparison by extrapolation, and the three compute-optimal approaches."""

import numpy as np
import pytest

from sweepjax.fit import (FORMS, FitInputError, compare_forms, envelope, fit, from_joint_fit,
                          isoflop, predict, tokens_for)

LAW = dict(A=406.4, alpha=0.34, B=410.7, beta=0.28, E=1.69)  # Hoffmann et al. (2022)
A_TRUE = LAW["beta"] / (LAW["alpha"] + LAW["beta"])  # N_opt ∝ C^a


def _law(n, d):
    form = FORMS["joint_nd"]
    return predict(form, form.from_natural(LAW), {"N": n, "D": d})


def test_compare_forms_ranks_by_extrapolation_error():
    form = FORMS["power_law_offset"]
    x = np.geomspace(16, 16384, 12)
    rng = np.random.default_rng(0)
    y = predict(form, form.from_natural(dict(A=5.0, alpha=0.45, E=1.2)), x)
    y = y * np.exp(0.002 * rng.standard_normal(x.size))
    table = compare_forms(x, y, ["power_law", "exponential", "power_law_offset"], holdout=3)
    assert list(table.index) == [1, 2, 3]
    assert table.iloc[0]["form"] == "power_law_offset"
    assert table["extrap_mare"].is_monotonic_increasing
    # the metric is the mean absolute relative error on the 3 largest sizes
    res = fit(x[:-3], y[:-3], "power_law")
    mare = np.mean(np.abs(res.predict(x[-3:]) - y[-3:]) / y[-3:])
    row = table[table["form"] == "power_law"].iloc[0]
    assert row["extrap_mare"] == pytest.approx(mare, rel=1e-6)
    rmsle = np.sqrt(np.mean(np.log(res.predict(x[-3:]) / y[-3:]) ** 2))
    assert row["extrap_rmsle"] == pytest.approx(rmsle, rel=1e-6)
    with pytest.raises(FitInputError, match="holdout"):
        compare_forms(x, y, ["power_law"], holdout=11)


def test_approach3_closed_form_matches_numeric_and_respects_the_budget():
    n, d = (g.ravel() for g in np.meshgrid(np.geomspace(1e7, 1e9, 4), np.geomspace(1e9, 1e11, 4)))
    res = fit({"N": n, "D": d}, _law(n, d), "joint_nd",
              starts={"a": [6.0], "b": [6.0], "e": [0.5], "alpha": [0.3], "beta": [0.3]})
    budgets = np.geomspace(1e19, 1e23, 5)
    closed = from_joint_fit(res, budgets)
    numeric = from_joint_fit(res, budgets, flops=lambda N, D: 6 * N * D)
    np.testing.assert_allclose(numeric.frontier["n_opt"], closed.frontier["n_opt"], rtol=1e-5)
    assert closed.a == pytest.approx(A_TRUE, rel=1e-5)
    assert closed.b == pytest.approx(1 - A_TRUE, rel=1e-5)
    # another FLOP function: the optimum lies on the budget and beats its neighbours
    flops = lambda N, D: 6 * N * D + 1e4 * N  # noqa: E731
    other = from_joint_fit(res, budgets, flops=flops)
    f = other.frontier
    np.testing.assert_allclose(flops(f["n_opt"], f["d_opt"]), budgets, rtol=1e-9)
    for scale in (0.9, 1.1):
        n2 = f["n_opt"] * scale
        assert np.all(res.predict({"N": n2, "D": tokens_for(n2, budgets, flops)}) > f["loss"])


def test_approach3_refuses_a_law_that_does_not_fall_in_both_variables():
    """Review of the graph-walk run: a 2-D fit with a negative exponent gave complex N_opt (a negative float
    to a fractional power) and crashed the study's JSON; now refused with the parameters named."""
    import dataclasses
    n, d = (g.ravel() for g in np.meshgrid(np.geomspace(1e7, 1e9, 4), np.geomspace(1e9, 1e11, 4)))
    res = fit({"N": n, "D": d}, _law(n, d), "joint_nd",
              starts={"a": [6.0], "b": [6.0], "e": [0.5], "alpha": [0.3], "beta": [0.3]})
    bad = dataclasses.replace(res, params={**res.params, "alpha": -0.2})
    with pytest.raises(FitInputError, match="non-positive"):
        from_joint_fit(bad, np.geomspace(1e19, 1e23, 5))


def test_approach2_isoflop_parabolas():
    compute, sizes = [], []
    for c in np.geomspace(1e18, 1e21, 6):
        n_star = (LAW["alpha"] * LAW["A"] / (LAW["beta"] * LAW["B"])) ** (
            1 / (LAW["alpha"] + LAW["beta"])) * (c / 6) ** A_TRUE
        for n in n_star * np.geomspace(0.25, 4, 9):
            compute.append(c)
            sizes.append(n)
    compute, sizes = np.array(compute), np.array(sizes)
    out = isoflop(compute, sizes, _law(sizes, compute / (6 * sizes)))
    assert len(out.frontier) == 6 and out.frontier["inside"].all()
    assert out.a == pytest.approx(A_TRUE, abs=0.01)
    assert out.b == pytest.approx(1 - A_TRUE, abs=0.01)


def test_approach1_envelope_of_training_curves():
    sizes = np.geomspace(1e7, 1e10, 13)
    tokens = np.geomspace(1e8, 1e13, 200)
    compute = 6 * sizes[:, None] * tokens[None, :]
    loss = _law(np.broadcast_to(sizes[:, None], compute.shape).ravel(),
                np.broadcast_to(tokens, compute.shape).ravel()).reshape(compute.shape)
    out = envelope(compute, loss, sizes, n_points=30)
    inner = out.frontier[(out.frontier["n_opt"] > sizes[0]) & (out.frontier["n_opt"] < sizes[-1])]
    assert len(inner) > 10
    assert out.a == pytest.approx(A_TRUE, abs=0.06)
    assert np.all(np.diff(out.frontier["loss"]) <= 0)
