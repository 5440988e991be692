"""Quantization-model analyses (sweepjax.analysis.quanta) on synthetic sparse-parity results with known
exponents, learning order and convergence steps (no engine runs)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import xarray as xr

from sweepjax.analysis import quanta as q
from sweepjax.config import build_config
from sweepjax.fit import FitInputError

N_TASKS = 32


def config(zipf: float | None = 1.4) -> str:
    z = "" if zipf is None else f"zipf_exponent = {zipf}\n"
    return f'# resolved config\n\n[task]\nname = "sparse-parity"\nn_tasks = {N_TASKS}\n{z}dataset_size = 0\n'


def power_law_results(alphas: dict[float, float], seeds: int = 5, noise: float = 0.03) -> xr.Dataset:
    """final_test_loss = 3 n_params^-alpha(zipf) x lognormal noise per seed; n_params = 50 width + 2."""
    rng = np.random.default_rng(1)
    widths = np.array([8, 16, 32, 64, 128, 256, 512])
    n_params = 50 * widths + 2
    zipfs = list(alphas)
    loss = np.stack([3.0 * n_params[:, None] ** -alphas[z] * np.exp(noise * rng.standard_normal((len(widths), seeds)))
                     for z in zipfs])
    dims = ("zipf_exponent", "width", "seed")
    return xr.Dataset({"final_test_loss": (dims, loss), "diverged": (dims, np.zeros(loss.shape, bool)),
                       "n_params": (dims, np.broadcast_to(n_params[None, :, None], loss.shape).copy())},
                      coords={"zipf_exponent": zipfs, "width": widths, "seed": np.arange(seeds)},
                      attrs={"sweepjax_config": config(None)})


def test_alpha_n_recovered_per_exponent_with_interval_and_theory():
    ds = power_law_results({1.4: 0.4, 1.8: 0.7})
    rows = q.n_scaling(ds, n_boot=200)
    json.dumps(rows, allow_nan=False)                       # rows are plain JSON
    assert [r["zipf_exponent"] for r in rows] == [1.4, 1.8]
    for r, true in zip(rows, (0.4, 0.7)):
        assert r["x"] == "n_params" and r["sizes"][0] == 402   # x is n_params, not width
        assert abs(r["alpha"] - true) < 0.02, r["alpha"]
        lo, hi = r["alpha_ci"]
        assert lo < true < hi and hi - lo < 0.06, r["alpha_ci"]
        assert r["theory"] == pytest.approx(r["zipf_exponent"] - 1) and r["task_alpha"] == r["theory"]
    assert rows[0]["paper"] == 0.33
    text = q.describe(rows)
    assert "alpha_N" in text and "theory 0.400" in text and len(text.splitlines()) == 2


def test_diverged_member_counts_as_the_worst_loss():
    ds = power_law_results({1.4: 0.4}, seeds=3)
    top = ds.width.values[-1]
    survivors = ds.final_test_loss.sel(width=top, zipf_exponent=1.4).values[:2]
    ds["diverged"].loc[dict(width=top, seed=2)] = True
    ds["final_test_loss"].loc[dict(width=top, seed=2)] = np.nan
    (r,) = q.n_scaling(ds, n_boot=0)
    # Worst, not missing: the median over three seeds is the larger survivor, not the mean of two.
    assert r["median_loss"][-1] == pytest.approx(survivors.max())
    assert r["diverged_per_size"][-1] == 1 and "diverged" in q.describe(r)
    # Two of three diverged: the median is +inf, the size is not fitted.
    ds["diverged"].loc[dict(width=top, seed=1)] = True
    (r,) = q.n_scaling(ds, n_boot=0)
    assert r["unfitted_sizes"] == [50.0 * top + 2] and len(r["sizes"]) == 6


def test_alpha_d_uses_positive_dataset_sizes_and_the_best_loss():
    rng = np.random.default_rng(2)
    sizes = np.array([0, 1000, 3000, 10000, 30000, 100000, 300000])
    best = 5.0 * np.maximum(sizes, 1)[:, None] ** -0.3 * np.exp(0.02 * rng.standard_normal((len(sizes), 4)))
    best[0] = 1e-6                                        # D = 0 (fresh samples) would wreck the fit
    dims = ("dataset_size", "seed")
    ds = xr.Dataset({"best_test_loss": (dims, best), "final_test_loss": (dims, best * 2),
                     "diverged": (dims, np.zeros(best.shape, bool))},
                    coords={"dataset_size": sizes, "seed": np.arange(4)}, attrs={"sweepjax_config": config(1.4)})
    (r,) = q.d_scaling(ds, n_boot=200)
    assert r["sizes"][0] == 1000 and abs(r["alpha"] - 0.3) < 0.02 and r["alpha_ci"][0] < 0.3 < r["alpha_ci"][1]
    assert r["zipf_exponent"] == 1.4 and r["theory"] == pytest.approx(0.4 / 1.4)   # from the config
    with pytest.raises(FitInputError):
        q.n_scaling(ds)                                   # no width sweep


def test_alpha_s_fits_the_widest_member_in_the_window():
    steps = np.array([0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000])
    widths = np.array([16, 64])
    curve = np.where(steps < 10, 1.0, 4.0 * np.maximum(steps, 1) ** -0.25)      # a plateau, then a power law
    test = np.stack([np.ones((2, len(steps))), np.tile(curve, (2, 1))])        # the narrow member never learns
    dims = ("width", "seed", "eval_step")
    ds = xr.Dataset({"test_loss": (dims, test), "diverged": (dims[:2], np.zeros((2, 2), bool))},
                    coords={"width": widths, "seed": [0, 1], "eval_step": steps},
                    attrs={"sweepjax_config": config(1.4)})
    (r,) = q.s_scaling(ds, n_boot=0, window=(10, None))
    assert r["width"] == 64 and r["sizes"][0] == 10 and r["alpha"] == pytest.approx(0.25, abs=1e-3)
    (whole,) = q.s_scaling(ds, n_boot=0)                 # the plateau biases an unwindowed fit
    assert whole["sizes"][0] == 1 and whole["alpha"] < 0.2


def subtask_results(zipf: float = 1.4, seeds: int = 3, slope: float = -0.8) -> xr.Dataset:
    """Subtask k (0 = most frequent) of a width-w member drops from 1 bit to 0.01 at step T_k = 20 (p_k /
    p_1)^slope if k < w / 4 (the narrower, the fewer learned), and never otherwise; evaluations at every T_k."""
    widths = np.array([8, 16, 32, 64, 128])
    p = q.frequencies(N_TASKS, zipf)
    t = np.round(20 * (p / p[0]) ** slope)
    steps = np.unique(np.r_[0, 1, 5, t, 2 * t.max()]).astype(int)
    n = widths // 4
    learned_by = np.where(np.arange(N_TASKS)[None] < n[:, None], t[None], np.inf)      # (width, subtask)
    sub = np.where(steps[None, :, None] >= learned_by[:, None, :], 0.01, 1.0)            # (width, step, subtask)
    sub = np.broadcast_to(sub[:, None], (len(widths), seeds, *sub.shape[1:])).copy()
    test = (sub * p).sum(-1)
    dims = ("width", "seed")
    return xr.Dataset({"subtask_loss": (dims + ("eval_step", "subtask"), sub), "test_loss": (dims + ("eval_step",), test),
                       "final_test_loss": (dims, test[..., -1]), "best_test_loss": (dims, test.min(-1)),
                       "diverged": (dims, np.zeros((len(widths), seeds), bool)),
                       "n_params": (dims, np.broadcast_to(10 * widths[:, None], (len(widths), seeds)).copy())},
                      coords={"width": widths, "seed": np.arange(seeds), "eval_step": steps,
                              "subtask": np.arange(N_TASKS)}, attrs={"sweepjax_config": config(zipf)})


def test_learned_counts_and_their_slope_vs_n():
    ds = subtask_results()
    ds["diverged"].loc[dict(width=32, seed=0)] = True
    ds["subtask_loss"].loc[dict(width=32, seed=0)] = np.nan
    counts = q.learned_counts(ds)
    assert counts.sel(width=32, seed=0) == 0                       # a diverged member learned nothing
    np.testing.assert_array_equal(counts.sel(seed=1), ds.width.values // 4)
    (r,) = q.learned(ds, n_boot=50)
    assert r["kind"] == "learned_N" and r["at"] == "final"
    assert r["median_learned"] == [2, 4, 8, 16, 32] and r["fitted_sizes"] == [80, 160, 320, 640]  # 32 = all: out
    assert r["slope"] == pytest.approx(1.0) and r["theory"] == 1.0
    assert "slope 1.000" in q.describe(r)
    json.dumps(r, allow_nan=False)


def test_learned_vs_d_uses_the_minimum_over_evaluations():
    """n(D) = D^(1/(alpha+1)) subtasks are learned at some evaluation and forgotten (overfitting) by the last."""
    zipf, n_tasks = 1.5, 100
    sizes = np.array([0, 100, 400, 1600, 6400, 25600])
    n = np.round(2 * (np.maximum(sizes, 100) / 100) ** (1 / zipf)).astype(int)      # 2, 2, 5, 13, 32, 81
    steps = np.array([0, 100, 200])
    sub = np.ones((len(sizes), len(steps), n_tasks))
    for i, m in enumerate(n):
        sub[i, 1, :m] = 0.02                                      # learned at step 100, lost at 200
    ds = xr.Dataset({"subtask_loss": (("dataset_size", "eval_step", "subtask"), sub)},
                    coords={"dataset_size": sizes, "eval_step": steps, "subtask": np.arange(n_tasks)},
                    attrs={"sweepjax_config": config(zipf)})
    (r,) = q.learned(ds, n_boot=0)
    assert r["kind"] == "learned_D" and r["at"] == "min" and r["sizes"][0] == 100
    assert r["median_learned"] == n[1:].tolist()
    assert r["slope"] == pytest.approx(1 / zipf, abs=0.03) and r["theory"] == pytest.approx(1 / zipf)
    assert q.learned_counts(ds, at="final").sum() == 0


def test_convergence_steps_follow_frequency_order_and_slope():
    ds = subtask_results(zipf=1.4, slope=-0.8)
    ds["subtask_loss"].loc[dict(seed=2)] = 1.0                     # one bad seed out of three: the median ignores it
    (r,) = q.convergence_steps(ds)
    assert r["width"] == 128 and r["n_learned"] == N_TASKS and r["zipf_exponent"] == 1.4
    assert r["spearman"] == pytest.approx(1.0)
    assert r["slope"] == pytest.approx(-0.8, abs=0.01)
    assert r["steps"][0] == 20
    (narrow,) = q.convergence_steps(ds, width=8)                  # 2 learned, the rest never (None)
    assert narrow["n_learned"] == 2 and narrow["steps"][2] is None and narrow["spearman"] == pytest.approx(1.0)
    # Learned in reverse frequency order: Spearman -1.
    rev = ds.assign(subtask_loss=ds.subtask_loss[..., ::-1].assign_coords(subtask=ds.subtask.values))
    (back,) = q.convergence_steps(rev)
    assert back["spearman"] == pytest.approx(-1.0)
    # p-values by permutation: two subtasks in order are one of 2 orderings; reversed, every ordering is as high
    assert narrow["spearman_p"] == pytest.approx(0.5) and back["spearman_p"] == pytest.approx(1.0)
    assert r["spearman_p"] < 1e-3
    assert "Spearman(rank, step) 1.000" in q.describe(r)
    json.dumps(r, allow_nan=False)


def test_figures_written(tmp_path):
    ds = xr.concat([subtask_results(1.4), subtask_results(1.8)], join="outer",   # eval steps differ: NaN-padded
                   dim=xr.DataArray([1.4, 1.8], dims="zipf_exponent", name="zipf_exponent"))
    ds["final_test_loss"] = ds.final_test_loss * (1 + 0.01 * np.arange(3))   # seed spread for the bootstrap
    ds.attrs["sweepjax_config"] = config(None)
    run_cfg = build_config({"run": {"bootstrap": 50}}).run
    log = io.StringIO()
    paths = q.analyse(ds, tmp_path, run_cfg, [], log=log, warn=io.StringIO())
    names = sorted(p.name for p in paths)
    assert names == ["quanta.json", "quanta_convergence.png", "quanta_emergence_eval_step.png",
                     "quanta_emergence_width.png", "quanta_exponents.png", "quanta_laws.png"]
    assert "alpha_N" in log.getvalue()
    no_figures = build_config({"run": {"bootstrap": 50, "figures": False}}).run
    assert [p.name for p in q.analyse(ds, tmp_path / "n", run_cfg=no_figures, width_rows=[])] == ["quanta.json"]
    for p in paths:
        assert p.stat().st_size > (10_000 if p.suffix == ".png" else 100), p
    report = json.loads((tmp_path / "quanta.json").read_text())
    assert {r["kind"] for r in report["scaling"]} >= {"N"} and report["learned"] and report["convergence"]
    with pytest.raises(ValueError):
        q.plot_emergence(ds, tmp_path / "x.png", over="seed")


def test_spearman_sees_a_rare_subtask_learned_before_frequent_ones():
    """Subtasks 0, 1 and 7 learned (in frequency order among themselves), 2..6 never: not in order."""
    ds = subtask_results(zipf=1.4)
    ordered = q.convergence_steps(ds)[0]["spearman"]
    widest = dict(width=128)
    sub = ds["subtask_loss"].loc[widest].values
    sub[..., 2:7] = 1.0                                            # the frequent 2..6 never learned
    ds["subtask_loss"].loc[widest] = sub
    gap = q.convergence_steps(ds)[0]
    assert ordered > 0.99 and gap["spearman"] < 0.9 * ordered, (ordered, gap["spearman"])


def test_figures_survive_a_widest_width_that_diverged(tmp_path):
    """Review: with every seed of the widest width diverged the S fit has no points and plot_laws raised
    'Data cannot be log-scaled' after the run; now its panel says so and the other figures are made."""
    ds = subtask_results()
    ds["diverged"].loc[dict(width=ds.width.values.max())] = True
    for v in ("subtask_loss", "test_loss", "final_test_loss", "best_test_loss"):
        if v in ds:
            ds[v].loc[dict(width=ds.width.values.max())] = np.nan
    summary = q.summarize(ds, n_boot=0, log=None)
    paths = q.make_figures(ds, tmp_path, summary)
    assert paths and all(p.stat().st_size > 5_000 for p in paths)


def test_spearman_p_is_exact_for_few_subtasks():
    """Enumerating the 3! orderings: 3 subtasks learned in order have p = 1/6 (scipy's t approximation says 0)."""
    import itertools

    from scipy.stats import spearmanr
    order = np.array([10.0, 30.0, 20.0])
    observed = spearmanr(np.arange(3), order).statistic
    exact = np.mean([spearmanr(np.arange(3), np.array(p)).statistic >= observed - 1e-12
                     for p in itertools.permutations(order)])
    assert q.spearman_p(order) == pytest.approx(exact) and q.spearman_p(np.array([1.0, 2.0, 3.0])) == pytest.approx(1 / 6)
