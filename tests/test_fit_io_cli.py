"""Fitting engine results (xarray / NetCDF directory), tables, and the `sweepjax fit` CLI."""

import argparse
import io
import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from sweepjax.analysis.scaling import width_scaling
from sweepjax.fit import FitInputError, fit, fit_results, sweep_slices
from sweepjax.fit.cli import add_fit_parser, run_fit

WIDTHS = np.array([16, 32, 64, 128, 256, 512, 1024])
TRUE = {"relu": dict(A=5.0, alpha=0.5, E=1.0), "gelu": dict(A=6.0, alpha=0.4, E=0.9)}


@pytest.fixture(scope="module")
def sweep():
    """A synthetic engine result: seed x activation x width (+ eval_step curves)."""
    rng = np.random.default_rng(0)
    acts = list(TRUE)
    law = np.stack([p["E"] + p["A"] * WIDTHS ** -p["alpha"] for p in TRUE.values()])
    loss = law[None] * np.exp(0.003 * rng.standard_normal((5, 2, WIDTHS.size)))
    diverged = np.zeros(loss.shape, bool)
    diverged[1, 0, 3] = diverged[3, 1, 0] = True
    loss[diverged] = np.nan
    dims = ("seed", "activation", "width")
    return xr.Dataset(
        {"final_test_loss": (dims, loss), "diverged": (dims, diverged),
         "n_params": (dims, np.broadcast_to(3.0 * WIDTHS**2, loss.shape)),
         "test_loss": (dims + ("eval_step",), np.repeat(loss[..., None], 3, axis=-1))},
        coords={"seed": np.arange(5), "activation": acts, "width": WIDTHS,
                "eval_step": [10, 20, 30]})


def test_fit_results_fits_each_remaining_slice(sweep, tmp_path):
    sweep.to_netcdf(tmp_path / "results.nc", engine="h5netcdf")
    out = fit_results(tmp_path, x="width", y="final_test_loss")
    assert set(out) == set(TRUE)
    for act, res in out.items():
        assert res.converged
        assert res.params["alpha"] == pytest.approx(TRUE[act]["alpha"], abs=0.02)
        worst = sweep["final_test_loss"].where(~sweep["diverged"], np.inf)  # diverged = the worst loss
        med = np.median(worst.sel(activation=act).values, axis=0)
        assert res.params == pytest.approx(fit(WIDTHS, med).params, rel=1e-9)
    # a diverged member counts as the worst loss whatever its stored loss
    bad = sweep.copy(deep=True)
    bad["final_test_loss"][1, 0, 3] = 1e6
    assert fit_results(bad)["relu"].params == pytest.approx(out["relu"].params, rel=1e-9)
    # x may be a size variable; one activation selected leaves a single fit
    single = fit_results(sweep.sel(activation=["gelu"]), x="n_params", reduce="mean")
    assert single.params["alpha"] == pytest.approx(TRUE["gelu"]["alpha"] / 2, abs=0.01)


def test_slices_and_tables(sweep):
    parts = sweep_slices(sweep)
    assert parts["relu"].x.shape == (7, 1) and parts["relu"].y.shape == (5, 7)
    assert np.isposinf(parts["relu"].y).sum() == 1 and not np.isnan(parts["relu"].y).any()
    assert parts["relu"].sel == {"activation": "relu"} and parts["relu"].label == "final test loss"
    table = sweep[["final_test_loss", "diverged"]].to_dataframe().reset_index()
    by_table = fit_results(table, by="activation")
    assert by_table["gelu"].params == pytest.approx(fit_results(sweep)["gelu"].params, rel=1e-9)
    with pytest.raises(FitInputError, match="not unique"):
        fit_results(table)
    with pytest.raises(FitInputError, match="over='run'"):
        sweep_slices(sweep, over="run")


def test_width_fit_fit_results_and_cli_agree(tmp_path, capsys):
    """The width fit after a run, fit_results and `sweepjax fit` read results through one path
    (sweep_slices): the loss floor subtracted, a diverged member the worst loss (+inf), a member
    below the floor left out with one warning line."""
    rng = np.random.default_rng(1)
    bayes, seeds = 2.0, 5
    loss = bayes + 0.5 * WIDTHS ** -0.8 * np.exp(0.02 * rng.standard_normal((seeds, WIDTHS.size)))
    diverged = np.zeros(loss.shape, bool)
    diverged[2, 4] = True
    loss[diverged] = np.nan
    loss[0, 1] = bayes - 1e-6
    ds = xr.Dataset({"final_test_loss": (("seed", "width"), loss),
                     "diverged": (("seed", "width"), diverged), "test_bayes_loss": ((), bayes)},
                    coords={"seed": np.arange(seeds), "width": WIDTHS})
    part = sweep_slices(ds, log=None)[None]
    assert part.label == "final test loss - test-set Bayes loss (nats)" and part.n_below_floor == 1
    assert np.isposinf(part.y[2, 4]) and np.isnan(part.y[0, 1])
    np.testing.assert_allclose(part.y[1], loss[1] - bayes, rtol=1e-12)

    log = io.StringIO()
    (row,) = width_scaling(ds, n_boot=50, log=log)
    res = fit_results(ds, form="power_law", log=log)
    assert res.params == pytest.approx(row["params"], rel=1e-9)
    first, second = log.getvalue().splitlines()
    assert first == second and "1 member(s) at or below the loss floor" in first
    table = ds.to_dataframe().reset_index()   # test_bayes_loss and diverged as columns
    assert fit_results(table, form="power_law", log=None).params == pytest.approx(row["params"], rel=1e-9)
    raw = fit_results(ds, form="power_law", floor=False, log=None)   # the loss as stored
    assert raw.params["alpha"] < 0.1 < row["alpha"]

    ds.to_netcdf(tmp_path / "results.nc", engine="h5netcdf")
    rc, out, err = _cli([str(tmp_path), "--form", "power_law", "--bootstrap", "50", "--drop", "0",
                         "--json", str(tmp_path / "fit.json")], capsys)
    assert rc == 0 and err.splitlines() == [first]
    (entry,) = json.loads((tmp_path / "fit.json").read_text())
    assert "Bayes" in out and entry["y"] == row["loss"]
    assert entry["params"] == pytest.approx(row["params"], rel=1e-6)
    assert entry["ci"]["alpha"] == pytest.approx(row["alpha_ci"], rel=1e-6)


def _cli(argv, capsys):
    parser = argparse.ArgumentParser(prog="sweepjax")
    add_fit_parser(parser.add_subparsers(dest="command"))
    rc = run_fit(parser.parse_args(["fit", *argv]))
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_on_a_csv_file(sweep, tmp_path, capsys):
    csv = tmp_path / "sweep.csv"
    sweep[["final_test_loss", "diverged"]].to_dataframe().reset_index().to_csv(csv, index=False)
    rc, out, err = _cli([str(csv), "--x", "width", "--y", "final_test_loss", "--by", "activation",
                         "--bootstrap", "50", "--holdout", "2", "--compare",
                         "power_law,power_law_offset", "--plot", str(tmp_path / "fit.png"),
                         "--json", str(tmp_path / "fit.json")], capsys)
    assert rc == 0, err
    assert "alpha" in out and "95% CI (bootstrap over runs, 50 resamples)" in out
    assert "fit-window sensitivity" in out and "converged" in out
    report = json.loads((tmp_path / "fit.json").read_text())
    assert [r["key"] for r in report] == ["gelu", "relu"]
    for r in report:
        lo, hi = r["ci"]["alpha"]
        assert lo <= r["params"]["alpha"] <= hi
        assert len(r["windows"]) == 9 and r["compare"][0]["form"] == "power_law_offset"
        assert (tmp_path / r["plot"].split("/")[-1]).stat().st_size > 10_000


def test_cli_on_a_results_directory(sweep, tmp_path, capsys):
    sweep.sel(activation="relu").to_netcdf(tmp_path / "results.nc", engine="h5netcdf")
    rc, out, err = _cli([str(tmp_path), "--bootstrap", "0", "--drop", "1"], capsys)
    assert rc == 0, err
    assert "form power_law_offset" in out and "(no bootstrap)" in out and "==" not in out


@pytest.mark.parametrize("argv,message", [
    (["/no/such/dir"], "no such file"),
    (["{dir}", "--y", "nope"], "no variable 'nope'"),
    (["{dir}", "--x", "depth"], "no dimension or variable 'depth'"),
    (["{dir}", "--form", "joint_nd", "--x", "width"], "lacks variable|takes variables"),
])
def test_cli_bad_input_is_one_line_error(sweep, tmp_path, capsys, argv, message):
    sweep.to_netcdf(tmp_path / "results.nc", engine="h5netcdf")
    rc, out, err = _cli([a.format(dir=tmp_path) for a in argv], capsys)
    assert rc == 2
    assert err.startswith("error:") and err.count("\n") == 1
    assert pd.Series([err]).str.contains(message).all(), err
