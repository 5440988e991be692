"""The inverse-depth analysis (issue 12, parts 3-4 and 6) on constructed results with known answers:
the depth fits (forms, windows, bootstrap over runs), the middle-layer angles, the teachers' measures,
the figures and the files written after a run."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr

from sweepjax.analysis import depth as D

CONFIG = """[task]
name = "teacher"
teacher_depth = 16
teacher_width = 16
teacher_hidden = 32
target = "kl"
test_size = 256

[model]
depth = 4
"""


def results(exponents: dict[float, float], depths=(4, 8, 16, 32), seeds=3, noise=0.02, layers=True) -> xr.Dataset:
    """final_test_loss = 0.1 depth^-a (per temperature) times lognormal noise per seed, and layer update
    angles of pi/2 (+ a per-depth offset) in every layer a member has."""
    rng = np.random.default_rng(0)
    temps = list(exponents)
    depths = np.asarray(depths)
    loss = np.stack([0.1 * depths[None, :] ** -exponents[t] * np.exp(noise * rng.standard_normal((seeds, len(depths))))
                     for t in temps])                                        # (temperature, seed, depth)
    ds = xr.Dataset({"final_test_loss": (("temperature", "seed", "depth"), loss),
                     "diverged": (("temperature", "seed", "depth"), np.zeros(loss.shape, bool))},
                    coords={"temperature": temps, "seed": np.arange(seeds), "depth": depths})
    if layers:
        L = int(depths.max()) + 1
        angle = np.full((len(temps), seeds, len(depths), L), np.nan)
        for j, d in enumerate(depths):
            angle[:, :, j, : d - 1] = np.pi / 2 + 0.01 * j
        ds["layer_update_angle"] = (("temperature", "seed", "depth", "layer"), angle)
        ds["layer_loss"] = (("temperature", "seed", "depth", "layer"), np.where(np.isnan(angle), np.nan, 1.0))
        ds = ds.assign_coords(layer=np.arange(L))
    ds.attrs["sweepjax_config"] = CONFIG
    return ds


def test_depth_fits_recover_the_exponent_with_windows_and_interval():
    rows = D.depth_fits(results({0.1: 1.0, 1.0: 2.0}), n_boot=200)
    windows = {tuple(r["window"]) for r in rows}
    assert windows == {(4, 16), (4, 32), (8, 32)}           # every run of three or more consecutive depths
    assert {r["form"] for r in rows} == {"power_law", "power_law_offset"}
    for t, a in ((0.1, 1.0), (1.0, 2.0)):
        (head,) = [r for r in rows if r["headline"] and r["form"] == "power_law" and r["slice"]["temperature"] == t]
        assert head["window"] == [8, 32] and head["runs"] == 3
        lo, hi = head["alpha_ci"]
        assert abs(head["alpha"] - a) < 0.05 and lo <= head["alpha"] <= hi and 0 < hi - lo < 0.2, head
        np.testing.assert_allclose(head["local_slopes"], a, atol=0.1)
    # three depths: the headline window is all of them
    assert D.headline_window([4, 8, 16]) == (4, 16) and D.headline_window([6, 12, 16, 24]) == (12, 24)


def test_depth_fit_bootstrap_is_over_runs():
    """Noisier runs give a wider interval; one run gives none."""
    quiet, noisy = (next(r for r in D.depth_fits(results({1.0: 1.0}, noise=n), n_boot=200)
                         if r["headline"] and r["form"] == "power_law") for n in (0.01, 0.2))
    assert np.diff(noisy["alpha_ci"]) > 3 * np.diff(quiet["alpha_ci"])
    one = next(r for r in D.depth_fits(results({1.0: 1.0}, seeds=1), n_boot=200) if r["headline"])
    assert one["alpha_ci"] is None and abs(one["alpha"] - 1.0) < 0.1


def test_angle_summary_uses_the_middle_layers_of_each_depth():
    rows = D.angle_summary(results({1.0: 1.0}))
    assert [r["depth"] for r in rows] == [4, 8, 16, 32]
    for j, r in enumerate(rows):
        assert r["middle_update_angle"] == pytest.approx(np.pi / 2 + 0.01 * j) and r["runs"] == 3


def test_teacher_measures_from_the_saved_config():
    (row,) = D.teacher_metrics(results({1.0: 1.0}))
    assert row["teacher"] == "independent"
    assert row["teacher_depth"] == 16 and len(row["layers"]["update_angle"]) == 17
    assert 1.4 < row["middle_update_angle"] < 1.75


def test_analyse_writes_fits_layers_and_figures(tmp_path):
    ds = results({0.01: 1.0, 0.1: 1.1, 1.0: 1.2})
    paths = D.analyse(ds, tmp_path, SimpleNamespace(bootstrap=50, figures=True), [])
    names = {p.name for p in paths}
    assert {"fit.json", "depth.json", "depth_loss.png", "depth_exponents.png", "depth_update_angle.png",
            "depth_layer_loss.png"} <= names
    fits = json.loads((tmp_path / "fit.json").read_text())
    heads = sorted((r["slice"]["temperature"], r["alpha"]) for r in fits if r["headline"] and r["form"] == "power_law")
    assert [t for t, _ in heads] == [0.01, 0.1, 1.0] and np.all(np.diff([a for _, a in heads]) > 0)
    layers = json.loads((tmp_path / "depth.json").read_text())
    assert set(layers) == {"angles", "teachers", "ensembles"} and layers["ensembles"] == []   # no predictions here
    for p in paths:
        if p.suffix == ".png":
            assert p.stat().st_size > 10_000, p
    # without layer measures or a temperature sweep: only the loss figure
    plain = results({1.0: 1.0}, layers=False).isel(temperature=0)
    names = {p.name for p in D.analyse(plain, tmp_path / "b", SimpleNamespace(bootstrap=0, figures=True), [])}
    assert names == {"fit.json", "depth.json", "depth_loss.png"}


def test_diverged_members_leave_depths_out_and_json_stays_strict(tmp_path):
    """2 of 3 runs diverged at depth 32: its median is +inf, so it is not fitted; windows left with fewer
    than three depths have no fit; the files hold null, not Infinity/NaN; the printout names the failures."""
    ds = results({1.0: 1.0}).isel(temperature=0)
    ds["final_test_loss"][:2, 3] = np.nan
    ds["diverged"][:2, 3] = True
    rows = [r for r in D.depth_fits(ds, n_boot=50) if r["form"] == "power_law"]
    by = {tuple(r["window"]): r for r in rows}
    assert by[(8, 32)]["alpha"] is None and "no fit" in by[(8, 32)]["note"] and by[(8, 32)]["unfitted_depths"] == [32]
    assert by[(4, 32)]["fitted_depths"] == [4, 8, 16] and by[(4, 32)]["alpha"] == pytest.approx(1.0, abs=0.1)
    assert by[(8, 32)]["diverged_per_depth"] == [0, 0, 0, 2] and by[(8, 32)]["local_slopes"][2] is None
    D.analyse(ds, tmp_path, SimpleNamespace(bootstrap=20, figures=True), [])
    for name in ("fit.json", "depth.json"):
        json.loads((tmp_path / name).read_text(), parse_constant=lambda c: pytest.fail(f"{name} holds {c}"))
    assert "diverged: 2/3 at depth 32" in D.describe(D.summarize(ds, n_boot=0))


def test_final_values_take_each_members_own_last_evaluation():
    a = np.full((2, 3, 4), np.nan)          # (member, eval_step, layer)
    a[0, :3, :2] = [[1, 1], [2, 2], [3, 3]]
    a[1, :2, :2] = [[5, 5], [6, 6]]          # a shorter run: NaN at the last evaluation
    da = xr.DataArray(a, dims=("depth", "eval_step", "layer"))
    np.testing.assert_array_equal(D.final_values(da).values[:, :2], [[3, 3], [6, 6]])
