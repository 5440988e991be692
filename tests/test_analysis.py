"""Ensemble and mirror-pair analyses on data with known answers."""
from __future__ import annotations

import numpy as np

from sweepjax.analysis.ensemble import ensemble_losses
from sweepjax.analysis.mirror import mirror_distances, mirror_fraction


def test_ensemble_of_independent_errors_cuts_loss_by_k():
    """Members = target + independent noise of variance s^2: the K-average has MSE ~ s^2 / K."""
    rng = np.random.default_rng(0)
    target = np.sin(np.linspace(-2, 2, 400))
    pred = target + 0.1 * rng.standard_normal((256, 400))
    pred[3] = np.nan  # a diverged member is dropped
    losses = ensemble_losses(pred, target, [1, 4, 16, 64], draws=50, seed=1)
    for k, v in losses.items():
        assert abs(np.median(v) / (0.01 / k) - 1) < 0.15, k


def test_ensemble_of_identical_members_does_not_improve():
    target = np.linspace(0, 1, 50)
    pred = np.tile(target + 0.3, (10, 1))
    losses = ensemble_losses(pred, target, [1, 8], draws=5)
    np.testing.assert_allclose(losses[8], losses[1])


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
