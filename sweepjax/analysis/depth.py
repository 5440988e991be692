"""The inverse-depth study (Liu, Kangaslahti, Liu & Gore 2026): layer similarity and loss vs depth.

Layer measures (:func:`layer_metrics`, computed inside the engine with ``eval.layers`` and by
:func:`teacher_metrics` for the teacher itself) on the residual stream h_0 .. h_L of each sample,
averaged over the samples of a probe batch:

- ``norm``: |h_l|;
- ``step_angle``: arccos cos(h_l, h_{l+1}) (l < L);
- ``update_angle``: arccos cos(dh_l, dh_{l+1}), dh_l = h_{l+1} - h_l (l < L - 1): ~pi/2 when successive
  updates are uncorrelated (layers averaging as an ensemble), near 0 for smooth dynamics;
- ``end_angle``: arccos cos(h_l, h_L);
- ``progress``: (h_l - h_0).(h_L - h_0) / |h_L - h_0|^2 (0 at the input, 1 at the output);
- ``loss`` (students): the loss of h_l read out through the final norm and the head (the engine's).

Entries past a member's depth, and angles with a zero vector, are NaN.

After a run (the task's ``STUDY``): :func:`depth_fits` (loss vs depth, windows, bootstrap over runs),
:func:`angle_summary`, :func:`teacher_metrics`, the figures and :func:`analyse`. The engine imports
this module for :func:`layer_metrics`, so the fitting, results and plotting modules are imported
inside the functions that use them.
"""
from __future__ import annotations

import itertools
import json
import tomllib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

LAYER_METRICS = ("norm", "step_angle", "update_angle", "end_angle", "progress", "loss")
"""The measures on the ``layer`` dim, in the order the engine stores them (results: ``layer_<name>``)."""


def _angle(a: jax.Array, b: jax.Array) -> jax.Array:
    """Angle between the last-axis vectors of ``a`` and ``b``, NaN where one of them is zero."""
    na, nb = jnp.linalg.norm(a, axis=-1), jnp.linalg.norm(b, axis=-1)
    ok = (na > 0) & (nb > 0)
    cos = jnp.sum(a * b, axis=-1) / jnp.where(ok, na * nb, 1.0)
    return jnp.where(ok, jnp.arccos(jnp.clip(cos, -1.0, 1.0)), jnp.nan)


def layer_metrics(states: jax.Array, depth: jax.Array | int, losses: jax.Array | None = None,
                  layers: int | None = None) -> jax.Array:
    """The :data:`LAYER_METRICS` of a stream ``states`` (L + 1, B, W) whose first ``depth + 1`` entries are
    h_0 .. h_depth (``depth`` may be traced; entries past it are ignored): (len(LAYER_METRICS), layers + 1),
    each the mean over the B samples, NaN where undefined. ``losses``: (L + 1,) per-layer losses (NaN if
    None); ``layers``: the length of the layer axis minus one (default L)."""
    L = states.shape[0] - 1
    n = (L if layers is None else layers) + 1
    s = states.astype(jnp.float32)
    l = jnp.arange(L + 1)
    h0, end = s[0], s[depth]
    mean = lambda v: jnp.mean(v, axis=-1)
    nan = jnp.full((1,), jnp.nan)
    dh = s[1:] - s[:-1]
    go = end - h0
    total = jnp.sum(go * go, axis=-1)
    progress = jnp.sum((s - h0) * go, axis=-1) / jnp.where(total > 0, total, jnp.nan)
    rows = {
        "norm": mean(jnp.linalg.norm(s, axis=-1)),
        "step_angle": jnp.concatenate([mean(_angle(s[:-1], s[1:])), nan]),
        "update_angle": jnp.concatenate([mean(_angle(dh[:-1], dh[1:])), nan, nan]),
        "end_angle": mean(_angle(s, end[None])),
        "progress": mean(progress),
        "loss": jnp.full((L + 1,), jnp.nan) if losses is None else losses.astype(jnp.float32),
    }
    last = {"norm": depth, "step_angle": depth - 1, "update_angle": depth - 2, "end_angle": depth,
            "progress": depth, "loss": depth}
    out = jnp.stack([jnp.where(l <= last[k], rows[k], jnp.nan) for k in LAYER_METRICS])
    if n > L + 1:
        out = jnp.concatenate([out, jnp.full((len(LAYER_METRICS), n - L - 1), jnp.nan)], axis=1)
    return out[:, :n]


# ---------------------------------------------------------------------------------------- after a run
# (host side: numpy, xarray, the fitting module)

RUN_DIMS = ("seed", "data_seed", "teacher_seed")
"""Dims whose entries are repeated runs of one point (bootstrapped over); the others split the fits."""


def _run_dims(ds) -> list[str]:
    return [d for d in RUN_DIMS if d in ds.dims]


def _windows(depths: list[int]) -> list[tuple[int, int]]:
    """Fit windows (first, last depth): every run of three or more consecutive swept depths."""
    return [(depths[i], depths[j]) for i in range(len(depths)) for j in range(i + 2, len(depths))]


def headline_window(depths: list[int]) -> tuple[int, int]:
    """The window the study reports: all depths but the smallest when there are four or more (the
    shallowest student is off the law: a single block cannot average), else all of them."""
    return (depths[1] if len(depths) >= 4 else depths[0], depths[-1])


def depth_fits(ds, n_boot: int = 1000, level: float = 0.95, forms=("power_law", "power_law_offset"),
               seed: int = 0, log=None) -> list[dict]:
    """Loss vs depth: the median over runs (seeds) of ``final_test_loss`` fitted as each of ``forms`` over
    every window of three or more consecutive depths (window sensitivity), with a percentile bootstrap
    over runs. One row per (other swept values: temperature, teacher ...; form; window); ``headline``
    marks the window of :func:`headline_window`. Also ``local_slopes``: -d log L / d log depth between
    neighbouring depths of the medians (None where a median is not finite).

    A diverged member counts as the worst loss (+inf, as in every fit here): a depth where half or more of
    the runs diverged has median +inf and is left out (``unfitted_depths``, ``diverged_per_depth``); a
    window with fewer than three fitted depths has no fit (``note``). Non-finite numbers are None."""
    from sweepjax.analysis.scaling import fit_medians
    from sweepjax.fit.inputs import reduce_runs
    from sweepjax.fit.io import sweep_slices
    if "depth" not in ds.dims or ds.sizes["depth"] < 3:
        return []
    rows = []
    for part in sweep_slices(ds, "depth", "final_test_loss", _run_dims(ds), log=log).values():
        depths = [int(d) for d in part.x[:, 0]]
        med = reduce_runs(part.y, "median")
        ok = np.isfinite(med) & (med > 0)
        slopes = [float(-np.log(med[i + 1] / med[i]) / np.log(depths[i + 1] / depths[i])) if ok[i] and ok[i + 1]
                  else None for i in range(len(depths) - 1)]
        diverged = np.isposinf(part.y).sum(axis=0)
        head = headline_window(depths)
        for form in forms:
            for lo, hi in _windows(depths):
                keep = (part.x[:, 0] >= lo) & (part.x[:, 0] <= hi)
                row = {"slice": {k: (v.item() if hasattr(v, "item") else v) for k, v in part.sel.items()},
                       "form": form, "window": [lo, hi], "headline": (lo, hi) == head, "depths": depths,
                       "median_loss": [float(v) if np.isfinite(v) else None for v in med], "local_slopes": slopes,
                       "diverged_per_depth": diverged.tolist(), "runs": int(part.y.shape[0]),
                       "fitted_depths": [d for d, k, o in zip(depths, keep, ok) if k and o],
                       "unfitted_depths": [d for d, k, o in zip(depths, keep, ok) if k and not o],
                       "loss": part.label, "alpha": None, "alpha_ci": None, "params": {}, "note": "", "level": level}
                if len(row["fitted_depths"]) < 3:
                    row["note"] = (f"no fit: {len(row['fitted_depths'])} of the window's depths have a finite median "
                                   f"loss (unfitted: {row['unfitted_depths']})")
                else:
                    fit = fit_medians(part.x[keep, 0], part.y[:, keep], form, n_boot, seed, level)
                    row.update(fit)
                rows.append(row)
    return rows


def finite_json(obj):
    """``obj`` with every non-finite float replaced by None (strict JSON)."""
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def final_values(da):
    """``da`` at each member's own last evaluation with a finite value (``eval.layers = "every"`` with a swept
    ``train.steps``: shorter runs end earlier); ``da`` itself when it has no ``eval_step`` dim."""
    if "eval_step" not in da.dims:
        return da
    da = da.transpose(..., "eval_step", "layer")
    arr = np.asarray(da.values)
    seen = np.isfinite(arr).any(-1)                                   # (..., eval_step)
    n = seen.shape[-1]
    last = np.where(seen.any(-1), n - 1 - np.argmax(seen[..., ::-1], axis=-1), n - 1)
    picked = np.take_along_axis(arr, last[..., None, None], axis=-2)[..., 0, :]
    return da.isel(eval_step=0, drop=True).copy(data=picked)


def middle(values, depth: int):
    """The middle half of a member's layers (l in [depth/4, 3 depth/4)) of a per-layer array."""
    return values[depth // 4: max(3 * depth // 4, depth // 4 + 1)]


def _model_depth(ds) -> int:
    return int(tomllib.loads(ds.attrs.get("sweepjax_config", "")).get("model", {}).get("depth", 1))


def angle_summary(ds) -> list[dict]:
    """Per depth (and other swept values): the median over runs of each student's mean ``update_angle``
    over its middle layers (:func:`middle`), at its final evaluation."""
    if "layer_update_angle" not in ds:
        return []
    da = final_values(ds["layer_update_angle"])
    runs = _run_dims(ds)
    other = [d for d in da.dims if d not in runs + ["layer"]]
    out = []
    for combo in itertools.product(*(da[d].values.tolist() for d in other)):
        sel = dict(zip(other, combo))
        p = da.sel(sel)
        depth = int(sel["depth"]) if "depth" in sel else _model_depth(ds)
        per_run = np.asarray(p.transpose(*runs, "layer").values).reshape(-1, p.sizes["layer"])
        means = [float(np.nanmean(middle(r, depth))) for r in per_run if np.isfinite(middle(r, depth)).any()]
        out.append({**sel, "middle_update_angle": float(np.median(means)) if means else None, "runs": len(means)})
    return out


def teacher_metrics(ds, probe: int = 512) -> list[dict]:
    """The layer measures of the teacher itself (each value of a swept ``task.teacher`` and
    ``task.teacher_seed``), on the first ``probe`` test inputs: a check of the generator (independent
    layers: update angle ~pi/2; tied: ~0)."""
    from sweepjax.results import saved_task
    from sweepjax.tasks.teacher import Keys, Teacher
    table = saved_task(ds)
    values_of = lambda dim, key: ds[dim].values.tolist() if dim in ds.dims else [table.get(key, getattr(Keys, key))]
    out = []
    for kind, seed in itertools.product(values_of("teacher", "teacher"), values_of("teacher_seed", "teacher_seed")):
        keys = Keys(**{**table, "teacher": kind, "teacher_seed": seed})
        task = Teacher(keys)
        x, _ = task.test_set(jnp.float32)
        states = task.states(x[:probe])
        L = keys.teacher_depth
        values = np.asarray(layer_metrics(states, L))
        row = {"teacher": kind, "teacher_seed": seed, "teacher_depth": L, "layers": {k: values[i].tolist() for i, k in enumerate(LAYER_METRICS)
                                                              if k != "loss"}}
        row["middle_update_angle"] = float(np.nanmean(middle(values[LAYER_METRICS.index("update_angle")], L)))
        out.append(row)
    return out


def _label(sel: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sel.items()) or "all"


def _layer_panels(ds) -> list[dict]:
    """One selection per panel of the per-layer figures: each value of a swept ``teacher``, the largest
    value of every other swept dim but depth and the run dims (T = 1 of a temperature sweep)."""
    other = [d for d in ds["layer_update_angle"].dims if d not in _run_dims(ds) + ["layer", "depth", "eval_step"]]
    base = {d: ds[d].values.max().item() for d in other if d != "teacher"}
    kinds = ds["teacher"].values.tolist() if "teacher" in other else [None]
    return [{**base, **({"teacher": k} if k is not None else {})} for k in kinds]


def plot_loss(rows: list[dict], path) -> Path:
    """Median final loss vs depth (log-log), one colour per slice, with the headline power-law fit."""
    from sweepjax.plots import plt, save
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    heads = [r for r in rows if r["headline"] and r["form"] == "power_law"]
    for i, r in enumerate(heads):
        c = f"C{i % 10}"
        y = [np.nan if v is None else v for v in r["median_loss"]]
        ax.plot(r["depths"], y, "o", color=c, label=_label(r["slice"]) if len(heads) > 1 else None)
        if r["alpha"] is not None:
            x = np.geomspace(*r["window"], 50)
            ci = f" [{r['alpha_ci'][0]:.2f}, {r['alpha_ci'][1]:.2f}]" if r.get("alpha_ci") else ""
            ax.plot(x, r["params"]["A"] * x ** -r["alpha"], "-", lw=1, color=c,
                    label=f"fit depth {r['window'][0]}-{r['window'][1]}: a_l = {r['alpha']:.2f}{ci}")
    ax.set(xscale="log", yscale="log", xlabel="student depth (blocks)", ylabel="final test loss (median over runs)",
           title="Loss vs depth")
    ax.set_xticks(heads[0]["depths"] if heads else [], [str(d) for d in (heads[0]["depths"] if heads else [])])
    ax.minorticks_off()
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    return save(fig, path)


YLABELS = {"update_angle": "angle(dh_l, dh_l+1) (rad)", "loss": "loss of h_l through the final norm and head",
           "step_angle": "angle(h_l, h_l+1) (rad)", "end_angle": "angle(h_l, h_L) (rad)", "norm": "|h_l|",
           "progress": "progress toward h_L"}
TITLES = {"update_angle": "Successive updates: pi/2 = uncorrelated", "loss": "Per-layer loss (probe batch)"}


def plot_layers(ds, metric: str, path, teachers: list[dict] | None = None, log_y: bool = False) -> Path:
    """``layer_<metric>`` (median over runs, final evaluation) vs relative layer l / depth, one line per
    student depth; one panel per :func:`_layer_panels` selection; the teacher's own curve (dashed) when
    ``teachers`` (:func:`teacher_metrics`) is given."""
    from sweepjax.plots import plt, save
    da = final_values(ds[f"layer_{metric}"])
    runs = _run_dims(ds)
    panels = _layer_panels(ds)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), squeeze=False)
    for ax, sel in zip(axes[0], panels):
        part = da.sel(sel)
        depths = part["depth"].values.tolist() if "depth" in part.dims else [_model_depth(ds)]
        for i, depth in enumerate(depths):
            v = part.sel(depth=depth) if "depth" in part.dims else part
            v = v.median(runs) if runs else v
            y = np.asarray(v.values)[: depth + 1]
            ax.plot(np.arange(len(y)) / depth, y, "o-" if depth <= 16 else "-", ms=2.5, lw=1,
                    color=plt.cm.viridis(i / max(len(depths) - 1, 1)), label=f"student depth {depth}")
        first_seed = {}
        for t in teachers or []:
            first_seed.setdefault(t["teacher"], t["teacher_seed"])
            if (sel.get("teacher", t["teacher"]) == t["teacher"] and metric in t["layers"]
                    and t["teacher_seed"] == first_seed[t["teacher"]]):
                y = np.asarray(t["layers"][metric], float)
                ax.plot(np.arange(len(y)) / t["teacher_depth"], y, "--", color="0.4", lw=1,
                        label=f"{t['teacher']} teacher (depth {t['teacher_depth']})")
        if metric.endswith("angle"):
            ax.axhline(np.pi / 2, color="0.8", lw=0.8, zorder=0)
        ax.set(xlabel="layer l / depth", ylabel=YLABELS.get(metric, metric), yscale="log" if log_y else "linear",
               title=f"{TITLES.get(metric, metric)}" + (f" ({_label(sel)})" if sel else ""))
        ax.legend(fontsize=7)
    return save(fig, path)


def plot_exponents(rows: list[dict], path) -> Path:
    """Headline a_l (power law) vs temperature with bootstrap intervals, one series per teacher."""
    from sweepjax.plots import plt, save
    heads = [r for r in rows if r["headline"] and r["form"] == "power_law" and r["alpha"] is not None
             and "temperature" in r["slice"]]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    kinds = sorted({r["slice"].get("teacher", "") for r in heads})
    for i, kind in enumerate(kinds):
        sel = sorted((r for r in heads if r["slice"].get("teacher", "") == kind), key=lambda r: r["slice"]["temperature"])
        t = np.array([r["slice"]["temperature"] for r in sel])
        a = np.array([r["alpha"] for r in sel])
        err = np.array([[r["alpha"] - r["alpha_ci"][0], r["alpha_ci"][1] - r["alpha"]] if r.get("alpha_ci")
                        else [0.0, 0.0] for r in sel]).T
        ax.errorbar(t, a, yerr=np.clip(err, 0, None), fmt="o-", capsize=3, color=f"C{i}", label=f"{kind or 'teacher'}")
    ax.axhline(1, color="0.6", ls="--", lw=1, label="a_l = 1 (ensemble averaging)")
    ax.set(xscale="log", xlabel="teacher temperature T", ylabel="fitted depth exponent a_l",
           title="Depth exponent vs temperature")
    ax.legend(fontsize=7)
    return save(fig, path)


def depth_ensembles(ds, draws: int = 200) -> list[dict]:
    """Is a deep student like an ensemble of shallower ones? The loss of K students of depth l averaged
    (K random runs of the ``seed`` dim, which share the teacher) beside one student of depth K x l
    (:func:`sweepjax.ensemble.ensemble_table` with ``by = "depth"``: the students' parameters grow
    linearly with depth, so the parameter-matched member is the depth-K l one). Needs saved predictions
    (``eval.save_predictions``: the MSE students) and a ``seed`` dim; ``[]`` otherwise."""
    from sweepjax.ensemble import ensemble_table
    if "predictions" not in ds or "seed" not in ds.dims or "depth" not in ds.dims:
        return []
    n = ds.sizes["seed"]
    ks = [int(k) for k in 2 ** np.arange(int(np.log2(n)) + 1)]
    return ensemble_table(ds, ks, by="depth", over="seed", draws=draws)


def summarize(ds, n_boot: int = 1000, log=None) -> dict:
    """The study's numbers: ``fits`` (:func:`depth_fits`), ``angles`` (:func:`angle_summary`), for a
    ``teacher`` sweep ``teachers`` (:func:`teacher_metrics`), and with saved predictions ``ensembles``
    (:func:`depth_ensembles`)."""
    from sweepjax.results import saved_task
    teachers = teacher_metrics(ds) if saved_task(ds).get("name") == "teacher" else []
    return {"fits": depth_fits(ds, n_boot=n_boot, log=log), "angles": angle_summary(ds), "teachers": teachers,
            "ensembles": depth_ensembles(ds)}


def describe(summary: dict) -> str:
    """Printable lines: the headline exponent of each slice with its interval and window, the local
    slopes, the middle-layer update angles of students and teachers."""
    lines = []
    for r in summary["fits"]:
        if not (r["headline"] and r["form"] == "power_law"):
            continue
        ci = f" [{r['alpha_ci'][0]:.3f}, {r['alpha_ci'][1]:.3f}]" if r.get("alpha_ci") else ""
        a = f"{r['alpha']:.3f}{ci}" if r["alpha"] is not None else r["note"]
        slopes = ", ".join("-" if s is None else f"{s:.2f}" for s in r["local_slopes"])
        failed = ", ".join(f"{n}/{r['runs']} at depth {d}" for d, n in zip(r["depths"], r["diverged_per_depth"]) if n)
        few = " (so few runs: the interval is little more than their spread)" if 1 < r["runs"] < 4 else ""
        lines.append(f"depth fit ({_label(r['slice'])}): a_l = {a} over depths {r['window'][0]}-{r['window'][1]} "
                     f"({r['runs']} runs{few}); local slopes {slopes}" + (f"; diverged: {failed}" if failed else ""))
    for r in summary["angles"]:
        if r["middle_update_angle"] is not None:
            sel = {k: v for k, v in r.items() if k not in ("middle_update_angle", "runs")}
            lines.append(f"student {_label(sel)}: middle-layer update angle {r['middle_update_angle']:.3f} rad")
    from sweepjax.ensemble import ROW_KEYS
    for r in summary.get("ensembles", []):
        if r["K"] > 1 and r.get("matched") is not None:
            point = "".join(f", {k}={v}" for k, v in r.items() if k not in ROW_KEYS + ("depth",))
            lines.append(f"mean of {r['K']} students of depth {r['depth']}{point}: {r['median']:.4g} vs one student "
                         f"of depth {r['matched']}: {r['matched_loss']:.4g}")
    for t in summary["teachers"]:
        lines.append(f"{t['teacher']} teacher (depth {t['teacher_depth']}, seed {t['teacher_seed']}): middle-layer update angle "
                     f"{t['middle_update_angle']:.3f} rad")
    return "\n".join(lines)


def make_figures(ds, outdir, summary: dict) -> list:
    """``depth_loss.png`` (with three or more depths), ``depth_update_angle.png`` and
    ``depth_layer_loss.png`` (with ``eval.layers``), ``depth_exponents.png`` (with a temperature sweep)."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    if summary["fits"]:
        paths.append(plot_loss(summary["fits"], out / "depth_loss.png"))
        if "temperature" in ds.dims and ds.sizes["temperature"] > 1:
            paths.append(plot_exponents(summary["fits"], out / "depth_exponents.png"))
    if summary.get("ensembles"):
        from sweepjax.ensemble import plot_table
        paths.append(plot_table(summary["ensembles"], out / "depth_ensembles.png", by="depth"))
    if "layer_update_angle" in ds:
        paths.append(plot_layers(ds, "update_angle", out / "depth_update_angle.png", summary["teachers"]))
        paths.append(plot_layers(ds, "loss", out / "depth_layer_loss.png", log_y=True))
    return paths


def analyse(ds, out, run_cfg, width_rows: list[dict], log=None, warn=None) -> list:
    """The study's step after a run (the task's ``STUDY``): :func:`summarize` with ``run.bootstrap``
    resamples, printed to ``log``; the depth fits written to ``fit.json``, the layer measures (students'
    and teachers') to ``depth.json``; then the figures when ``run.figures``."""
    from sweepjax.files import FIGURES_DIR, FIT_FILE, atomic_write
    summary = summarize(ds, n_boot=run_cfg.bootstrap, log=warn)
    if log and (text := describe(summary)):
        print(text, file=log)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if summary["fits"]:
        atomic_write(out / FIT_FILE, lambda p: p.write_text(json.dumps(finite_json(summary["fits"]), indent=2)))
        written.append(out / FIT_FILE)
    layers = {k: v for k, v in summary.items() if k != "fits"}
    atomic_write(out / "depth.json", lambda p: p.write_text(json.dumps(finite_json(layers), indent=2)))
    written.append(out / "depth.json")
    return written + (make_figures(ds, out / FIGURES_DIR, summary) if run_cfg.figures else [])
