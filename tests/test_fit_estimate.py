"""Estimation: multi-start beats a single start on a hard surface, convergence is
reported, the Huber loss is summed over points, weights act per point."""

import numpy as np
import pytest

from sweepjax.fit import FORMS, fit, predict

BROKEN = FORMS["broken_power_law"]
X = np.geomspace(10, 1e5, 16)
TRUE = dict(A=9.0, alpha1=0.15, alpha2=0.8, x_b=800.0, E=0.4)
# a start in the wrong basin: break far beyond the data, steep slopes, no offset
BAD_START = dict(a=5.0, alpha1=2.0, alpha2=2.0, log_x_b=np.log(1e6), e=-5.0)


@pytest.fixture(scope="module")
def noisy():
    rng = np.random.default_rng(0)
    return X, predict(BROKEN, BROKEN.from_natural(TRUE), X) * np.exp(0.01 * rng.standard_normal(X.size))


def test_many_starts_beat_a_single_start_on_a_hard_surface(noisy):
    x, y = noisy
    many = fit(x, y, "broken_power_law")
    single = fit(x, y, "broken_power_law", starts=BAD_START)
    assert many.n_starts > 100 and single.n_starts == 1
    assert many.converged
    assert many.objective < 0.5 * single.objective
    assert many.params["x_b"] == pytest.approx(TRUE["x_b"], rel=0.2)
    assert many.params["alpha2"] == pytest.approx(TRUE["alpha2"], abs=0.05)
    # the spread is over the starts that reached the best objective
    assert many.n_near_best >= 2
    assert all(v < 1e-3 * (1 + abs(many.params[k])) for k, v in many.start_spread.items())


def test_non_convergence_is_reported(noisy):
    x, y = noisy
    short = fit(x, y, "broken_power_law", starts=BAD_START, max_iter=5)
    assert not short.converged and short.n_converged == 0
    assert "DID NOT CONVERGE" in short.summary()


def test_huber_loss_is_summed_over_points(noisy):
    x, y = noisy
    delta = 1e-3
    res = fit(x, y, "broken_power_law", delta=delta)
    r = np.log(y) - np.log(res.predict(x))
    huber = np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))
    assert res.objective == pytest.approx(huber.sum(), rel=1e-8)
    assert res.objective > 2 * huber.mean()


def test_zero_weight_drops_a_point_and_weights_scale_the_loss():
    form = FORMS["power_law_offset"]
    x = np.geomspace(16, 16384, 14)
    y = predict(form, form.from_natural(dict(A=5.0, alpha=0.45, E=1.2)), x)
    y_bad = y.copy()
    y_bad[3] *= 3.0  # an outlier
    w = np.ones(14)
    w[3] = 0.0
    res = fit(x, y_bad, weights=w)
    assert res.n_points == 13
    assert res.params["alpha"] == pytest.approx(0.45, rel=1e-6)
    doubled = fit(x, y_bad, weights=2 * np.ones(14))
    once = fit(x, y_bad)
    assert doubled.objective == pytest.approx(2 * once.objective, rel=1e-6)
