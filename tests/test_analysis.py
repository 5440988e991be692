"""Ensemble, mirror-pair and width-scaling analyses on data with known answers."""
from __future__ import annotations

import io

import numpy as np
import pytest
import xarray as xr

from sweepjax.analysis.mirror import mirror_distances, mirror_fraction
from sweepjax.analysis.scaling import describe, fitted_loss, width_scaling
from sweepjax.ensemble import ensemble_losses


def test_ensemble_of_independent_errors_cuts_loss_by_k():
    """Members = target + independent noise of variance s^2: the K-average has MSE ~ s^2 / K."""
    rng = np.random.default_rng(0)
    target = np.sin(np.linspace(-2, 2, 400))
    pred = target + 0.1 * rng.standard_normal((256, 400))
    pred[3] = np.nan  # a diverged member is dropped
    ks = [1, 4, 16, 64]
    losses = ensemble_losses(pred, target, ks, draws=50, seed=1)
    for k, v in zip(ks, losses):
        assert abs(np.median(v) / (0.01 / k) - 1) < 0.15, k


def test_ensemble_of_identical_members_does_not_improve():
    target = np.linspace(0, 1, 50)
    pred = np.tile(target + 0.3, (10, 1))
    losses = ensemble_losses(pred, target, [1, 8], draws=5)
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-6)


def test_mirror_pairs_found_and_absent():
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=500), rng.normal(size=500)
    mirrored_w = np.concatenate([w, -w + 1e-4 * rng.normal(size=500)])
    mirrored_b = np.concatenate([b, b + 1e-4 * rng.normal(size=500)])
    assert mirror_fraction(mirrored_w, mirrored_b, tol=0.01) == 1.0
    # Copies (w, b) are duplicates, not mirrors.
    assert mirror_fraction(np.concatenate([w, w]), np.concatenate([b, b]), tol=0.01) < 0.05
    # Distances are scale free.
    np.testing.assert_allclose(mirror_distances(3 * mirrored_w, 3 * mirrored_b),
                               mirror_distances(mirrored_w, mirrored_b), rtol=1e-9)


def markov_results(offset: float = 0.017, seeds: int = 3) -> xr.Dataset:
    """Synthetic Markov results: final loss = test Bayes loss + 0.5 width^-1 exactly, and an entropy rate
    ``offset`` nats below the test set's Bayes loss (its sampling offset)."""
    widths = np.array([16, 32, 64, 128, 256])
    bayes = 2.377
    loss = np.tile(bayes + 0.5 / widths, (seeds, 1))
    return xr.Dataset({"final_test_loss": (("seed", "width"), loss),
                       "diverged": (("seed", "width"), np.zeros(loss.shape, bool)),
                       "irreducible_loss": ((), bayes - offset), "test_bayes_loss": ((), bayes)},
                      coords={"seed": np.arange(seeds), "width": widths})


def test_width_fit_subtracts_the_test_sets_bayes_loss():
    ds = markov_results()
    (row,) = width_scaling(ds, n_boot=0)
    assert row["alpha"] == pytest.approx(1.0, abs=1e-4)
    assert "Bayes" in row["loss"] and "Bayes" in fitted_loss(ds)[1] and "Bayes" in describe(row)
    np.testing.assert_allclose(row["median_loss"], 0.5 / ds["width"].values, rtol=1e-9)
    # Subtracting the entropy rate (all that results saved before test_bayes_loss allow) leaves the
    # offset in the excess and flattens the law: a clearly different exponent.
    (old,) = width_scaling(ds.drop_vars("test_bayes_loss"), n_boot=0)
    assert "entropy rate" in old["loss"] and old["alpha"] < 0.8


def test_non_positive_excess_is_left_out_with_one_warning_line():
    ds = markov_results()
    ds["final_test_loss"][1, 4] = ds["test_bayes_loss"] - 1e-7        # below the floor (rounding, chance or a bug)
    log = io.StringIO()
    (row,) = width_scaling(ds, n_boot=0, log=log)
    (line,) = log.getvalue().splitlines()
    assert line.startswith("warning: ") and "width 256 seed 1" in line and "left out" in line
    assert row["n_below_floor"] == 1 and row["seeds_per_width"][-1] == 2
    assert row["alpha"] == pytest.approx(1.0, abs=1e-4)
