"""End to end: the study configs through the CLI at their [on_cpu] sizes, shortened to the fewest steps at
which each still shows something real (the full CPU runs are measured, see README and benchmarks/)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sweepjax import results
from sweepjax.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _run(config: str, out: Path, *sets: str) -> tuple:
    args = ["run", str(ROOT / "configs" / config), "--out", str(out), "--set", "run.bootstrap=50"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    return results.load(out), json.loads((out / "depth.json").read_text()) if (out / "depth.json").exists() else None


def test_depth_teacher_configs_end_to_end(tmp_path):
    """configs/depth_teacher.toml and its tied twin (MSE students of depths 4..32, 300 steps): the loss falls
    with depth, the fit and the layer measures are written, and the teachers' update angles are ~pi/2
    (independent layers) and ~0 (tied)."""
    short = ("train.steps=300", "task.test_size=512")
    ds, layers = _run("depth_teacher.toml", tmp_path / "ind", *short)
    med = ds.final_test_loss.median("seed")
    assert not ds.diverged.any() and np.all(np.diff(med.values) < 0), med.values
    assert ds.final_test_loss.attrs["units"] == "squared error" and ds.sizes["layer"] == 33
    fits = json.loads((tmp_path / "ind" / "fit.json").read_text())
    (head,) = [r for r in fits if r["headline"] and r["form"] == "power_law"]
    assert head["window"] == [8, 32] and head["alpha"] > 0 and head["alpha_ci"][0] <= head["alpha"] <= head["alpha_ci"][1]
    (teacher,) = layers["teachers"]
    assert teacher["teacher"] == "independent" and 1.45 < teacher["middle_update_angle"] < 1.70
    ens = {(r["depth"], r["K"]): r for r in layers["ensembles"]}   # [on_cpu] saves the MSE students' outputs
    assert {(d, k) for d in (4, 8, 16, 32) for k in (1, 2)} == set(ens) and ens[(16, 2)]["matched"] == 32
    for name in ("depth_loss.png", "depth_update_angle.png", "depth_layer_loss.png", "depth_ensembles.png"):
        assert (tmp_path / "ind" / "figures" / name).stat().st_size > 10_000, name
    tied, tied_layers = _run("depth_teacher_tied.toml", tmp_path / "tied", *short, "run.figures=false")
    (teacher,) = tied_layers["teachers"]
    assert teacher["teacher"] == "tied" and teacher["middle_update_angle"] < 0.1
    assert not tied.diverged.any() and np.isfinite(tied.layer_update_angle.sel(depth=32).isel(layer=slice(0, 31))).all()
    # students of the tied teacher already update more smoothly (lower middle-layer angle) at every depth
    angle = lambda rows: {r["depth"]: r["middle_update_angle"] for r in rows["angles"]}
    ind_angle, tied_angle = angle(layers), angle(tied_layers)
    assert all(tied_angle[d] < ind_angle[d] for d in (4, 8, 16, 32)), (ind_angle, tied_angle)


def test_quanta_parity_config_end_to_end(tmp_path):
    """configs/quanta_parity.toml (64 subtasks of 32 bits) at 1,500 steps, widths 4/32/128, exponents 1.2/1.6,
    2 seeds: the loss falls with width, alpha_N grows with the Zipf exponent, the most frequent subtask is
    learned first, and `sweepjax qdg` clusters the widest member's gradients."""
    out = tmp_path / "qp"
    assert main(["run", str(ROOT / "configs" / "quanta_parity.toml"), "--out", str(out), "--set", "train.steps=1500",
                 "--set", "sweep.model.width=[4, 32, 128]", "--set", "sweep.seed=[0, 1]",
                 "--set", "sweep.task.zipf_exponent=[1.2, 1.6]", "--set", "run.bootstrap=50"]) == 0
    ds = results.load(out)
    med = ds.final_test_loss.median("seed")
    assert not ds.diverged.any() and (med.diff("width") < 0).all(), med.values
    rows = {r["zipf_exponent"]: r for r in json.loads((out / "quanta.json").read_text())["scaling"] if r["kind"] == "N"}
    assert 0 < rows[1.2]["alpha"] < rows[1.6]["alpha"], rows
    widest = ds.subtask_loss.sel(zipf_exponent=1.6, width=128).isel(eval_step=-1).median("seed").values
    assert widest[0] < 0.1 and widest[0] == widest.min(), widest
    assert (out / "figures" / "quanta_emergence_width.png").stat().st_size > 10_000
    assert main(["qdg", str(out), "--member", "zipf_exponent=1.6"]) == 0
    report = json.loads((out / "qdg.json").read_text())
    assert report["member"] == {"seed": 0, "width": 128, "zipf_exponent": 1.6} and report["n_kept"] > 100
    assert report["adjusted_rand_index"] is not None and report["clusters"] >= 2


def test_graph_walks_config_end_to_end(tmp_path):
    """configs/graph_walks.toml at its [on_cpu] shape on a 1,024-node graph (mean degree 10), widths 16/32/64,
    steps 150/300, 2 seeds: no member below its exact floor, kappa = 1 has the lower floor, the excess at the largest D
    falls strictly with width for both kappas, and language.json holds the N and D fits, the sensitivity
    table and a compute frontier for both kappas, with the figures."""
    out = tmp_path / "gw"
    assert main(["run", str(ROOT / "configs" / "graph_walks.toml"), "--out", str(out), "--set", "task.nodes=1024",
                 "--set", "task.edges=5120", "--set", "sweep.model.width=[16, 32, 64]",
                 "--set", "sweep.train.steps=[150, 300]", "--set", "sweep.seed=[0, 1]",
                 "--set", "run.bootstrap=50"]) == 0
    ds = results.load(out)
    excess = ds.final_test_loss - ds.test_bayes_loss
    assert not ds.diverged.any() and float(excess.min()) > -0.01
    floor = {b: np.unique(ds.irreducible_loss.sel(bias=b).values) for b in (0.0, 1.0)}
    assert len(floor[0.0]) == len(floor[1.0]) == 1 and floor[1.0][0] < floor[0.0][0], floor
    summary = json.loads((out / "language.json").read_text())
    assert summary["floors"]["ok"] and summary["floors"]["n_below_tolerance"] == 0
    rows = summary["n_scaling"]
    assert sorted(r["slice"]["bias"] for r in rows) == [0.0, 1.0] and all(r["kind"] == "N" for r in rows)
    assert all(r["alpha"] > 0 and r["window"] is not None for r in rows)
    assert all(r["decreasing"] for r in rows), [r["median_excess"] for r in rows]   # muP: wider is better at this D
    assert summary["sensitivity"]["rows"] and {f["compute"] for f in summary["frontier"]} == {"6ND", "exact"}
    for name in ("language_excess_vs_n.png", "language_frontier_6nd.png", "language_sensitivity.png"):
        assert (out / "figures" / name).stat().st_size > 10_000, name


def test_language_ladder_configs_end_to_end(tmp_path, monkeypatch):
    """configs/language_generators.toml then configs/language_ladder.toml at their [on_cpu] shape, shrunk:
    generators of depth 1/2/4 (width 16, context 8, 60 steps), then every rung with widths 8/16/24/32 and
    budgets of 20/40 steps, 3 seeds, one program per rung: each rung with a known floor stays above it, the
    results record the corpus, and language.json holds the ladder in ladder order with its figure."""
    monkeypatch.chdir(tmp_path)   # the ladder names its generators runs/language_generators, from where it runs
    gen = tmp_path / "runs" / "language_generators"
    assert main(["run", str(ROOT / "configs" / "language_generators.toml"), "--out", str(gen),
                 "--set", "task.context=8", "--set", "task.test_size=64", "--set", "sweep.model.width=[16]",
                 "--set", "model.head_size=8", "--set", "train.steps=60", "--set", "train.chunk_steps=60"]) == 0
    out = tmp_path / "ladder"
    assert main(["run", str(ROOT / "configs" / "language_ladder.toml"), "--out", str(out), "--set", "task.context=8",
                 "--set", "task.test_size=64", "--set", "task.pool_size=320", "--set", "sweep.model.width=[8, 16, 24, 32]",
                 "--set", "sweep.train.steps=[20, 40]", "--set", "run.max_padding_waste=0",
                 "--set", "run.bootstrap=50"]) == 0
    ds = results.load(out)
    rungs = ["bigram", "sampled:depth=1", "sampled:depth=2", "sampled:depth=4", "corpus"]
    assert list(ds.source.values) == rungs and not ds.diverged.any()
    excess = (ds.final_test_loss - ds.test_bayes_loss).drop_sel(source="corpus")
    assert float(excess.min()) > -0.01                                    # above every known floor
    assert np.isnan(ds.test_bayes_loss.sel(source="corpus")).all()       # the text's floor is fitted, not known
    assert len(ds.attrs["corpus_sha256"]) == 64
    lad = json.loads((out / "language.json").read_text())["ladder"]
    assert [r["source"] for r in lad["rungs"]] == rungs
    assert [r["floor"] for r in lad["rungs"]] == ["exact", "sampled", "sampled", "sampled", "fitted"]
    (ladder,) = lad["ladders"]
    assert ladder["alpha_N"]["direction"] in ("rising", "falling", "not monotone", "incomplete")
    assert (out / "figures" / "language_ladder.png").stat().st_size > 10_000
