"""End to end: the quickstart config through the CLI, and what it can honestly show on CPU."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

from sweepjax.cli import main

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
