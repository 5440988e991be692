"""Figures of the lottery-ticket study, made from a results Dataset (matplotlib, Agg backend)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from sweepjax.analysis.ensemble import ensemble_vs_wide  # noqa: E402
from sweepjax.analysis.mirror import mirror_distances  # noqa: E402
from sweepjax.analysis.scaling import fitted_loss, slices  # noqa: E402
from sweepjax.fit.inputs import reduce_runs  # noqa: E402


def _name(sel: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in sel.items()) or "all"


def _save(fig, path: Path) -> Path:
    """Lay out, write and close a figure."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _width_ticks(ax, widths) -> None:
    """Plain-number ticks at the swept widths on a log axis."""
    ax.set_xticks(widths, [f"{int(w)}" for w in widths])
    ax.minorticks_off()


def plot_scaling(ds: xr.Dataset, rows: list[dict], path: Path) -> Path:
    """Median final test loss vs width (IQR band over seeds), fitted power law, N^-1 and N^-4 guides.

    Diverged seeds count as the worst loss (as in the fit): a median or quartile they make +inf is not drawn.
    """
    fig, ax = plt.subplots(figsize=(6, 4.5))
    target, label = fitted_loss(ds)
    for i, row in enumerate(rows):
        da = target.sel(**row["slice"]) if row["slice"] else target
        w = da["width"].values
        v = da.transpose("seed", "width").values if "seed" in da.dims else da.values[None]
        with np.errstate(invalid="ignore"):  # quartiles between a finite loss and +inf
            q = np.nanpercentile(v, [25, 50, 75], axis=0)
        q[1] = reduce_runs(v, "median")
        q = np.where(np.isfinite(q), q, np.nan)
        color = f"C{i}"
        ax.fill_between(w, q[0], q[2], color=color, alpha=0.2, lw=0)
        ax.plot(w, q[1], "o", color=color, label=f"{_name(row['slice'])} (median over seeds)")
        if row["alpha"] is None:
            continue
        x = np.array(row["widths"])
        p = row["params"]
        fit_y = p["A"] * x ** -p["alpha"] + p.get("E", 0.0)
        ci = f" [{row['alpha_ci'][0]:.2f}, {row['alpha_ci'][1]:.2f}]" if row["alpha_ci"] else ""
        ax.plot(x, fit_y, "-", color=color, label=f"fit: alpha = {row['alpha']:.2f}{ci}")
    fitted = [r for r in rows if r["alpha"] is not None]
    if fitted:
        x0, y0 = fitted[0]["widths"][0], fitted[0]["median_loss"][0]
        xs = np.array([x0, ds["width"].values.max()])
        guides = ((1, ":"),) if "irreducible_loss" in ds else ((1, ":"), (4, "--"))  # N^-4: the lottery study's
        for p, style in guides:
            ax.plot(xs, y0 * (xs / x0) ** -p, "k" + style, lw=1, label=f"N^-{p} guide")
    ax.set(xscale="log", yscale="log", xlabel="width N", ylabel=label, title="Loss vs width")
    _width_ticks(ax, ds["width"].values)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_histogram(ds: xr.Dataset, path: Path, width: int = 2) -> Path:
    """Histogram over seeds of log10 final test loss at ``width`` (discrete peaks = lottery tickets)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, sel in enumerate(slices(ds, ("seed", "width"))):
        loss = ds["final_test_loss"].sel(width=width, **sel).values.ravel()
        loss = np.log10(loss[np.isfinite(loss) & (loss > 0)])
        ax.hist(loss, bins=60, alpha=0.6, color=f"C{i}", label=f"{_name(sel)} ({len(loss)} seeds)")
    ax.set(xlabel="log10 final test MSE", ylabel="seeds", title=f"Final loss over seeds, width {width}")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_ensemble(ds: xr.Dataset, path: Path, draws: int = 100) -> Path:
    """K nets of width N averaged vs one net of width K*N, against total hidden units K*N."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    base = int(ds["width"].values.min())
    n_seeds = ds.sizes.get("seed", 1)
    ks = [k for k in 2 ** np.arange(0, 16) if k <= n_seeds]
    for i, sel in enumerate(slices(ds, ("seed", "width"))):
        rows = ensemble_vs_wide(ds, base, ks, draws=draws, **sel)
        kn = np.array([r["wide_width"] for r in rows])
        ax.plot(kn, [r["ensemble_median"] for r in rows], "o-", color=f"C{i}",
                label=f"{_name(sel)}: mean of K nets of width {base}")
        ax.fill_between(kn, [r["ensemble_q25"] for r in rows], [r["ensemble_q75"] for r in rows],
                        color=f"C{i}", alpha=0.2, lw=0)
        ax.plot(kn, [r["wide_median"] for r in rows], "s--", color=f"C{i}", mfc="none",
                label=f"{_name(sel)}: one net of width K*{base}")
    ax.set(xscale="log", yscale="log", xlabel="total hidden units K*N", ylabel="test MSE",
           title="Ensemble of K small nets vs one wide net")
    _width_ticks(ax, kn)
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_mirror(ds: xr.Dataset, path: Path, tol: float = 0.05, **sel) -> Path:
    """Neurons (w, b) of the widest net (its first seed that did not diverge: a diverged member's
    parameters are NaN), trained vs init, coloured by mirror distance. Other swept dims not fixed by
    ``sel`` (steps, lr, ...) are taken at their last value, named in the title."""
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
    fig.suptitle(f"Mirror pairs, width {width}, {_name(sel)}")
    return _save(fig, path)


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


def plot_coordcheck(ds: xr.Dataset, path: Path) -> Path:
    """Activation RMS vs width, one panel per (parameterization, probe), one line per training step."""
    pars, probes = list(np.atleast_1d(ds["parameterization"].values)), list(ds["probe"].values)
    act = ds["activation_rms"]
    act = act.median([d for d in act.dims if d not in ("width", "parameterization", "probe", "eval_step")])
    steps, widths = ds["eval_step"].values, ds["width"].values
    fig, axes = plt.subplots(len(pars), len(probes), figsize=(2.6 * len(probes), 2.4 * len(pars)),
                             sharex=True, sharey="col", squeeze=False)
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(steps)))
    for r, p in enumerate(pars):
        for c, probe in enumerate(probes):
            ax = axes[r, c]
            for color, step in zip(colors, steps):
                ax.plot(widths, act.sel(parameterization=p, probe=probe, eval_step=step).values, "o-",
                        color=color, ms=3, lw=1, label=f"step {step}")
            column = act.sel(probe=probe).values
            lo, hi = np.nanmin(column), np.nanmax(column)
            ax.set(xscale="log", yscale="log", title=f"{p}: {probe}", ylim=(lo / 2, hi * 2))
            _width_ticks(ax, widths)
            if c == 0:
                ax.set_ylabel("activation RMS")
            if r == len(pars) - 1:
                ax.set_xlabel("width (d_model)")
    axes[0, -1].legend(fontsize=6)
    fig.suptitle("Coordinate check: flat in width under muP, drifting under SP", fontsize=10)
    return _save(fig, path)
