"""The ensemble API (issue 16, parts 1 and 3): ensemble losses against direct computations, random and
best-K draws, validation vs scoring points, diverged members, the table over a sweep and the CLI."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from sweepjax.ensemble import ensemble_losses, ensemble_table


def members(m=6, p=40, seed=0):
    rng = np.random.default_rng(seed)
    target = np.sin(np.linspace(0, 3, p))
    return target + 0.1 * rng.standard_normal((m, p)) * np.arange(1, m + 1)[:, None], target


def test_random_ensembles_equal_a_direct_computation():
    pred, target = members()
    losses = ensemble_losses(pred, target, [1, 2, 6], draws=50, seed=3)
    assert losses.shape == (3, 50)
    odd = pred[:, 1::2], target[1::2]
    singles = np.mean((odd[0] - odd[1]) ** 2, axis=1)
    assert set(np.round(losses[0], 6)) <= set(np.round(singles, 6))            # K = 1: a member's own loss
    assert len(set(np.round(losses[0], 6))) > 3                                   # ... drawn at random
    np.testing.assert_allclose(losses[2], np.mean((odd[0].mean(0) - odd[1]) ** 2), rtol=1e-5)   # K = all
    pairs = {round(float(np.mean(((odd[0][i] + odd[0][j]) / 2 - odd[1]) ** 2)), 6)
             for i in range(6) for j in range(6) if i < j}
    assert set(np.round(losses[1], 6)) <= pairs


def test_best_k_is_chosen_on_validation_points_not_scoring_points():
    """Member 0 is best on the even (validation) points and worst on the odd (scoring) points: best-1 picks
    it although its scored loss is the worst."""
    target = np.zeros(20)
    pred = np.tile(np.where(np.arange(20) % 2 == 0, 0.5, 0.1), (4, 1))
    pred[0] = np.where(np.arange(20) % 2 == 0, 0.0, 3.0)
    best = ensemble_losses(pred, target, [1, 2], draws=4, mode="best")
    np.testing.assert_allclose(best[0], 9.0, rtol=1e-6)
    np.testing.assert_allclose(best[1], ((3.0 + 0.1) / 2) ** 2, rtol=1e-6)
    with pytest.raises(ValueError, match="mode"):
        ensemble_losses(pred, target, [1], mode="top")


def test_diverged_members_are_left_out_and_counted():
    pred, target = members()
    pred[2] = np.nan
    losses = ensemble_losses(pred, target, [1, 5, 6], draws=30)
    assert np.isfinite(losses[:2]).all() and np.isnan(losses[2]).all()
    ok = np.delete(pred, 2, axis=0)
    np.testing.assert_allclose(losses[1], np.mean((ok[:, 1::2].mean(0) - target[1::2]) ** 2), rtol=1e-5)


def sweep_results(widths=(2, 4, 8), seeds=8):
    """Predictions with independent errors whose size falls with width; n_params = 3 width + 1."""
    rng = np.random.default_rng(1)
    x = np.linspace(-1, 1, 50)
    target = x ** 2
    pred = target + rng.standard_normal((len(widths), seeds, 50)) / np.asarray(widths)[:, None, None]
    pred[0, 3] = np.nan   # a diverged member
    loss = np.mean((pred - target) ** 2, axis=-1)        # NaN for the diverged member
    return xr.Dataset({"predictions": (("width", "seed", "x"), pred), "test_target": (("x",), target),
                       "final_test_loss": (("width", "seed"), loss),
                       "n_params": (("width", "seed"), np.repeat(3 * np.asarray(widths)[:, None] + 1, seeds, 1))},
                      coords={"width": list(widths), "seed": np.arange(seeds), "x": x})


def test_table_over_a_sweep_with_parameter_matched_members():
    rows = ensemble_table(sweep_results(), ks=[1, 2, 4], draws=100)
    at = {(r["width"], r["K"]): r for r in rows}
    assert at[(2, 1)]["members"] == 7 and at[(2, 1)]["diverged"] == 1 and at[(4, 1)]["diverged"] == 0
    for w in (2, 4, 8):   # independent errors: the ensemble's loss falls ~1/K
        assert at[(w, 4)]["median"] < at[(w, 2)]["median"] < at[(w, 1)]["median"]
        assert at[(w, 4)]["median"] == pytest.approx(at[(w, 1)]["median"] / 4, rel=0.35)
    assert at[(2, 2)]["matched"] == 4 and at[(2, 4)]["matched"] == 8 and at[(8, 2)]["matched"] is None
    assert at[(2, 2)]["matched_loss"] == pytest.approx(at[(4, 1)]["single"])
    with pytest.raises(ValueError, match="no predictions"):
        ensemble_table(sweep_results().drop_vars("predictions"))


def test_cli_prints_the_table_and_writes_the_figure(tmp_path, capsys):
    from sweepjax.cli import main
    sweep_results().to_netcdf(tmp_path / "results.nc", engine="h5netcdf")
    assert main(["ensemble", str(tmp_path), "--k", "1,2,4", "--mode", "best", "--plot", str(tmp_path / "e.png")]) == 0
    out = capsys.readouterr().out
    assert "width=2 K=   4 (best)" in out and (tmp_path / "e.png").stat().st_size > 10_000
    assert main(["ensemble", str(tmp_path), "--by", "depth"]) == 2


def test_review_edge_cases():
    """K = 1 in random mode is exact over the members; a member whose validation loss overflows still ranks
    ahead of a diverged one; sizes must be whole; by must be a size other than over; draws >= 1."""
    ds = sweep_results()
    rows = {(r["width"], r["K"]): r for r in ensemble_table(ds, ks=[1, 2], draws=3)}
    p, t = ds.predictions.sel(width=4).values, ds.test_target.values
    np.testing.assert_allclose(rows[(4, 1)]["median"], np.median(np.mean((p[:, 1::2] - t[1::2]) ** 2, axis=1)),
                               rtol=1e-6)
    pred = np.stack([np.full(4, np.nan), np.full(4, 1e20), np.full(4, 0.5)])
    with np.errstate(over="ignore"):   # members 1 and 2 (the diverged one would give 0.0625): (5e19)^2 = inf in float32
        assert np.isposinf(ensemble_losses(pred, np.zeros(4), [2], draws=1, mode="best")[0, 0])
    with pytest.raises(ValueError, match="whole numbers"):
        ensemble_losses(pred, np.zeros(4), [1.5])
    for kw, match in (({"by": "seed"}, "other than over"), ({"over": "width"}, "other than over"),
                      ({"draws": 0}, "at least one draw")):
        with pytest.raises(ValueError, match=match):
            ensemble_table(ds, **kw)
    flat = ds.assign(n_params=ds.n_params * 0 + 7)
    with pytest.raises(ValueError, match="is not a size"):
        ensemble_table(flat)


def test_cli_refuses_bad_arguments_in_one_line(tmp_path, capsys):
    from sweepjax.cli import main
    sweep_results().to_netcdf(tmp_path / "results.nc", engine="h5netcdf")
    for args in (["--draws", "0"], ["--k", "a,b"], ["--by", "x"], ["--plot", str(tmp_path / "no" / "dir" / "e.png")]):
        assert main(["ensemble", str(tmp_path)] + args) == 2, args
    assert main(["ensemble", str(tmp_path), "--by", "", "--plot", str(tmp_path / "k.png")]) == 0


def test_each_member_is_scored_against_its_own_groups_test_set():
    """A swept task key that changes the test set (the teacher's seed) gives every member its group's target:
    the saved predictions then score as the member's own test loss (they did not, with one shared target)."""
    from sweepjax.config import build_config
    from sweepjax.run import run_sweep
    cfg = build_config({"task": {"name": "teacher", "target": "mse", "teacher_depth": 3, "teacher_width": 8,
                                 "teacher_hidden": 16, "batch_size": 32, "test_size": 64, "data_seed": 0},
                        "model": {"residual": True, "width": 8, "mlp_ratio": 2, "input": "none", "head": "none",
                                  "norm": "rmsnorm"},
                        "train": {"steps": 10, "chunk_steps": 10}, "eval": {"points": 2, "save_predictions": True},
                        "sweep": {"task.teacher_seed": [0, 1], "seed": [0, 1]}})
    ds = run_sweep(cfg, log=None)[0]
    assert ds.test_target.dims == ("teacher_seed", "seed", "x", "output")
    err = ((ds.predictions - ds.test_target) ** 2).mean(("x", "output"))
    np.testing.assert_allclose(err.values, ds.final_test_loss.values, rtol=1e-4)
    rows = ensemble_table(ds, ks=[1], by=None)
    assert {r["teacher_seed"] for r in rows} == {0, 1} and all(r["median"] < 1 for r in rows)
