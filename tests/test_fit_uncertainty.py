"""Uncertainty: bootstrap interval coverage, bootstrap over runs, fit-window sensitivity."""

import numpy as np
import pytest

from sweepjax.fit import FORMS, bootstrap, bootstrap_many, fit, predict, window_sensitivity

FORM = FORMS["power_law_offset"]
TRUE = dict(A=5.0, alpha=0.5, E=1.0)
X = np.geomspace(10, 1e4, 32)
MU = predict(FORM, FORM.from_natural(TRUE), X)


def test_bootstrap_interval_covers_the_true_exponent_at_its_level():
    # 100 synthetic sweeps of 8 seeds x 16 widths, 1% noise per run; defaults: bootstrap
    # over runs, median over seeds, Huber delta 1e-3, 95% percentile interval
    n_sets, n_seeds, sigma = 100, 8, 0.01
    x = X[::2]
    mu = predict(FORM, FORM.from_natural(TRUE), x)
    rng = np.random.default_rng(1)
    ys = mu * np.exp(sigma * rng.standard_normal((n_sets, n_seeds, x.size)))
    boots = bootstrap_many(x, ys, "power_law_offset", n_resamples=200, seed=0)
    assert len(boots) == n_sets and all(b.over == "runs" for b in boots)
    ci = np.array([b.ci("alpha") for b in boots])
    covered = np.sum((ci[:, 0] <= TRUE["alpha"]) & (TRUE["alpha"] <= ci[:, 1]))
    assert 88 <= covered <= 99, covered
    assert all(b.converged.mean() > 0.95 for b in boots)
    # each data set's interval brackets its own point estimate
    points = np.array([b.point.params["alpha"] for b in boots])
    assert np.all((ci[:, 0] <= points) & (points <= ci[:, 1]))


def _runs(n_runs=6, seed=3):
    rng = np.random.default_rng(seed)
    x = X[::4]
    y = predict(FORM, FORM.from_natural(TRUE), x) * np.exp(0.01 * rng.standard_normal((n_runs, x.size)))
    y[0, 2] = y[4, 5] = np.nan  # diverged runs
    return x, y


def test_bootstrap_over_runs_is_seeded_and_reduces_by_median():
    x, y = _runs()
    b = bootstrap(x, y, n_resamples=100, seed=7)
    assert b.over == "runs" and b.n_resamples == 100 and b.n_valid == 100
    ref = fit(x, np.nanmedian(y, axis=0))
    assert b.point.params == pytest.approx(ref.params, rel=1e-9)
    again = bootstrap(x, y, n_resamples=100, seed=7)
    np.testing.assert_array_equal(again.samples["alpha"], b.samples["alpha"])
    other = bootstrap(x, y, n_resamples=100, seed=8)
    assert not np.array_equal(other.samples["alpha"], b.samples["alpha"])
    lo, hi = b.ci("alpha")
    assert lo < b.point.params["alpha"] < hi
    assert b.ci("alpha", level=0.5)[1] - b.ci("alpha", level=0.5)[0] < hi - lo
    mean = bootstrap(x, y, n_resamples=20, seed=7, reduce="mean")
    assert mean.point.params == pytest.approx(fit(x, np.nanmean(y, axis=0)).params, rel=1e-9)
    assert "alpha" in b.summary() and list(b.table().index) == ["A", "E", "alpha"]


def test_bootstrap_over_points_resamples_points():
    x, y = _runs()
    b = bootstrap(x, y[1], n_resamples=50, seed=0)
    assert b.over == "points"
    assert np.nanstd(b.samples["alpha"]) > 0
    # a single run given as (1, n) resamples its points too, leaving out its missing point
    one = bootstrap(x, y[:1], n_resamples=50, seed=0)
    assert one.over == "points" and one.point.n_points == x.size - 1


def test_window_sensitivity_shows_a_missing_offset():
    # a pure power law fitted to data with an offset: the exponent falls as small sizes go
    table = window_sensitivity(X, MU, "power_law", drop_small=range(0, 8, 2), drop_large=[0])
    assert list(table["drop_small"]) == [0, 2, 4, 6]
    assert np.all(np.diff(table["alpha"]) < -0.005)
    assert table["x_min"].is_monotonic_increasing and (table["x_max"] == X.max()).all()
    # the right form gives the same exponent in every window
    right = window_sensitivity(X, MU, "power_law_offset")
    assert len(right) == 9 and right["converged"].all()
    np.testing.assert_allclose(right["alpha"], TRUE["alpha"], rtol=1e-6)
    assert (right["n_points"] == [32, 31, 30, 31, 30, 29, 30, 29, 28]).all()
