"""The random-walk language study's analyses (sweepjax.analysis.language) on synthetic sweeps with a known law
L = E + A N^-a + B D^-b (N = non-embedding parameters, D = tokens), over width x steps x lr x seed."""
from __future__ import annotations

import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr

from sweepjax.analysis import language as lang

WIDTHS = np.array([16, 23, 32, 45, 64, 91, 128, 181])
STEPS = 2 ** np.arange(5, 17)                      # 12 budgets: D = 2048 tokens per step
LRS = np.array([1e-3, 3e-3, 1e-2, 3e-2, 1e-1])
BEST_LR = {16: 1e-1, 23: 1e-1, 32: 3e-2, 45: 3e-2, 64: 1e-2, 91: 1e-2, 128: 3e-3, 181: 3e-3}
VOCAB, CONTEXT, TOKENS_PER_STEP = 512, 64, 2048
E, A_EXP, B_EXP = 2.0, 0.5, 0.3                    # floor (nats), N and D exponents
A, B = 80.0, 44.0


def n_non_embedding(w):
    return 24.0 * np.asarray(w, float) ** 2         # 2 layers x 12 d^2


def sweep(widths=WIDTHS, steps=STEPS, lrs=LRS, seeds=4, A=A, B=B, a=A_EXP, b=B_EXP, floor=E, stated_floor=None,
          noise=0.01, extra: dict | None = None, seed=0) -> xr.Dataset:
    """A results Dataset: excess = (A N^-a + B D^-b) x (1 + 0.5 (log10 lr - log10 best(width))^2) x exp(noise
    eps), loss = floor + excess; the best lr of each width is BEST_LR (so best_over recovers the law exactly
    but for the noise). ``stated_floor``: the test_bayes_loss the results carry (default the true floor).
    ``extra``: more swept dims {name: {value: floor shift}} (e.g. bias: a lower floor for kappa 1)."""
    rng = np.random.default_rng(seed)
    extra = extra or {}
    ex_dims = list(extra)
    ex_shape = tuple(len(v) for v in extra.values())
    N = n_non_embedding(widths)
    D = np.asarray(steps, float) * TOKENS_PER_STEP
    red = A * N[:, None] ** -a + B * D[None, :] ** -b                           # (W, S)
    bowl = np.array([[1 + 0.5 * (np.log10(lr) - np.log10(BEST_LR[int(w)])) ** 2 for lr in lrs] for w in widths])
    shape = (seeds, len(widths), len(steps), len(lrs)) + ex_shape
    excess = red[None, :, :, None] * bowl[None, :, None, :]
    excess = excess.reshape(excess.shape + (1,) * len(ex_shape)) * np.exp(noise * rng.standard_normal(shape))
    shifts = np.zeros(ex_shape)
    for i, vals in enumerate(extra.values()):
        shifts = shifts + np.array(list(vals.values())).reshape([-1 if j == i else 1 for j in range(len(ex_shape))])
    loss = floor + shifts + excess
    dims = ("seed", "width", "steps", "lr") + tuple(ex_dims)
    along = lambda v, axis: np.broadcast_to(np.reshape(v, [-1 if i == axis else 1 for i in range(len(shape))]), shape)
    Nn = along(N, 1)
    Na = along(N + 2 * VOCAB * widths + CONTEXT * widths, 1)
    tok = along(D, 2)
    fpt = along(2 * N + 2 * VOCAB * widths + 8 * CONTEXT * widths, 1)   # forward FLOPs per token
    coords = {"seed": np.arange(seeds), "width": np.asarray(widths), "steps": np.asarray(steps), "lr": np.asarray(lrs),
              **{k: np.array(list(v)) for k, v in extra.items()}}
    floor_dims = tuple(ex_dims)
    stated = (floor if stated_floor is None else stated_floor) + shifts
    ds = xr.Dataset({"final_test_loss": (dims, loss), "diverged": (dims, np.zeros(shape, bool)),
                     "n_params": (dims, Na.astype(np.int64)), "n_params_non_embedding": (dims, Nn.astype(np.int64)),
                     "tokens": (dims, tok.copy()), "train_flops_6nd": (dims, 6 * Nn * tok),
                     "train_flops": (dims, 3 * fpt * tok),
                     "test_bayes_loss": (floor_dims, np.asarray(stated, float)),
                     "irreducible_loss": (floor_dims, np.asarray(stated, float) - 0.003)}, coords=coords)
    ds["final_test_loss"].attrs["units"] = "nats"
    return ds


def combined(**kw) -> xr.Dataset:
    """Two parameterizations (muP: a lower, steeper N term) x two walk biases (kappa 1: a floor 0.5 nats lower),
    with a D term 10x smaller than in `sweep` so that the N law at the largest D is nearly clean."""
    parts = []
    for p, (a_coef, a_exp) in {"sp": (A, 0.4), "mup": (0.8 * A, 0.5)}.items():
        parts.append(sweep(A=a_coef, a=a_exp, B=B / 10, extra={"bias": {0.0: 0.0, 1.0: -0.5}}, seed=len(parts), **kw)
                     .expand_dims(parameterization=[p]))
    return xr.concat(parts, "parameterization")


@pytest.fixture(scope="module")
def summary():
    """The whole study on the full law (the expensive part, once)."""
    return lang.summarize(sweep(), n_boot=40)


def test_best_lr_per_point_and_the_excess():
    prep = lang.prepare(sweep(seeds=3))
    (sd,) = prep.slices
    np.testing.assert_array_equal(sd.best_lr, np.array([[BEST_LR[w]] * len(STEPS) for w in WIDTHS]))
    edge = np.isin(WIDTHS, [16, 23])                 # their best lr (0.1) is the largest swept
    np.testing.assert_array_equal(sd.lr_at_edge, np.repeat(edge[:, None], len(STEPS), 1))
    assert prep.lr["n_at_edge"] == 2 * len(STEPS) and prep.lr["n_points"] == len(WIDTHS) * len(STEPS)
    assert {e["width"] for e in prep.lr["at_edge"]} == {16.0, 23.0}
    law = A * n_non_embedding(WIDTHS)[:, None] ** -A_EXP + B * (STEPS * float(TOKENS_PER_STEP))[None] ** -B_EXP
    np.testing.assert_allclose(sd.median_excess, law, rtol=0.03)   # the winner's excess is the law
    assert sd.floor == E and sd.irreducible == pytest.approx(E - 0.003)
    np.testing.assert_array_equal(sd.n["n_params_non_embedding"], n_non_embedding(WIDTHS))


def test_one_dimensional_exponents_recovered():
    """Where the other term is negligible the 1-D fits find the exponents; the window passes and spans 2 decades."""
    (n_row,) = lang.n_scaling(sweep(B=1e-9, steps=STEPS[-3:], seeds=3), n_boot=40)
    assert n_row["alpha"] == pytest.approx(A_EXP, abs=0.02)
    assert n_row["alpha_ci"][0] < n_row["alpha"] < n_row["alpha_ci"][1]
    assert n_row["decreasing"] and n_row["window"]["passed"] and n_row["window"]["r2"] > 0.99
    assert n_row["window"]["n_points"] == len(WIDTHS) and n_row["window"]["decades"] == pytest.approx(2 * np.log10(181 / 16))
    (d_row,) = lang.d_scaling(sweep(A=1e-9, widths=WIDTHS[-3:], seeds=3), n_boot=40)
    assert d_row["alpha"] == pytest.approx(B_EXP, abs=0.02) and d_row["decreasing"]


def test_headline_window_rule():
    """The largest window of >= 4 consecutive sizes with log-log R^2 >= 0.98: a law that bends flat at the end
    keeps its straight part; a curve with no straight stretch falls back to every size, flagged."""
    x = 2.0 ** np.arange(8)
    y = np.where(x <= 16, x ** -0.5, 16 ** -0.5 * (x / 16) ** -0.02)
    w = lang.headline_window(x, y)
    assert (w["i0"], w["i1"], w["passed"]) == (0, 4, True) and w["r2"] >= 0.98   # sizes 1..16
    assert w["decades"] == pytest.approx(np.log10(16))
    zigzag = x ** -0.5 * np.array([1, 3, 1, 3, 1, 3, 1, 3])
    w = lang.headline_window(x, zigzag)
    assert (w["i0"], w["i1"], w["passed"]) == (0, 7, False) and "no window" in w["rule"]


def test_a_width_that_diverged_is_reported_not_fitted():
    ds = sweep(widths=WIDTHS[::2], steps=STEPS[::3], seeds=3)
    ds["diverged"].loc[dict(width=128)] = True
    ds["final_test_loss"].loc[dict(width=128)] = np.nan
    prep = lang.prepare(ds)
    (n_row,), (d_row,) = lang.n_scaling(prep, n_boot=0), lang.d_scaling(prep, n_boot=0)
    assert n_row["unfitted"].tolist() == [n_non_embedding(128)] and n_row["decreasing"] is False
    assert n_row["window"]["widths"] == [16, 64] and n_row["alpha"] is not None
    assert d_row["fixed"]["width"] == 64 and not d_row["fixed"]["largest"] and d_row["alpha"] is not None
    assert "not fitted" in lang.describe({**lang.summarize(ds.isel(steps=[-1]), n_boot=0)})


def test_joint_fit_recovers_both_exponents_where_one_dimensional_fits_cannot(summary):
    """On the full law the D term at the largest D flattens the 1-D N fit (the study's identifiability point);
    the 2-D fit, E fixed or free, recovers a and b, and the E-free 1-D fit absorbs the D term in its offset."""
    for j in summary["joint"]:
        assert j["alpha"] == pytest.approx(A_EXP, abs=0.02) and j["beta"] == pytest.approx(B_EXP, abs=0.02), j["floor"]
        assert j["alpha_ci"] is not None and j["beta_ci"] is not None
    free = next(j for j in summary["joint"] if j["floor"] == "free")
    assert free["params"]["E"] == pytest.approx(E, abs=0.02)
    (n_row,) = summary["n_scaling"]
    assert n_row["alpha"] < A_EXP - 0.1 and free["alpha_1d"] == n_row["alpha"]
    (s,) = summary["sensitivity"]["summary"]
    assert s["headline"]["free/n_params_non_embedding"] == pytest.approx(A_EXP, abs=0.03)


def test_compute_frontier_has_the_known_answer(summary):
    """L = E + A N^-a + B D^-b under C = 6ND: N_opt ~ C^(b/(a+b)) = C^0.375 (approaches 1 and 3; 2 roughly)."""
    expected = B_EXP / (A_EXP + B_EXP)
    fr = next(r for r in summary["frontier"] if r["compute"] == "6ND")
    env = fr["envelope"]
    assert env["a"] == pytest.approx(expected, abs=0.03) and env["n_certified"] >= 10
    assert env["a_ci"] is not None and env["a_ci"][0] - 0.01 <= env["a"] <= env["a_ci"][1] + 0.01
    assert env["b"] == pytest.approx(1 - expected, abs=0.03)
    for floor, j in fr["joint_fit"].items():
        assert j["a"] == pytest.approx(expected, abs=0.015) and j["a"] == pytest.approx(j["expected_a"], abs=1e-3)
        assert j["a_ci"][0] <= j["a"] + 1e-3 and j["a"] - 1e-3 <= j["a_ci"][1]
    assert fr["isoflop"]["a"] == pytest.approx(expected, abs=0.05)
    exact = next(r for r in summary["frontier"] if r["compute"] == "exact")   # the exact count: a near, not equal
    assert exact["joint_fit"]["fixed"]["a"] == pytest.approx(expected, abs=0.05)
    assert exact["joint_fit"]["fixed"]["a_ci"] is not None


def test_sensitivity_table_rows(summary):
    rows = summary["sensitivity"]["rows"]
    n_windows = sum(len(WIDTHS) - k + 1 for k in range(4, len(WIDTHS) + 1))     # >= 4 consecutive of 8: 15
    assert len(rows) == 2 * 2 * n_windows
    assert {(r["floor"], r["n"]) for r in rows} == {(f, n) for f in ("fixed", "free")
                                                    for n in ("n_params", "n_params_non_embedding")}
    assert all(r["n_points"] >= 4 for r in rows)
    boot = [r for r in rows if r["alpha_ci"] is not None]
    assert boot and all(r["headline"] or r["all_widths"] for r in boot)
    assert sum(r["headline"] for r in rows) == 4
    (s,) = summary["sensitivity"]["summary"]
    assert s["spread"] == pytest.approx(s["alpha_max"] - s["alpha_min"]) and s["median_ci_width"] > 0
    assert s["embedding_shift"] > 0.03 and s["floor_shift"] > 0.1      # both matter here


def test_misstated_floor_separates_fixed_and_free_rows():
    """With the D term negligible, E fixed and E free agree when the floor is right, and differ when the
    results state a floor 0.1 nats too low (the fixed fit then sees a constant in the excess)."""
    def shifts(stated):
        ds = sweep(B=1e-9, steps=STEPS[-2:], seeds=3, stated_floor=stated)
        (s,) = lang.sensitivity(ds, n_boot=20)["summary"]
        return s
    right, wrong = shifts(None), shifts(E - 0.1)
    assert abs(right["floor_shift"]) < 0.03
    assert wrong["floor_shift"] > 0.1 and wrong["headline"]["free/n_params_non_embedding"] == pytest.approx(A_EXP, abs=0.03)


def test_floor_check_reports_members_below_the_floor():
    ds = sweep(B=1e-9, steps=STEPS[-2:], seeds=3, stated_floor=E + 0.1)   # a floor stated too high
    check = lang.floor_check(ds)
    assert not check["ok"] and check["min_excess"] < -0.01 and check["n_below_tolerance"] > 0
    assert check["at"]["width"] == 181
    warn = io.StringIO()
    (sd,) = lang.prepare(ds, log=warn).slices
    assert sd.n_below_floor > 0 and "at or below the loss floor" in warn.getvalue()
    assert lang.floor_check(sweep(steps=STEPS[-2:], seeds=2))["ok"]


def test_no_steps_dim_gives_the_n_part_and_says_the_rest_is_skipped(tmp_path):
    ds = sweep(B=1e-9, seeds=1).isel(steps=-1, seed=0, drop=True)       # one D, one run, no seeds
    s = lang.summarize(ds, n_boot=20)
    (n_row,) = s["n_scaling"]
    assert n_row["alpha"] == pytest.approx(A_EXP, abs=0.03) and n_row["alpha_ci"] is None
    assert s["d_scaling"] == [] and s["joint"] == [] and s["frontier"] == []
    assert any("D-scaling, the 2-D fit and the compute-optimal frontier are skipped" in n for n in s["notes"])
    text = lang.describe(s)
    assert "N-scaling" in text and "skipped" in text
    paths = lang.analyse(ds, tmp_path, SimpleNamespace(bootstrap=0, figures=True), [])
    assert {p.name for p in paths} == {"language.json", "language_excess_vs_n.png", "language_loss_vs_n.png",
                                       "language_sensitivity.png"}


def test_slices_of_other_dims_keep_their_own_floor():
    """Each (parameterization, bias) is a slice with its own floor: kappa 1's is lower on the same graph."""
    prep = lang.prepare(combined(widths=WIDTHS[::3], steps=STEPS[::4], lrs=LRS[1:3], seeds=2))
    floors = {(sd.sel["parameterization"], sd.sel["bias"]): sd.floor for sd in prep.slices}
    assert floors == {("sp", 0.0): E, ("sp", 1.0): E - 0.5, ("mup", 0.0): E, ("mup", 1.0): E - 0.5}
    for sd in prep.slices:
        assert sd.irreducible == pytest.approx(sd.floor - 0.003) and np.nanmin(sd.excess) > 0


def test_analyse_writes_json_and_figures(tmp_path):
    ds = combined(widths=WIDTHS[::2], steps=STEPS[::2], lrs=LRS[1:4], seeds=3).sel(bias=[1.0])
    log = io.StringIO()
    paths = lang.analyse(ds, tmp_path, SimpleNamespace(bootstrap=20, figures=True), [], log=log, warn=io.StringIO())
    names = {p.name for p in paths}
    assert names == {"language.json", "language_excess_vs_n.png", "language_loss_vs_n.png", "language_sensitivity.png",
                     "language_excess_vs_d.png", "language_frontier_6nd.png", "language_frontier_exact.png",
                     "language_mup_sp.png"}
    for p in paths:
        if p.suffix == ".png":
            assert p.stat().st_size > 10_000, p
    out = json.loads((tmp_path / "language.json").read_text(),
                     parse_constant=lambda c: pytest.fail(f"language.json holds {c}"))
    assert len(out["slices"]) == 2 and len(out["n_scaling"]) == 2 and len(out["frontier"]) == 4
    assert {s["slice"]["parameterization"] for s in out["slices"]} == {"sp", "mup"}
    (m,) = out["mup_vs_sp"]
    assert m["slice"] == {"bias": 1.0} and set(m["by"]) == {"sp", "mup"} and m["lower"] == ["mup"] * len(m["lower"])
    assert m["by"]["mup"]["alpha_common"] > m["by"]["sp"]["alpha_common"]
    assert m["by"]["sp"]["best_lr"] == [3e-2, 3e-2, 1e-2, 3e-3]       # best lr of each width at the largest D
    text = log.getvalue()
    assert "muP vs SP" in text and "compute-optimal" in text and "fit sensitivity" in text
    # the figures can be drawn again from the JSON
    assert len(lang.make_figures(out, tmp_path / "again")) == 7


# ------------------------------------------------------------------------------------------ review defects

def test_fully_diverged_slices_report_no_data():
    """A parameterization whose every member diverged, then every member of the sweep: "no data", no crash."""
    c = combined(widths=WIDTHS[::2], steps=STEPS[::3], lrs=LRS[1:3], seeds=2)
    c["diverged"].loc[dict(parameterization="sp")] = True
    c["final_test_loss"].loc[dict(parameterization="sp")] = np.nan
    s = lang.summarize(c, n_boot=10)
    sp = [fr for fr in s["frontier"] if fr["slice"]["parameterization"] == "sp"]
    assert len(sp) == 4 and all("no data" in fr["envelope"]["note"] and "no data" in fr["isoflop"]["note"] for fr in sp)
    assert "no data" in lang.describe(s)
    c["diverged"][:] = True
    c["final_test_loss"][:] = np.nan
    s = lang.summarize(c, n_boot=10)
    assert all(r["alpha"] is None for r in s["n_scaling"]) and all("no data" in fr["note"] for fr in s["frontier"])
    json.dumps(lang.to_json(s), allow_nan=False)
    lang.describe(s)


def test_no_interval_from_two_runs_and_coarse_intervals_flagged():
    """2 runs: no interval (the median has 3 distinct resamples); 3 runs: an interval flagged coarse, which the
    sensitivity-vs-bootstrap ratio does not divide by."""
    (two,) = lang.n_scaling(sweep(B=1e-9, steps=STEPS[-2:], seeds=2), n_boot=40)
    assert two["alpha"] is not None and two["alpha_ci"] is None and "fewer than 3" in two["ci_note"]
    ds = sweep(B=1e-9, steps=STEPS[-2:], seeds=3)
    s = lang.summarize(ds, n_boot=40)
    (three,) = s["n_scaling"]
    assert three["alpha_ci"] is not None and three["ci_coarse"] and three["ci_distinct"]["alpha"] < 10
    (sens,) = s["sensitivity"]["summary"]
    assert sens["spread_over_ci"] is None and "coarse" in sens["spread_over_ci_note"]
    text = lang.describe(s)
    assert "coarse interval" in text and "no spread / interval ratio" in text
    assert "fewer than 3" in lang.describe(lang.summarize(sweep(B=1e-9, steps=STEPS[-2:], seeds=2), n_boot=10))


def test_sensitivity_says_when_the_window_could_not_vary():
    ds = sweep(widths=WIDTHS[:4], B=1e-9, steps=STEPS[-2:], lrs=LRS[2:3], seeds=1)
    (s,) = lang.sensitivity(ds, n_boot=0)["summary"]
    assert s["window_varied"] is False and s["n_windows"] == 1 and s["window_range"] is None
    assert "could not vary" in s["window_note"]
    assert "could not vary" in lang.describe(lang.summarize(ds, n_boot=0))
    (s,) = lang.sensitivity(sweep(widths=WIDTHS[:5], B=1e-9, steps=STEPS[-2:], lrs=LRS[2:3], seeds=1), n_boot=0)["summary"]
    assert s["window_varied"] and s["n_windows"] == 3


def test_a_single_lr_is_reported_as_not_tuned():
    s = lang.summarize(sweep(widths=WIDTHS[::2], steps=STEPS[::4], lrs=LRS[2:3], seeds=1), n_boot=0)
    text = lang.describe(s)
    assert s["lr"]["single"] == LRS[2] and "lr not tuned" in text and "best lr per (N, D) over" not in text


def test_mup_vs_sp_with_one_parameterization_has_no_contrast(tmp_path):
    ds = combined(widths=WIDTHS[::2], steps=STEPS[::4], lrs=LRS[1:3], seeds=1).sel(parameterization=["sp"], bias=[0.0])
    s = lang.summarize(ds, n_boot=0)
    (m,) = s["mup_vs_sp"]
    assert m["contrast"] is False and m["lower"] == [] and "only parameterization 'sp'" in m["note"]
    assert "no muP-vs-SP contrast" in lang.describe(s)
    assert "language_mup_sp.png" not in {p.name for p in lang.make_figures(lang.to_json(s), tmp_path)}


def test_headline_window_needs_enough_falling_sizes():
    w = lang.headline_window(np.array([1e4, 2e4]), np.array([1.0, 3.0]))
    assert not w["passed"] and w["too_few"]
    w = lang.headline_window(np.array([1e4, 2e4]), np.array([3.0, 1.0]))
    assert not w["passed"] and w["too_few"]
    w = lang.headline_window(2.0 ** np.arange(3), 2.0 ** -np.arange(3))
    assert not w["passed"] and w["too_few"] and "too few sizes" in w["rule"]
    x = 2.0 ** np.arange(6)
    w = lang.headline_window(x, x ** 0.3)                       # a perfect law, but the excess rises
    assert not w["passed"] and not w["falling"]
    assert lang.headline_window(x, x ** -0.3)["passed"]
    (row,) = lang.n_scaling(sweep(widths=WIDTHS[:2], B=1e-9, steps=STEPS[-2:], lrs=LRS[2:3], seeds=1), n_boot=0)
    assert row["alpha"] is None and "too few sizes" in row["note"]
    ds = sweep(widths=WIDTHS[:3], B=1e-9, steps=STEPS[-2:], lrs=LRS[2:3], seeds=1)
    (row,) = lang.n_scaling(ds, n_boot=0)
    assert row["alpha"] is not None and not row["window"]["passed"]
    assert "too few sizes for the window rule" in lang.describe(lang.summarize(ds, n_boot=0))


def test_fixed_training_sets_use_unique_tokens_as_d():
    """task.dataset_size > 0: D = min(tokens seen, dataset_size x tokens per example (the context))."""
    ds = sweep(widths=WIDTHS[::2], steps=STEPS[::2], lrs=LRS[2:3], seeds=1, extra={"dataset_size": {0: 0.0, 4096: 0.0}})
    with pytest.raises(ValueError, match="unique data D is unknown"):
        lang.prepare(ds)
    ds.attrs["sweepjax_config"] = f'[task]\nname = "text"\ncontext = {CONTEXT}\ndataset_size = 0\n'
    prep = lang.prepare(ds)
    by = {sd.sel["dataset_size"]: sd for sd in prep.slices}
    seen = np.broadcast_to(STEPS[::2] * float(TOKENS_PER_STEP), by[0].tokens.shape)
    np.testing.assert_array_equal(by[0].tokens, seen)
    np.testing.assert_array_equal(by[4096].tokens, np.minimum(seen, 4096 * CONTEXT))
    np.testing.assert_array_equal(by[4096].compute["6ND"], by[0].compute["6ND"])    # compute counts tokens seen
    assert any("unique training tokens" in n for n in prep.notes) and any("past one epoch" in n for n in by[4096].notes)


def test_a_free_floor_below_the_exact_one_is_flagged():
    ds = sweep(B=1e-9, steps=STEPS[-2:], seeds=3, stated_floor=E + 0.05)       # true floor 0.05 below the stated
    s = lang.summarize(ds, n_boot=10)
    free = [r for r in s["sensitivity"]["rows"] if r["floor"] == "free" and r["headline"] and r["n"] == lang.HEADLINE_N]
    assert len(free) == 1 and free[0]["floor_below_exact"] and free[0]["E"] == pytest.approx(E, abs=0.01)
    assert s["sensitivity"]["summary"][0]["floor_below_exact"] >= 1
    assert "BELOW the exact floor" in lang.describe(s)
    right = lang.sensitivity(sweep(B=1e-9, steps=STEPS[-2:], seeds=3), n_boot=0)["rows"]
    assert not any(r.get("floor_below_exact") for r in right)


def test_envelope_with_one_width_has_no_frontier():
    fr = lang.compute_frontier(sweep(widths=WIDTHS[3:4], lrs=LRS[2:3], seeds=1), n_boot=0)
    for r in fr:
        env = r["envelope"]
        assert env["a_all"] is None and env["a"] is None and "no frontier" in env["note"]


def test_exact_flop_frontier_matches_brute_force(summary):
    """N_opt ~ C^a under the exact FLOP count, found independently: the true law minimised on a fine grid of
    widths with D = C / (3 x the sweep's forward FLOPs per token at that width)."""
    w = np.geomspace(1.0, 1e5, 40001)
    N = n_non_embedding(w)
    per_token = 3 * (2 * N + 2 * VOCAB * w + 8 * CONTEXT * w)
    exact = next(r for r in summary["frontier"] if r["compute"] == "exact")
    budgets = np.asarray(exact["joint_fit"]["fixed"]["frontier"]["compute"], float)
    n_opt = [N[np.argmin(A * N ** -A_EXP + B * (c / per_token) ** -B_EXP)] for c in budgets]
    a_true = np.polyfit(np.log(budgets), np.log(n_opt), 1)[0]
    assert abs(a_true - B_EXP / (A_EXP + B_EXP)) > 0.005        # the exact count moves a off the 6ND answer
    for j in exact["joint_fit"].values():
        assert j["a"] == pytest.approx(a_true, abs=0.015)


def text_sweep(**kw) -> xr.Dataset:
    """A text-task sweep over source: bigram (exact floors) and corpus (floors NaN: unknown)."""
    ds = sweep(extra={"source": {"bigram": 0.0, "corpus": 0.0}}, **kw)
    for name in ("test_bayes_loss", "irreducible_loss"):
        ds[name].loc[dict(source="corpus")] = np.nan
    return ds


def test_unknown_floor_is_fitted_not_taken_as_zero():
    import warnings
    ds = text_sweep(widths=WIDTHS[::2], steps=STEPS[-3:], B=1e-9, seeds=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        s = lang.summarize(ds, n_boot=10)
        text = lang.describe(s)
    by = {r["slice"]["source"]: r for r in s["n_scaling"]}
    corpus, bigram = by["corpus"], by["bigram"]
    assert corpus["floor_fitted"] and corpus["floor"] is None and corpus["label"] == lang.FITTED_LABEL
    assert corpus["E"] == pytest.approx(E, abs=0.02) and corpus["E_ci"] is not None
    assert corpus["alpha"] == pytest.approx(A_EXP, abs=0.05)
    assert not bigram["floor_fitted"] and bigram["floor"] == E and "Bayes" in bigram["label"]
    assert bigram["alpha"] == pytest.approx(A_EXP, abs=0.03)
    rows = [r for r in s["sensitivity"]["rows"] if r["slice"]["source"] == "corpus"]
    assert rows and {r["floor"] for r in rows} == {"free"}
    summ = {x["slice"]["source"]: x for x in s["sensitivity"]["summary"]}
    assert summ["corpus"]["fixed_floor"] == lang.NO_FLOOR and summ["bigram"]["fixed_floor"] is None
    joint = {(j["slice"]["source"], j["floor"]): j for j in s["joint"]}
    assert joint[("corpus", "fixed")]["note"] == lang.NO_FLOOR and joint[("corpus", "free")]["alpha"] is not None
    assert joint[("bigram", "fixed")]["alpha"] is not None
    table = {sl["slice"]["source"]: sl for sl in s["slices"]}
    assert table["corpus"]["floor_fitted"] and table["corpus"]["floor"] is None
    assert "unknown (floor fitted)" in text and "loss ~ E + A N^-alpha (floor fitted: E = " in text and lang.NO_FLOOR in text
    json.dumps(lang.to_json(s), allow_nan=False)


def test_a_sweep_without_widths_is_skipped_with_a_note(tmp_path):
    """The ladder's generators sweep depth only: the study step says why it does nothing instead of failing."""
    ds = sweep(B=1e-9, seeds=1).isel(steps=-1, seed=0, width=0, drop=True)
    log = io.StringIO()
    assert lang.analyse(ds, tmp_path, SimpleNamespace(bootstrap=0, figures=True), [], log=log) == []
    assert "no width axis" in log.getvalue() and not (tmp_path / "language.json").exists()


def test_figures_survive_a_slice_with_nothing_positive_to_show(tmp_path):
    """A floor-fitted slice whose law could not be fitted has no excess at all: its panels say so (log axes of
    nothing made matplotlib raise)."""
    ds = sweep(B=1e-9, seeds=3)
    ds = ds.assign(test_bayes_loss=ds.test_bayes_loss * np.nan, irreducible_loss=ds.irreducible_loss * np.nan,
                   final_test_loss=ds.final_test_loss * 0 + 2.0)   # flat, floor unknown: no law, no fitted floor
    paths = lang.analyse(ds, tmp_path, SimpleNamespace(bootstrap=10, figures=True), [])
    assert any(p.name == "language_excess_vs_n.png" for p in paths)


def test_an_exponent_the_robust_fit_does_not_pin_is_flagged():
    """The language ladder's bigram D-scaling at width 64 (3 seeds x 4 budgets, as measured): the Huber fit of
    4 medians whose log residuals exceed its delta is nearly flat, so near-best starts span a wide range of
    exponents and a 1e-6 change of one point moves the reported one; such a fit is flagged, a clean law is not."""
    D = np.array([6.4e4, 1.28e5, 2.56e5, 5.12e5])
    Y = np.array([[0.102611, 0.055299, 0.035161, 0.021728], [0.099571, 0.055288, 0.033782, 0.021783],
                  [0.106707, 0.059827, 0.034279, 0.027030]])
    moved = Y.copy()
    moved[0, 0] -= 1e-6
    rows = [lang._fit(D, y, "power_law", n_boot=0, seed=0, level=0.95) for y in (Y, moved)]
    for r in rows:
        assert r["unidentified"] and "NOT IDENTIFIED" in r["identified_note"]
        assert r["start_spread"]["alpha"] > lang.START_SPREAD_MAX
        lo, hi = r["alpha_tied"]
        assert lo <= r["alpha"] <= hi and hi - lo == pytest.approx(r["start_spread"]["alpha"])
        assert lo < 0.69 and hi > 0.77   # both runs' values (0.691, 0.770) lie in the flat stretch
    clean = lang._fit(D, 3.0 * D[None, :] ** -0.5 * np.array([[1.0], [1.01], [0.99]]), "power_law", n_boot=0,
                      seed=0, level=0.95)
    assert clean["alpha"] == pytest.approx(0.5, abs=1e-6) and not clean["unidentified"]
