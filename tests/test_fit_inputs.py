"""Bad input raises FitInputError (a ValueError) with a one-line message."""

import numpy as np
import pytest

from sweepjax.fit import FitInputError, bootstrap, fit

X = np.geomspace(16, 1024, 7)
Y = 1.0 + 5.0 * X ** -0.5


def _raises(match, *args, **kw):
    with pytest.raises(FitInputError, match=match) as err:
        fit(*args, **kw)
    assert isinstance(err.value, ValueError)
    assert "\n" not in str(err.value)


def test_nan_loss():
    y = Y.copy()
    y[2] = np.nan
    _raises("NaN", X, y)


def test_non_positive_loss():
    y = Y.copy()
    y[4] = 0.0
    _raises("positive", X, y)
    _raises("positive", X, -Y)


def test_fewer_points_than_parameters():
    _raises("fewer points than parameters", X[:2], Y[:2], "power_law_offset")


def test_single_distinct_x():
    _raises("single distinct value", np.full(7, 64.0), Y)


def test_mismatched_lengths():
    _raises("lengths must match", X, Y[:-1])
    _raises("mismatched lengths", {"N": X, "D": X[:-1]}, Y, "joint_nd")


def test_other_bad_input():
    _raises("unknown form", X, Y, "no_such_form")
    _raises("unknown method", X, Y, method="nope")
    _raises("varpro", {"N": X, "D": X[::-1]}, Y, "kaplan", method="varpro")
    _raises("x must be positive", -X, Y)
    _raises("lacks variable", {"N": X}, Y, "joint_nd")
    _raises("weights", X, Y, weights=-np.ones(7))
    with pytest.raises(FitInputError, match="runs"):
        fit(X, np.stack([Y, Y]))  # 2-D y is for bootstrap over runs
    with pytest.raises(FitInputError, match="level"):
        bootstrap(X, Y, level=1.5)
