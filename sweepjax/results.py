"""Results store: an xarray Dataset with one named dim per sweep axis, saved as NetCDF4.

A results directory holds ``results.nc`` (the Dataset), ``config.toml`` (the fully resolved
config) and ``manifest.json`` (versions, device, compile and run times). Everything is written to
a temporary file and renamed into place, so an interrupted write never leaves a corrupt file.
"""
from __future__ import annotations

import json
import platform
import tomllib
from pathlib import Path

import numpy as np
import xarray as xr

from sweepjax.analysis.depth import LAYER_METRICS
from sweepjax.config import Config, axis, dim_name, to_toml
from sweepjax.engine.train import GroupOutput
from sweepjax.files import CONFIG_FILE, MANIFEST_FILE, RESULTS_FILE, atomic_write
from sweepjax.grid import Grid
from sweepjax.models import count, family, tokens_per_step
from sweepjax.tasks import task_class
from sweepjax.tasks.dataset import samples_seen

FLOOR_DESCRIPTIONS = {
    "irreducible_loss": "the task's lowest expected test loss, in its loss unit (Markov: the entropy rate)",
    "test_bayes_loss": "the true model's loss on the fixed test set, in the task's loss unit: the reference "
                       "for the excess of final_test_loss (Markov: entropy rate + the test set's sampling offset)",
}


def coordinate(value):
    """A sweep value as a coordinate label: a list (``model.zero_init``) becomes ``"head+proj"`` (``"none"`` if empty)."""
    return "+".join(value) or "none" if isinstance(value, list) else value


def _scatter(grid: Grid, outputs: list[GroupOutput], get, fill) -> np.ndarray:
    """Place per-group member arrays into one array of shape (*grid.shape, *extra)."""
    first = get(outputs[0])
    dtype = first.dtype if first.dtype.kind == "f" else np.result_type(first.dtype, type(fill))
    flat = np.full((grid.n_members,) + first.shape[1:], fill, dtype=dtype)
    for group, out in zip(grid.groups, outputs):
        flat[group.index] = get(out)
    return flat.reshape(grid.shape + first.shape[1:])


def _without_constant_dims(v: np.ndarray, dims: list[str], own: list[str]) -> tuple[list[str], np.ndarray]:
    """(dims, values) of a per-member array (sweep dims first) without the sweep dims it does not change along."""
    kept = list(dims)
    for d in dims:
        i = kept.index(d)
        first = np.take(v, [0], axis=i)
        if (v == first).all():
            v, kept = first.squeeze(i), kept[:i] + kept[i + 1:]
    return kept + own, v


def _pad_to(a: np.ndarray, shape: tuple) -> np.ndarray:
    out = np.zeros((a.shape[0],) + shape, a.dtype)
    out[(slice(None),) + tuple(slice(0, s) for s in a.shape[1:])] = a
    return out


def counts(grid: Grid) -> dict[str, np.ndarray]:
    """Per-member parameter and FLOP counts at true sizes, each of shape ``grid.shape``.

    ``train_flops``: exact matmul (and attention) FLOPs of all training steps, 3x the forward pass
    (backward = 2x forward); ``train_flops_6nd``: the 6 N D estimate with N = non-embedding parameters
    and D = ``tokens`` seen in training. ``tokens``, ``train_flops`` and ``train_flops_6nd`` count each
    member's own ``train.steps`` (and, with a fixed training set, only the samples its steps hold).
    """
    names = ("n_params", "n_params_non_embedding", "forward_flops_per_token", "tokens", "train_flops", "train_flops_6nd")
    flat = {k: np.zeros(grid.n_members, np.float64) for k in names}
    for g in grid.groups:
        sizes = g.sizes()
        per_step = float(tokens_per_step(g.config))
        per_example = task_class(g.config.task.name).tokens_per_example(g.config.task)
        for row, i in enumerate(g.index):
            c = count(g.config, {k: v[row] for k, v in sizes.items()})
            for k in names[:3]:
                flat[k][i] = c[k]
            steps, size = int(g.values["train.steps"][row]), int(g.values["task.dataset_size"][row])
            if size:   # a fixed set: an epoch's last step holds only the remaining samples
                tokens = float(samples_seen(steps, size, g.config.task.batch_size) * per_example)
            else:
                tokens = per_step * steps
            flat["tokens"][i] = tokens
            flat["train_flops"][i] = 3.0 * c["forward_flops_per_token"] * tokens
            flat["train_flops_6nd"][i] = 6.0 * c["n_params_non_embedding"] * tokens
    for k in names[:2]:
        flat[k] = flat[k].astype(np.int64)
    return {k: v.reshape(grid.shape) for k, v in flat.items()}


def build_dataset(cfg: Config, grid: Grid, outputs: list[GroupOutput], steps: np.ndarray,
                  test: tuple[np.ndarray, np.ndarray] | None = None,
                  floors: dict[str, np.ndarray] | None = None,
                  info: dict[str, str | int | float] | None = None) -> xr.Dataset:
    """Assemble the sweep's Dataset: curves (sweep dims + eval_step), finals, flags, counts.

    ``test`` = (x, target, per_member) of the test set (kept with saved predictions; target has the sweep
    dims first when ``per_member``, see :func:`sweepjax.run.saved_test_set`); ``floors``: the task's
    loss floors in nats, name -> per-member array of shape ``grid.shape`` (Markov: ``irreducible_loss``,
    the chain's entropy rate, and ``test_bayes_loss``, the true chain's loss on the fixed test set).
    Each is kept as a scalar when all members share it (the usual case), else with the sweep dims.
    ``info``: the task's facts about its data (:func:`sweepjax.run.task_info`: the text corpus's hash and
    size), kept as attributes of the Dataset beside ``sweepjax_config``.
    """
    dims = grid.dims
    coords = {dim_name(k): np.asarray([coordinate(x) for x in v]) for k, v in grid.axes.items()}
    coords["eval_step"] = steps
    data = {
        "train_loss": (dims + ["eval_step"], _scatter(grid, outputs, lambda o: o.train_loss, np.nan)),
        "test_loss": (dims + ["eval_step"], _scatter(grid, outputs, lambda o: o.test_loss, np.nan)),
        "diverged": (dims, _scatter(grid, outputs, lambda o: o.diverged, False).astype(bool)),
        "diverged_step": (dims, _scatter(grid, outputs, lambda o: o.diverged_step, -1)),
    }
    if "lbfgs" in axis(cfg, "train.optimizer"):
        data["converged_step"] = (dims, _scatter(grid, outputs, lambda o: o.converged_step, -1))
    data["final_test_loss"] = (dims, _scatter(grid, outputs, lambda o: o.final_test_loss, np.nan))  # own last step
    data.update({k: (dims, v) for k, v in counts(grid).items()})
    curves = data["test_loss"][1]
    best = np.where(np.isnan(curves), np.inf, curves)
    at = np.argmin(best, axis=-1)
    found = np.isfinite(np.min(best, axis=-1)) & ~data["diverged"][1]   # a diverged member has no result
    data["best_test_loss"] = (dims, np.where(found, np.min(best, axis=-1), np.nan))
    data["best_step"] = (dims, np.where(found, steps[at], -1))
    if outputs[0].activations is not None:
        coords["probe"] = list(family(cfg).PROBES)
        data["activation_rms"] = (dims + ["eval_step", "probe"], _scatter(grid, outputs, lambda o: o.activations, np.nan))
    if cfg.eval.layers != "off":
        values = _scatter(grid, outputs, lambda o: o.layers, np.nan)      # dims + (slots, metric, layer)
        coords["layer"] = np.arange(values.shape[-1])
        every = cfg.eval.layers == "every"
        for i, name in enumerate(LAYER_METRICS):
            v = values[..., i, :]
            data[f"layer_{name}"] = (dims + ["eval_step", "layer"], v) if every else (dims + ["layer"], v[..., 0, :])
    task = task_class(cfg.task.name)
    for name, record_dims in task.RECORDS.items():
        values = _scatter(grid, outputs, lambda o: o.records[name], np.nan)
        data[name] = (dims + ["eval_step"] + list(record_dims), values)
        coords.update({d: np.arange(n) for d, n in zip(record_dims, values.shape[len(dims) + 1:])})
    for name, v in (floors or {}).items():
        data[name] = ((), float(v.flat[0])) if np.all(v == v.flat[0]) else (dims, v)
    combine = task.predictions(cfg.task) if cfg.eval.save_predictions else None
    if combine:
        x, target, per_member = test
        coords["x"] = x
        pred = _scatter(grid, outputs, lambda o: o.predictions["predictions"], np.nan)
        if combine == "outputs":
            out_dims = ["x"] + (["output"] if pred.ndim - len(dims) == 2 else [])   # vector outputs: an output dim
            data["test_target"] = ((dims if per_member else []) + out_dims, target)
        else:   # log-probabilities (x[, position], class), each member's target and test-example weights
            out_dims = ["x"] + ["position"] * (pred.ndim - len(dims) == 3) + ["class"]
            for name in ("test_target", "test_weight"):
                v = _scatter(grid, outputs, lambda o: o.predictions[name], 0)
                own = out_dims[: v.ndim - len(dims)] if name == "test_target" else ["x"]
                data[name] = _without_constant_dims(v, dims, own)
        data["predictions"] = (dims + out_dims, pred)
        data["validation_loss"] = (dims, _scatter(grid, outputs, lambda o: o.predictions["validation_loss"], np.nan))
    if cfg.eval.save_params:
        for name in outputs[0].params:
            shape = tuple(np.max([o.params[name].shape[1:] for o in outputs], axis=0))
            arr = _scatter(grid, outputs, lambda o: _pad_to(o.params[name], shape), np.nan)
            data[f"param.{name}"] = (dims + [f"param.{name}.{i}" for i in range(len(shape))], arr)
    ds = xr.Dataset(data, coords=coords)
    ds.attrs["sweepjax_config"] = to_toml(cfg)
    for name, value in (info or {}).items():
        if name in ds.attrs:
            raise ValueError(f"task info {name!r} would overwrite the results attribute of that name")
        ds.attrs[name] = value
    ds["final_test_loss"].attrs["description"] = "test loss at each member's own last step (NaN if diverged)"
    ds["best_test_loss"].attrs["description"] = ("lowest test loss over the member's evaluations (early "
                                                 "stopping); NaN for a diverged member")
    ds["best_step"].attrs["description"] = "eval_step of best_test_loss (-1 if none)"
    losses = [n for n in ("layer_loss", *task.RECORDS) if n in ds and n.endswith("_loss")]   # a task's *_loss records
    for name in ["train_loss", "test_loss", "final_test_loss", "best_test_loss", *losses]:
        ds[name].attrs["units"] = task.loss_unit(cfg.task)
    for name in LAYER_METRICS:
        if f"layer_{name}" in ds:
            ds[f"layer_{name}"].attrs["description"] = LAYER_DESCRIPTIONS[name]
    if "converged_step" in ds:
        ds["converged_step"].attrs["description"] = ("L-BFGS: step at which the member was frozen because even a "
                                                     "restarted line search found no decrease (-1: never)")
    if combine:
        ds["validation_loss"].attrs["description"] = (
            "final loss on test_size fresh examples of the member's own data distribution, independent of the "
            "test set (ensembles choose their best K members on it); NaN if diverged")
        ds["validation_loss"].attrs["units"] = task.loss_unit(cfg.task)
        ds["predictions"].attrs["combine"] = combine
        ds["predictions"].attrs["description"] = (
            "each member's final outputs on the test set (ensembles average them)" if combine == "outputs" else
            "each member's final log-probabilities on the test set (ensembles average the probabilities); "
            "test_target: labels or a distribution, test_weight: each test example's weight in the test loss")
    for name, text in FLOOR_DESCRIPTIONS.items():
        if name in ds:
            ds[name].attrs["description"] = text
    return ds


LAYER_DESCRIPTIONS = {
    "norm": "mean |h_l| of the residual stream on the probe batch (eval.layers)",
    "step_angle": "mean arccos cos(h_l, h_{l+1}), radians",
    "update_angle": "mean arccos cos(dh_l, dh_{l+1}), dh_l = h_{l+1} - h_l, radians",
    "end_angle": "mean arccos cos(h_l, h_L), radians",
    "progress": "mean (h_l - h_0).(h_L - h_0) / |h_L - h_0|^2",
    "loss": "mean loss of h_l read out through the final norm and the head",
}


def saved_task(ds: xr.Dataset) -> dict:
    """The ``[task]`` table of the resolved config the results carry (``{}`` when there is none or it is
    not TOML): ``saved_task(ds).get("name")`` is the task the sweep trained."""
    try:
        return dict(tomllib.loads(ds.attrs.get("sweepjax_config", "")).get("task", {}))
    except tomllib.TOMLDecodeError:
        return {}


def save_config(cfg: Config, out: str | Path) -> None:
    """Write the resolved config into directory ``out`` (at the start of a run, so it can resume)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / CONFIG_FILE, lambda p: p.write_text(to_toml(cfg)))


def save(ds: xr.Dataset, cfg: Config, out: str | Path, manifest: dict) -> Path:
    """Write results, resolved config and manifest into directory ``out``; returns it."""
    out = Path(out)
    save_config(cfg, out)
    atomic_write(out / RESULTS_FILE, lambda p: ds.to_netcdf(p, engine="h5netcdf"))
    atomic_write(out / MANIFEST_FILE, lambda p: p.write_text(json.dumps(manifest, indent=2, default=str)))
    return out


def load(path: str | Path) -> xr.Dataset:
    """Open a results directory (or its results.nc) as an xarray Dataset, loaded into memory."""
    path = Path(path)
    file = path / RESULTS_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no results file at {str(file)!r}")
    with xr.open_dataset(file, engine="h5netcdf") as ds:
        return ds.load()


def manifest(compile_s: list[float], run_s: float, devices: list[str]) -> dict:
    """Versions, device and timings of a run."""
    import flax, jax, optax, scipy  # noqa: E401  (versions only)
    from importlib.metadata import version
    return {
        "sweepjax": version("sweepjax"), "jax": jax.__version__, "jaxlib": version("jaxlib"),
        "flax": flax.__version__, "optax": optax.__version__, "numpy": np.__version__,
        "scipy": scipy.__version__, "xarray": xr.__version__, "python": platform.python_version(),
        "backend": jax.default_backend(), "devices": devices,
        "compile_seconds_per_group": compile_s, "run_seconds": run_s,
    }
