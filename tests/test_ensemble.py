"""The ensemble API (issue 16, parts 1 and 3): ensemble losses against direct computations, random and
best-K draws by validation losses, diverged members, the table over a sweep and the CLI."""
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
    odd = pred, target     # every test point scores
    singles = np.mean((odd[0] - odd[1]) ** 2, axis=1)
    assert set(np.round(losses[0], 6)) <= set(np.round(singles, 6))            # K = 1: a member's own loss
    assert len(set(np.round(losses[0], 6))) > 3                                   # ... drawn at random
    np.testing.assert_allclose(losses[2], np.mean((odd[0].mean(0) - odd[1]) ** 2), rtol=1e-5)   # K = all
    pairs = {round(float(np.mean(((odd[0][i] + odd[0][j]) / 2 - odd[1]) ** 2)), 6)
             for i in range(6) for j in range(6) if i < j}
    assert set(np.round(losses[1], 6)) <= pairs


def test_best_k_is_chosen_on_validation_losses_not_test_losses():
    """Member 0 has the best validation loss and the worst test loss: best-1 picks it; best-2 adds the next by
    validation (member 3), not the best on the test set; best mode needs validation losses."""
    target = np.zeros(20)
    pred = np.full((4, 20), 0.1)
    pred[0], pred[3] = 3.0, 0.5
    validation = np.array([0.01, 0.5, 0.4, 0.02])
    best = ensemble_losses(pred, target, [1, 2], draws=4, mode="best", validation=validation)
    np.testing.assert_allclose(best[0], 9.0, rtol=1e-6)
    np.testing.assert_allclose(best[1], ((3.0 + 0.5) / 2) ** 2, rtol=1e-6)
    with pytest.raises(ValueError, match="mode"):
        ensemble_losses(pred, target, [1], mode="top")
    with pytest.raises(ValueError, match="validation"):
        ensemble_losses(pred, target, [1], mode="best")


def test_diverged_members_are_left_out_and_counted():
    pred, target = members()
    pred[2] = np.nan
    losses = ensemble_losses(pred, target, [1, 5, 6], draws=30)
    assert np.isfinite(losses[:2]).all() and np.isnan(losses[2]).all()
    ok = np.delete(pred, 2, axis=0)
    np.testing.assert_allclose(losses[1], np.mean((ok.mean(0) - target) ** 2), rtol=1e-5)


def sweep_results(widths=(2, 4, 8), seeds=8):
    """Predictions with independent errors whose size falls with width; n_params = 3 width + 1."""
    rng = np.random.default_rng(1)
    x = np.linspace(-1, 1, 50)
    target = x ** 2
    pred = target + rng.standard_normal((len(widths), seeds, 50)) / np.asarray(widths)[:, None, None]
    pred[0, 3] = np.nan   # a diverged member
    loss = np.mean((pred - target) ** 2, axis=-1)        # NaN for the diverged member
    validation = loss * np.exp(0.3 * rng.standard_normal(loss.shape))   # correlated with the test loss, not equal
    return xr.Dataset({"predictions": (("width", "seed", "x"), pred), "test_target": (("x",), target),
                       "final_test_loss": (("width", "seed"), loss), "validation_loss": (("width", "seed"), validation),
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
    np.testing.assert_allclose(rows[(4, 1)]["median"], np.median(ds.final_test_loss.sel(width=4)), rtol=1e-6)
    pred = np.stack([np.full(4, np.nan), np.full(4, 1e20), np.full(4, 0.5)])
    with np.errstate(over="ignore"):   # members 1 and 2 (a NaN validation ranks after every finite member)
        assert np.isposinf(ensemble_losses(pred, np.zeros(4), [2], draws=1, mode="best",
                                           validation=[0.0, np.nan, 1.0])[0, 0])
    with pytest.raises(ValueError, match="whole numbers"):
        ensemble_losses(pred, np.zeros(4), [1.5])
    for kw, match in (({"by": "seed"}, "other than over"), ({"over": "width"}, "other than over"),
                      ({"draws": 0}, "at least one draw"), ({"over": ("seed", "x")}, "distinct sweep dims")):
        with pytest.raises(ValueError, match=match):
            ensemble_table(ds, **kw)
    flat = ds.assign(n_params=ds.n_params * 0 + 7)
    with pytest.raises(ValueError, match="is not a size"):
        ensemble_table(flat)
    with pytest.raises(ValueError, match="validation_loss"):
        ensemble_table(ds.drop_vars("validation_loss"), mode="best")


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


def test_probability_ensembles_equal_a_direct_computation():
    """Mean of probabilities: labels (cross-entropy, in bits, weighted points) and distributions (KL), K = all."""
    rng = np.random.default_rng(0)
    m, p, c = 5, 12, 3
    logits = rng.standard_normal((m, p, c)) * 2
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    labels = rng.integers(0, c, p)
    weights = rng.uniform(0.5, 2.0, p)
    mean = np.exp(log_probs).mean(0)
    w = weights / weights.sum()
    ce = -np.sum(w * np.log(mean[np.arange(len(mean)), labels])) / np.log(2)
    got = ensemble_losses(log_probs, labels, [m], draws=2, rule="probabilities", weights=weights, unit="bits")
    np.testing.assert_allclose(got, ce, rtol=1e-5)
    target = np.exp(rng.standard_normal((p, c)))
    target /= target.sum(-1, keepdims=True)
    kl = np.mean(np.sum(target * (np.log(target) - np.log(mean)), -1))
    np.testing.assert_allclose(ensemble_losses(log_probs, target, [m], draws=2, rule="probabilities"), kl, rtol=1e-5)
    pairs = {round(float(np.mean(np.sum(target * (np.log(target) - np.log(np.exp(log_probs[[i, j]]).mean(0))), -1))), 5)
             for i in range(m) for j in range(i + 1, m)}
    assert set(np.round(ensemble_losses(log_probs, target, [2], draws=20, rule="probabilities")[0], 5)) <= pairs
    # confident members: a probability that underflows in float32 alone still averages exactly (log-sum-exp)
    sure = np.stack([np.log([1.0, 1e-45, 1e-45]) * np.ones((p, 1)), np.log([1e-3, 0.998, 1e-3]) * np.ones((p, 1))])
    got = ensemble_losses(sure, np.ones(p, int), [2], draws=1, rule="probabilities")
    np.testing.assert_allclose(got, -np.log(0.499), rtol=1e-5)
    # a member alone far below the best one (its probability underflows once shifted): scored exactly
    far = np.stack([np.array([0.0, -200.0, -200.0]) * np.ones((p, 1)), np.log([1e-3, 0.998, 1e-3]) * np.ones((p, 1))])
    got = ensemble_losses(far, np.ones(p, int), [1], draws=40, rule="probabilities")
    np.testing.assert_allclose(sorted(set(np.round(got[0], 4))), [round(-np.log(0.998), 4), 200.0], rtol=1e-5)
    with pytest.raises(ValueError, match="labels outside"):
        ensemble_losses(log_probs, labels + 3, [1], rule="probabilities")


def _rescored(ds):
    """Each member's loss recomputed from its saved predictions on the test set (the engine's test loss)."""
    from sweepjax.ensemble import _Members
    pred = ds.predictions
    sweep = [d for d in pred.dims if d not in ("x", "position", "class")]
    flat = pred.stack(m=sweep).transpose("m", ...)
    out = []
    for i in range(flat.sizes["m"]):
        sel = {d: flat.m.values[i][j] for j, d in enumerate(sweep)}
        t = ds.test_target.sel({d: v for d, v in sel.items() if d in ds.test_target.dims}).values
        w = ds.test_weight.sel({d: v for d, v in sel.items() if d in ds.test_weight.dims}).values
        out.append(_Members(flat.isel(m=[i]).values, t, "probabilities", w, ds.test_loss.attrs["units"]).member_losses()[0])
    return np.asarray(out), ds.final_test_loss.stack(m=sweep).values


@pytest.mark.parametrize("case", ["sparse-parity", "teacher-own", "teacher-head", "markov"])
def test_saved_probabilities_rescore_as_each_members_test_loss(case):
    """The saved log-probabilities, targets and weights give back every member's own test loss: sparse parity
    (bits, points weighted by each member's Zipf frequencies, an exponent sweep), KL students (own head, the
    teacher's frozen head; per-member temperatures) and next-token prediction (positions)."""
    from sweepjax.config import build_config
    from sweepjax.run import run_sweep
    raw = {"train": {"steps": 20, "chunk_steps": 20, "lr": 1e-2}, "eval": {"points": 2, "save_predictions": True},
           "model": {"width": 8}}
    if case == "sparse-parity":
        raw.update(task={"name": "sparse-parity", "n_tasks": 4, "n_bits": 6, "test_size": 32, "batch_size": 32},
                   sweep={"task.zipf_exponent": [0.5, 2.0], "seed": [0, 1]})
    elif case.startswith("teacher"):
        raw.update(task={"name": "teacher", "teacher_depth": 2, "teacher_width": 4, "teacher_hidden": 8,
                         "n_classes": 5, "test_size": 16, "batch_size": 16,
                         "student_head": "own" if case == "teacher-own" else "teacher"},
                   model={"width": 4, "residual": True, "depth": 2, "norm": "rmsnorm", "input": "none",
                          **({"head": "none"} if case == "teacher-head" else {})},
                   sweep={"task.temperature": [0.5, 2.0], "seed": [0, 1]})
    else:
        raw.update(task={"name": "markov", "vocab": 6, "context": 5, "test_size": 8, "batch_size": 8},
                   model={"family": "transformer", "width": 8, "heads": 1}, sweep={"seed": [0, 1, 2]})
    ds = run_sweep(build_config(raw), log=None)[0]
    assert ds.predictions.attrs["combine"] == "probabilities" and ds.predictions.dims[-1] == "class"
    rescored, engine = _rescored(ds)
    np.testing.assert_allclose(rescored, engine, rtol=2e-5, atol=1e-6)
    rows = ensemble_table(ds, ks=[1, 2], by=None, draws=5)
    assert all(np.isfinite(r["median"]) for r in rows)
    for r in rows:   # K = 1 is the members' own test losses
        if r["K"] == 1:
            point = {d: r[d] for d in ds.final_test_loss.dims if d in r}
            assert r["median"] == pytest.approx(float(ds.final_test_loss.sel(point).median()), rel=1e-5)
    # validation: the same population loss on other samples than the test set's (close, not equal)
    val, test = ds.validation_loss.values, ds.final_test_loss.values
    assert np.all(np.isfinite(val)) and not np.allclose(val, test, rtol=1e-4)
    assert np.all(np.abs(np.log(val / test)) < 0.2), (val, test)
    best = ensemble_table(ds, ks=[1], by=None, mode="best")
    for r in best:
        point = {d: r[d] for d in ds.final_test_loss.dims if d in r}
        pick = int(np.argmin(ds.validation_loss.sel(point).values))
        assert r["median"] == pytest.approx(float(ds.final_test_loss.sel(point).values[pick]), rel=1e-5)
    if case == "sparse-parity":   # per-member weights follow the exponent, and are kept with it
        assert ds.test_weight.dims == ("zipf_exponent", "x") and ds.test_loss.attrs["units"] == "bits"
    if case.startswith("teacher"):
        assert ds.test_target.dims == ("temperature", "x", "class")
    if case == "markov":
        assert ds.predictions.dims == ("seed", "x", "position", "class") and ds.test_target.dims == ("x", "position")


def test_ensembles_across_sizes_pool_members_of_every_width(tmp_path, capsys):
    """over = (seed, width): one pool of all finite members of every width; K = all is their full mean."""
    from sweepjax.cli import main
    ds = sweep_results()
    rows = ensemble_table(ds, ks=[1, 23], by=None, over=("seed", "width"), draws=3)
    assert [r["K"] for r in rows] == [1, 23] and rows[0]["members"] == 23 and rows[0]["diverged"] == 1
    p = ds.predictions.values.reshape(24, -1)
    mean = np.nanmean(p, axis=0)
    np.testing.assert_allclose(rows[1]["median"], np.mean((mean - ds.test_target.values) ** 2), rtol=1e-5)
    with pytest.raises(ValueError, match="other than over"):
        ensemble_table(ds, over=("seed", "width"), by="width")
    with pytest.raises(ValueError, match="several over dims"):
        ensemble_table(ds.expand_dims(depth=[1]), over=("seed", "width"), by="depth")
    with pytest.raises(ValueError, match="distinct sweep dims"):
        ensemble_table(ds, over=("seed", "seed"), by=None)
    ds.to_netcdf(tmp_path / "results.nc", engine="h5netcdf")
    assert main(["ensemble", str(tmp_path), "--over", "seed,width", "--by", "", "--k", "1,4"]) == 0
    assert "all K=   4 (random)" in capsys.readouterr().out


def test_a_sweep_over_both_teacher_targets_cannot_save_predictions():
    """Review: it trained the whole sweep, then failed to assemble results; now refused before training."""
    from sweepjax.config import ConfigError, build_config
    raw = {"task": {"name": "teacher", "teacher_depth": 2, "teacher_width": 5, "teacher_hidden": 8, "n_classes": 5},
           "model": {"residual": True, "width": 4, "input": "none"}, "eval": {"save_predictions": True},
           "sweep": {"task.target": ["mse", "kl"]}}
    with pytest.raises(ConfigError, match="over both targets"):
        build_config(raw)


def test_cli_compares_along_depth_when_there_is_no_width(tmp_path, capsys):
    from sweepjax.cli import main
    sweep_results().rename(width="depth").to_netcdf(tmp_path / "results.nc", engine="h5netcdf")
    assert main(["ensemble", str(tmp_path), "--k", "1,2"]) == 0
    assert "depth=2 K=   2 (random)" in capsys.readouterr().out
