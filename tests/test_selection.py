"""Best over a hyperparameter axis (the learning rate per size), with diverged runs as the worst."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from sweepjax.analysis.selection import best_over

WIDTHS, LRS, SEEDS = np.array([8, 16, 32, 64]), np.array([1e-3, 3e-3, 1e-2]), 5


def sweep() -> xr.Dataset:
    """loss = width^-1 x (1 + (log10 lr - log10 best(width))^2) with noise, best lr falling as 1/width:
    width 8 -> 1e-2, 16 -> 1e-2, 32 -> 3e-3, 64 -> 1e-3."""
    rng = np.random.default_rng(0)
    best = {8: 1e-2, 16: 1e-2, 32: 3e-3, 64: 1e-3}
    loss = np.empty((SEEDS, len(WIDTHS), len(LRS)))
    for j, w in enumerate(WIDTHS):
        for k, lr in enumerate(LRS):
            loss[:, j, k] = (1 + (np.log10(lr) - np.log10(best[int(w)])) ** 2) / w
    loss *= np.exp(0.01 * rng.standard_normal(loss.shape))
    dims = ("seed", "width", "lr")
    return xr.Dataset({"final_test_loss": (dims, loss), "diverged": (dims, np.zeros(loss.shape, bool)),
                       "test_loss": (dims + ("eval_step",), np.repeat(loss[..., None], 2, -1)),
                       "n_params": (("width",), 3 * WIDTHS)},
                      coords={"seed": np.arange(SEEDS), "width": WIDTHS, "lr": LRS, "eval_step": [0, 10]})


def test_best_lr_per_width_and_its_losses():
    ds = sweep()
    out = best_over(ds, "lr")
    assert "lr" not in out.dims and out["final_test_loss"].dims == ("seed", "width")
    np.testing.assert_array_equal(out["best_lr"].values, [1e-2, 1e-2, 3e-3, 1e-3])
    np.testing.assert_array_equal(out["best_lr_at_edge"].values, [True, True, False, True])
    assert out["best_lr_valid"].all()
    for w, lr in zip(WIDTHS, out["best_lr"].values):   # every variable with the lr dim is the winner's
        np.testing.assert_array_equal(out["final_test_loss"].sel(width=w), ds["final_test_loss"].sel(width=w, lr=lr))
        np.testing.assert_array_equal(out["test_loss"].sel(width=w), ds["test_loss"].sel(width=w, lr=lr))
    np.testing.assert_array_equal(out["n_params"], ds["n_params"])   # variables without the dim untouched


def test_an_lr_where_most_seeds_diverged_does_not_win():
    """At width 8 the best lr (1e-2) diverges for 3 of 5 seeds whose survivors are excellent: with diverged
    runs as the worst loss its median is +inf and 3e-3 wins (dropping them would pick 1e-2)."""
    ds = sweep()
    at = dict(width=8, lr=1e-2)
    ds["diverged"].loc[dict(seed=[0, 1, 2], **at)] = True
    ds["final_test_loss"].loc[dict(seed=[0, 1, 2], **at)] = np.nan
    ds["final_test_loss"].loc[dict(seed=[3, 4], **at)] = 1e-6
    out = best_over(ds, "lr")
    assert float(out["best_lr"].sel(width=8)) == 3e-3
    # every lr diverged at width 16: no valid winner, flagged
    ds["diverged"].loc[dict(width=16)] = True
    out = best_over(ds, "lr")
    assert not bool(out["best_lr_valid"].sel(width=16)) and bool(out["best_lr_valid"].sel(width=32))


def test_width_fit_on_the_best_lr():
    from sweepjax.analysis.scaling import width_scaling
    (row,) = width_scaling(best_over(sweep(), "lr"), n_boot=20, log=None)
    assert row["alpha"] == pytest.approx(1.0, abs=0.03)


def test_missing_dim_is_refused():
    with pytest.raises(ValueError, match="no dimension 'depth'"):
        best_over(sweep(), "depth")


def test_a_runs_width_fit_takes_the_best_lr_of_each_size(tmp_path):
    """sweepjax.run.analyse fits width on each size's best lr (one row, alpha ~1), not one row per lr (whose
    slopes are distorted by the lr moving away from each width's best)."""
    import json

    from sweepjax.config import RunConfig
    from sweepjax.run import analyse
    rows = analyse(tmp_path, sweep(), RunConfig(bootstrap=20))
    assert len(rows) == 1 and "lr" not in rows[0]["slice"] and rows[0]["alpha"] == pytest.approx(1.0, abs=0.03)
    assert json.loads((tmp_path / "fit.json").read_text())[0]["alpha"] == pytest.approx(rows[0]["alpha"])
