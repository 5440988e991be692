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
