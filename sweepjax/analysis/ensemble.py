"""Ensemble analysis: the loss of the average of K members' predictions.

Works on the ``predictions`` and ``test_target`` variables of a results Dataset (run with
``eval.save_predictions = true``); losses are the task's mean squared error on the test grid.
"""
from __future__ import annotations

import numpy as np
import xarray as xr


def ensemble_losses(pred: np.ndarray, target: np.ndarray, ks: list[int], draws: int = 100,
                    seed: int = 0) -> dict[int, np.ndarray]:
    """MSE of the mean prediction of K members drawn at random without replacement.

    ``pred`` is (members, points) with NaN rows for diverged members (dropped); returns
    K -> array of ``draws`` losses (one per random choice of K members).
    """
    pred = pred[np.all(np.isfinite(pred), axis=1)]
    rng = np.random.default_rng(seed)
    out = {}
    for k in ks:
        if k > len(pred):
            raise ValueError(f"ensemble of K={k} needs at least {k} finite members, have {len(pred)}")
        picks = np.stack([rng.choice(len(pred), k, replace=False) for _ in range(draws)])
        mean = pred[picks].mean(axis=1)
        out[k] = np.mean(np.square(mean - target[None, :]), axis=1)
    return out


def ensemble_vs_wide(ds: xr.Dataset, width: int, ks: list[int], draws: int = 100, seed: int = 0,
                     **sel) -> list[dict]:
    """K nets of width N averaged against one net of width K*N (same parameter count, up to biases).

    ``sel`` picks the other coordinates (e.g. activation="silu"); the ensemble draws from the seeds
    at width N, the wide net's loss is the median over seeds at width K*N (NaN if not in the sweep).
    Returns one row per K: K, ensemble median / 25% / 75% loss, single-wide median loss.
    """
    sub = ds.sel(**sel) if sel else ds
    pred = sub["predictions"].sel(width=width).transpose("seed", "x").values
    ens = ensemble_losses(pred, sub["test_target"].values, ks, draws, seed)
    rows = []
    for k in ks:
        wide = (float(sub["final_test_loss"].sel(width=k * width).median("seed", skipna=True))
                if k * width in sub["width"].values else float("nan"))
        q25, q50, q75 = np.percentile(ens[k], [25, 50, 75])
        rows.append({"K": k, "ensemble_median": q50, "ensemble_q25": q25, "ensemble_q75": q75,
                     "wide_width": k * width, "wide_median": wide})
    return rows
