"""Figures of the lottery-ticket study (Liu & Tegmark 2023): the width-2 ticket histogram, ensembles of
K small nets against one wide net, and mirror pairs in the widest net; :func:`make_figures` makes
every figure a results Dataset supports (the width-scaling figure included)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from sweepjax.analysis.mirror import mirror_distances
from sweepjax.analysis.scaling import plot_scaling, slice_name, slices
from sweepjax.files import FIGURES_DIR


def plot_histogram(ds: xr.Dataset, path: Path, width: int = 2) -> Path:
    """Histogram over seeds of log10 final test loss at ``width`` (discrete peaks = lottery tickets)."""
    from sweepjax.plots import plt, save
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, sel in enumerate(slices(ds, ("seed", "width"))):
        loss = ds["final_test_loss"].sel(width=width, **sel).values.ravel()
        loss = np.log10(loss[np.isfinite(loss) & (loss > 0)])
        ax.hist(loss, bins=60, alpha=0.6, color=f"C{i}", label=f"{slice_name(sel)} ({len(loss)} seeds)")
    ax.set(xlabel="log10 final test MSE", ylabel="seeds", title=f"Final loss over seeds, width {width}")
    ax.legend(fontsize=8)
    return save(fig, path)


def plot_ensemble(ds: xr.Dataset, path: Path, draws: int = 200) -> Path:
    """K nets of each width averaged, against single nets with as many parameters
    (:func:`sweepjax.ensemble.plot_table` of :func:`sweepjax.ensemble.ensemble_table`)."""
    from sweepjax.ensemble import ensemble_table, plot_table
    n_seeds = ds.sizes.get("seed", 1)
    ks = [int(k) for k in 2 ** np.arange(0, 16) if k <= n_seeds]
    return plot_table(ensemble_table(ds, ks, by="width", draws=draws), path, by="width")


def plot_mirror(ds: xr.Dataset, path: Path, tol: float = 0.05, **sel) -> Path:
    """Neurons (w, b) of the widest net (its first seed that did not diverge: a diverged member's
    parameters are NaN), trained vs init, coloured by mirror distance. Other swept dims not fixed by
    ``sel`` (steps, lr, ...) are taken at their last value, named in the title."""
    from sweepjax.plots import plt, save
    width = int(ds["width"].values.max())
    sub = ds.sel(width=width, **sel)
    other = [d for d in sub["w_in" if "w_in" in sub else "param.w_in"].dims
             if d in ds.coords and d != "seed" and d in sub.dims and not d.startswith("param.")]
    sel = {**sel, **{d: sub[d].values[-1].item() for d in other}}
    sub = sub.isel({d: -1 for d in other})
    if "seed" in sub.dims:
        div = sub["diverged"].astype(bool) if "diverged" in sub else None
        ok = np.flatnonzero(~div.any([d for d in div.dims if d != "seed"]).values) if div is not None else [0]
        sub = sub.isel(seed=int(ok[0]) if len(ok) else 0)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, prefix, title in ((axes[0], "param.init.", "at init"), (axes[1], "param.", "trained")):
        w = sub[prefix + "w_in"].values.reshape(-1)[:width]
        b = sub[prefix + "b_in"].values.reshape(-1)[:width]
        d = mirror_distances(w, b)
        frac = np.mean(d < tol)
        sc = ax.scatter(w, b, c=np.log10(np.maximum(d, 1e-6)), s=4, cmap="viridis_r")
        ax.set(xlabel="input weight w", ylabel="bias b",
               title=f"{title}: {frac:.0%} of {width} neurons\nhave a mirror (-w, b) within {tol:g}")
        fig.colorbar(sc, ax=ax, label="log10 mirror distance")
    fig.suptitle(f"Mirror pairs, width {width}, {slice_name(sel)}")
    return save(fig, path)


def make_figures(ds: xr.Dataset, rows: list[dict], outdir: str | Path) -> list[Path]:
    """Every figure the results support, written into ``outdir``; returns the paths."""
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    made = []
    if "width" in ds.dims and rows:
        made.append(plot_scaling(ds, rows, outdir / "scaling.png"))
    if "seed" in ds.dims and "width" in ds.dims and 2 in ds["width"].values:
        made.append(plot_histogram(ds, outdir / "loss_histogram_width2.png"))
    if "predictions" in ds and "seed" in ds.dims and "width" in ds.dims:
        made.append(plot_ensemble(ds, outdir / "ensemble_vs_wide.png"))
    one_hidden_layer = "param.w_in" in ds and "param.w_h" not in ds and "param.w1" not in ds
    if one_hidden_layer and "width" in ds.dims:
        act = {"activation": "silu"} if "activation" in ds.dims and "silu" in ds["activation"].values else {}
        made.append(plot_mirror(ds, outdir / "mirror_pairs.png", **act))
    return made


def analyse(ds: xr.Dataset, out: str | Path, run_cfg, width_rows: list[dict], log=None, warn=None) -> list[Path]:
    """The study's step after a run (the task's ``STUDY``): its figures, when ``run.figures``."""
    return make_figures(ds, width_rows, Path(out) / FIGURES_DIR) if run_cfg.figures else []
