"""Diverged members count as the worst loss (+inf) in width fits, not as missing (survivorship bias)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import xarray as xr

from sweepjax import fit as sf
from sweepjax.analysis.scaling import describe, width_scaling
from sweepjax.fit.inputs import reduce_runs

WIDTHS = np.array([8, 16, 32, 64, 128])
SEEDS = 16


def sweep(diverged: dict[int, int], not_run: dict[int, int] = {}, seed: int = 0) -> xr.Dataset:
    """Synthetic results: loss = 2 width^-0.7 (lognormal noise 0.05) over (seed, width); at width w the
    first ``diverged[w]`` seeds diverged (NaN loss, flag set), the last ``not_run[w]`` were not run (NaN)."""
    rng = np.random.default_rng(seed)
    loss = 2.0 * WIDTHS ** -0.7 * np.exp(0.05 * rng.standard_normal((SEEDS, len(WIDTHS))))
    div = np.zeros(loss.shape, bool)
    for w, n in diverged.items():
        div[:n, list(WIDTHS).index(w)] = True
    for w, n in not_run.items():
        loss[SEEDS - n:, list(WIDTHS).index(w)] = np.nan
    loss[div] = np.nan
    return xr.Dataset({"final_test_loss": (("seed", "width"), loss), "diverged": (("seed", "width"), div)},
                      coords={"seed": np.arange(SEEDS), "width": WIDTHS})


def test_reduce_runs_counts_inf_as_worst_and_ignores_nan():
    y = np.array([[1.0, 1.0, 1.0, np.nan],
                  [2.0, 2.0, np.inf, 5.0],
                  [3.0, np.inf, np.inf, 3.0],
                  [np.nan, np.nan, np.inf, np.inf]])
    np.testing.assert_array_equal(reduce_runs(y, "median"), [2.0, 2.0, np.inf, 5.0])
    np.testing.assert_array_equal(reduce_runs(y, "mean"), [2.0, np.inf, np.inf, np.inf])
    # 1000 runs (numpy's other nanmedian path): 499 of 1000 inf is a finite median, 500 is not.
    big = np.tile(np.arange(1000.0)[:, None], (1, 3))
    big[:499, 0] = big[:500, 1] = np.inf
    np.testing.assert_array_equal(reduce_runs(big, "median"), [998.5, np.inf, 499.5])


def test_majority_diverged_width_is_left_out_and_reported():
    rows = width_scaling(sweep({128: 12, 32: 6}), n_boot=0)
    (row,) = rows
    assert row["unfitted_widths"] == [128] and row["widths"] == [8, 16, 32, 64]
    assert row["all_widths"] == WIDTHS.tolist()
    assert row["diverged_per_width"] == [0, 0, 6, 0, 12] and row["seeds_per_width"] == [SEEDS] * 5
    assert np.isfinite(row["alpha"]) and json.loads(json.dumps(rows))[0]["diverged_per_width"] == [0, 0, 6, 0, 12]
    line = describe(row)
    assert "\n" not in line and "32:6/16" in line and "128:12/16" in line and "128 not fitted" in line


def test_minority_diverged_pushes_the_median_up():
    ds = sweep({32: 6})
    (row,) = width_scaling(ds, n_boot=0)
    at32 = ds["final_test_loss"].sel(width=32).values
    survivors = np.median(at32[6:])
    expected = np.median(np.where(ds["diverged"].sel(width=32).values, np.inf, at32))
    assert np.isfinite(expected) and expected > survivors
    assert row["median_loss"][row["widths"].index(32)] == pytest.approx(expected, rel=1e-12)
    assert row["unfitted_widths"] == []


def test_members_not_run_stay_ignored():
    ds = sweep({}, not_run={16: 10})
    (row,) = width_scaling(ds, n_boot=0)
    at16 = ds["final_test_loss"].sel(width=16).values
    assert row["seeds_per_width"][1] == 6 and row["diverged_per_width"] == [0] * 5
    assert row["median_loss"][1] == pytest.approx(np.nanmedian(at16), rel=1e-12)
    assert "diverged" not in describe(row)


def test_bootstrap_drops_a_width_from_resamples_where_its_median_is_inf():
    ds = sweep({128: 12})
    y = ds["final_test_loss"].transpose("seed", "width").values
    boot = sf.bootstrap(WIDTHS, np.where(ds["diverged"].values, np.inf, y), form="power_law",
                        n_resamples=200, seed=0)
    # P(8 or more of 16 draws survive) < 1%: almost every resample is the fit on the other widths.
    rest = sf.bootstrap(WIDTHS[:4], y[:, :4], form="power_law", n_resamples=200, seed=0)
    assert boot.point.n_points == 4 and boot.n_valid == 200
    assert np.isclose(boot.samples["alpha"], rest.samples["alpha"], rtol=1e-6).mean() > 0.95


def test_bootstrap_counts_diverged_as_worst_and_reaches_flatter():
    ds = sweep({128: 7})
    (row,) = width_scaling(ds, form="power_law", n_boot=200)
    (old,) = width_scaling(ds.drop_vars("diverged"), form="power_law", n_boot=200)  # diverged as missing
    # No resample is thrown away (that would condition the interval on survival): in the ~40% of
    # resamples where 8 or more of the 16 draws diverged, width 128 is dropped from that fit instead.
    assert row["boot_failed"] == 0 and row["widths"] == WIDTHS.tolist()
    # Seven diverged seeds push the largest width's loss up: a flatter law, and an interval reaching lower.
    assert row["median_loss"][-1] > old["median_loss"][-1]
    assert row["alpha"] < old["alpha"]
    assert row["alpha_ci"][0] < old["alpha_ci"][0]


def test_too_few_fittable_widths_gives_a_note_not_a_traceback():
    (row,) = width_scaling(sweep({16: 8, 32: 9, 64: 16, 128: 10}), n_boot=10)
    assert row["alpha"] is None and row["widths"] == [8] and "no fit" in row["note"]
    line = describe(row)
    assert "\n" not in line and "no fit" in line and "16, 32, 64, 128 not fitted" in line


def test_slice_with_every_member_diverged_gives_a_note_not_a_traceback():
    """A slice where every width diverged (e.g. the too-large lr of an lr sweep) is a note; fitting the
    other slices goes on (it raised IndexError in the fit library's input check)."""
    (row,) = width_scaling(sweep({int(w): SEEDS for w in WIDTHS}), n_boot=10)
    assert row["alpha"] is None and row["widths"] == [] and "no points" in row["note"]


def test_below_floor_member_is_left_out_with_one_warning_line():
    ds = sweep({})
    ds["final_test_loss"][3, 2] = -1e-6
    log = io.StringIO()
    (row,) = width_scaling(ds, n_boot=0, log=log)
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: ") and "width 32 seed 3" in lines[0]
    assert row["n_below_floor"] == 1 and row["seeds_per_width"][2] == SEEDS - 1 and np.isfinite(row["alpha"])


def test_scaling_figure_with_diverged_and_unfittable_slices(tmp_path):
    from sweepjax.analysis.scaling import plot_scaling
    ds = xr.concat([sweep({128: 12, 32: 6}), sweep({16: 8, 32: 9, 64: 16, 128: 10})], dim="activation")
    ds = ds.assign_coords(activation=["relu", "silu"])
    rows = width_scaling(ds, n_boot=0)
    assert [r["alpha"] is None for r in rows] == [False, True]
    assert plot_scaling(ds, rows, tmp_path / "scaling.png").stat().st_size > 10_000
