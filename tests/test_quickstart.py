"""End to end: the quickstart config through the CLI, and what it can honestly show on CPU."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from sweepjax.cli import main
from sweepjax.config import load_config
from sweepjax.tasks.markov import Markov

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_end_to_end(tmp_path):
    out = tmp_path / "qs"
    assert main(["run", str(ROOT / "configs" / "quickstart.toml"), "--out", str(out)]) == 0
    # Readable by plain xarray, with the resolved config and a manifest beside it.
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as ds:
        ds = ds.load()
    assert set(ds["activation"].values) == {"silu", "relu"}
    assert not ds["diverged"].any()
    assert (out / "config.toml").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["backend"] == "cpu" and manifest["run_seconds"] > 0
    rows = {r["slice"]["activation"]: r for r in json.loads((out / "fit.json").read_text())}
    for act in ("silu", "relu"):
        lo, hi = rows[act]["alpha_ci"]
        assert np.isfinite([rows[act]["alpha"], lo, hi]).all() and lo < hi
    # What 16 seeds x widths 2..64 x 4000 full-batch Adam steps can show on CPU: ReLU's loss falls
    # faster with width than SiLU's over the small widths (4..16; width 2 is left out because
    # 2-neuron ReLU nets fail, loss ~0.9, which would exaggerate ReLU's slope). ReLU nets
    # approximate x^2 piecewise linearly and keep placing kinks better (~N^-2.6 here, tending
    # to N^-4); SiLU nets start better but improve more slowly (~N^-1 to N^-1.7 here). The
    # asymptotic regimes of the study need the GPU-sized sweep.
    med = ds["final_test_loss"].median("seed")
    small = [4, 8, 16]
    slope = {a: np.polyfit(np.log(small), np.log(med.sel(activation=a, width=small)), 1)[0] for a in rows}
    assert slope["relu"] < slope["silu"] < 0, slope
    assert rows["relu"]["alpha"] > rows["silu"]["alpha"] > 0
    for name in ("scaling.png", "loss_histogram_width2.png", "ensemble_vs_wide.png", "mirror_pairs.png"):
        assert (out / "figures" / name).stat().st_size > 10_000, name


def test_transformer_markov_config_end_to_end(tmp_path):
    """configs/transformer_markov.toml through the CLI (its [on_cpu] sizes, 80 steps, one padded program
    per parameterization): SP and muP
    programs, loss falls toward the entropy rate and with width, counts and the fit are saved."""
    out = tmp_path / "tm"
    args = ["run", str(ROOT / "configs" / "transformer_markov.toml"), "--out", str(out),
            "--set", "train.steps=80", "--set", "run.max_padding_waste=0", "--set", "run.bootstrap=50"]
    assert main(args) == 0
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as ds:
        ds = ds.load()
    assert set(ds["parameterization"].values) == {"sp", "mup"} and not ds["diverged"].any()
    # The floor of the test loss is the true chain's loss on the very test sequences evaluated on
    # (entropy rate + the test set's sampling offset, +0.017 nats at these sizes).
    bayes = Markov(load_config(out / "config.toml").task).test_bayes_loss()
    assert ds["test_bayes_loss"].shape == () and float(ds["test_bayes_loss"]) == bayes
    assert 0.01 < bayes - float(ds["irreducible_loss"]) < 0.03
    excess = (ds["final_test_loss"] - ds["test_bayes_loss"]).median("seed")
    start = ds["test_loss"].isel(eval_step=0) - ds["test_bayes_loss"]
    assert (excess > 0).all() and (excess < start.min()).all()
    assert (excess.sel(width=64) < excess.sel(width=16)).all()
    assert (ds["train_flops"] > ds["train_flops_6nd"]).all() and (ds["n_params_non_embedding"] < ds["n_params"]).all()
    rows = json.loads((out / "fit.json").read_text())
    assert {r["slice"]["parameterization"] for r in rows} == {"sp", "mup"}
    assert all("Bayes" in r["loss"] and r["diverged_per_width"] == [0, 0, 0] for r in rows)
    assert (out / "figures" / "scaling.png").is_file()
    # `sweepjax plot` redoes the fit, also for a directory saved by an older version (task keys of every
    # task in [task], model.zero_readout): only its [run] table is read.
    (out / "fit.json").unlink()
    saved = (out / "config.toml").read_text()
    (out / "config.toml").write_text(saved.replace("[task]\n", "[task]\npower = 2.0\ngrid_size = 1001\n")
                                     .replace("[model]\n", "[model]\nzero_readout = false\n"))
    assert main(["plot", str(out)]) == 0
    assert json.loads((out / "fit.json").read_text()) == rows
