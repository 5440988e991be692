"""Coordinate check: activation sizes after a few training steps, across widths, under SP and muP.

Under muP the size of every activation stays the same as the width grows (the curves over width
are flat at every step); under the standard parameterization with Adam the hidden updates grow
with width, so the attention and MLP outputs and the logits drift upward with width after the
first step (Yang et al., Tensor Programs V). The check trains the config's own sweep with the
engine, recording activation RMS at every step.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from sweepjax.config import Config, ConfigError, check_combinations, default

# keys of the schedule shape, back at their defaults under the constant schedule (else refused as no-ops)
SCHEDULE_KEYS = ("train.final_lr_fraction", "train.warmup_fraction", "train.decay_fraction")


def coordcheck_config(cfg: Config, steps: int) -> Config:
    """``cfg`` trained for ``steps`` steps at its constant peak lr, activations recorded at every step,
    under both SP and muP.

    ``model.parameterization`` is swept over [sp, mup] unless the config sweeps it already. All
    widths share one padded program per parameterization (a few steps are cheap next to compiles).
    ``cfg`` may be loaded with ``combinations=False`` (muP keys such as base_width are refused under
    SP alone); the completed config is checked here.
    """
    if cfg.model.family != "transformer":
        raise ConfigError(f"model.family = {cfg.model.family!r}: the coordinate check is for transformers")
    if len(cfg.sweep.get("model.width", [])) < 2:
        raise ConfigError("sweep.model.width: the coordinate check needs at least two widths")
    if steps < 1:
        raise ConfigError(f"--steps {steps}: must be >= 1")
    new = cfg.with_values({"train.steps": steps, "train.chunk_steps": steps, "eval.points": steps,
                           "train.schedule": "constant",
                           **{k: default(k) for k in SCHEDULE_KEYS}, "eval.activations": True, "eval.save_params": False,
                           "run.max_padding_waste": 0.0})
    new.sweep = {k: v for k, v in cfg.sweep.items() if k != "train.steps"}  # --steps sets every member's length
    new.sweep.setdefault("model.parameterization", ["sp", "mup"])
    check_combinations(new)
    return new


def spread(ds: xr.Dataset, step: int | None = None) -> xr.DataArray:
    """Largest / smallest activation RMS over widths at ``step`` (default: the last), per parameterization and probe.

    Each width's value is the median over every other sweep dim (seeds ...). 1 means perfectly flat.
    """
    act = ds["activation_rms"].isel(eval_step=-1) if step is None else ds["activation_rms"].sel(eval_step=step)
    keep = {"width", "parameterization", "probe"}
    act = act.median([d for d in act.dims if d not in keep])
    return act.max("width") / act.min("width")


def describe(ds: xr.Dataset) -> str:
    """A table of the spread over widths at the first step, the second and the last."""
    steps = ds["eval_step"].values
    chosen = list(dict.fromkeys([int(steps[0]), int(steps[min(1, len(steps) - 1)]), int(steps[-1])]))
    widths = ds["width"].values
    lines = [f"activation RMS, largest / smallest over widths {widths.min()}..{widths.max()} "
             f"({widths.max() / widths.min():g}x), median over seeds",
             "| parameterization | probe | " + " | ".join(f"step {s}" for s in chosen) + " |",
             "|---|---|" + "---|" * len(chosen)]
    tables = [spread(ds, s) for s in chosen]
    for p in np.atleast_1d(ds["parameterization"].values):
        for probe in ds["probe"].values:
            vals = " | ".join(f"{float(t.sel(parameterization=p, probe=probe)):.2f}" for t in tables)
            lines.append(f"| {p} | {probe} | {vals} |")
    return "\n".join(lines)


def plot_coordcheck(ds: xr.Dataset, path: Path) -> Path:
    """Activation RMS vs width, one panel per (parameterization, probe), one line per training step."""
    from sweepjax.plots import plt, save, width_ticks
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
            width_ticks(ax, widths)
            if c == 0:
                ax.set_ylabel("activation RMS")
            if r == len(pars) - 1:
                ax.set_xlabel("width (d_model)")
    axes[0, -1].legend(fontsize=6)
    fig.suptitle("Coordinate check: flat in width under muP, drifting under SP", fontsize=10)
    return save(fig, path)
