"""Orchestration: config -> grid -> engine -> results (-> width fit and figures).

:func:`run` is ``sweepjax.run``, the one way a sweep is run: from a notebook or script, and by
``sweepjax run`` (the command line only parses arguments, handles Ctrl-C and prints). It resolves
the config (``[on_cpu]`` when no accelerator is present, then the overrides), builds the grid once
and checks it against the device's memory, takes the output directory's lock, checks or resumes the
directory, trains every group (:func:`run_sweep`), assembles and saves the results, and fits and
plots them.

Nothing in config, grid, engine or results imports this module. It imports JAX only when a run
starts (inside the functions), so ``import sweepjax`` and ``sweepjax --help`` stay light.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from sweepjax.config import (RESUME_SAFE_KEYS, Config, ConfigError, RunConfig, build_config, differences,
                             parse_override, read_toml)
from sweepjax.files import (CHECKPOINT_DIR, CONFIG_FILE, DATA_FILE, FIT_FILE, RESULTS_FILE,
                            atomic_write)

if TYPE_CHECKING:
    import numpy as np
    import xarray as xr

    from sweepjax.grid import Grid

ConfigSource = str | os.PathLike | Mapping[str, Any]
"""A TOML file's path, or a dict with the TOML's structure (sections, ``sweep``, ``on_cpu``)."""
Overrides = Iterable[str] | Mapping[str, Any] | str | None
"""``["section.key=value", ...]`` (TOML value syntax, as ``--set``), or ``{"section.key": value}``."""


def run(config: ConfigSource | None = None, set: Overrides = None, out: str | os.PathLike | bool | None = None,
        progress: bool = True, *, overwrite: bool = False, resume: bool = False, allow_change: Iterable[str] = (),
        should_stop: Callable[[], bool] | None = None, command: str | None = None) -> xr.Dataset:
    """Run a sweep and return its results as an xarray Dataset (the Dataset ``results.nc`` holds).

    ``config``: a TOML file's path, or a dict with the TOML's structure, e.g.
    ``{"model": {"width": 8}, "train": {"steps": 100}, "sweep": {"seed": [0, 1]}, "on_cpu": {...}}``;
    its ``[on_cpu]`` entries apply when JAX finds no accelerator. ``set``: overrides applied last, as
    a list of ``"section.key=value"`` strings (TOML value syntax, like ``--set``) or a dict
    ``{"section.key": value}`` (Python values; ``"sweep.<axis>"`` keys set axes).

    ``out``: ``None`` (or ``False``) keeps everything in memory: no file is written, no checkpoint is taken, and
    the ``run.*`` keys about files (``out``, ``figures``, ``fit_form``, ``bootstrap``, checkpoints)
    have nothing to act on. A directory writes what ``sweepjax run`` writes (``results.nc``,
    ``config.toml``, ``manifest.json``, ``fit.json``, ``figures/``), checkpointing as it goes under
    the directory's lock; ``True`` means the directory ``sweepjax run`` would choose (``run.out``,
    else ``runs/<config name>``). A directory that already holds results or an unfinished sweep is
    refused unless ``overwrite=True`` (start again) or ``resume=True`` (continue the unfinished
    sweep from its last checkpoint, bitwise as if it had never stopped; ``config`` may then be
    ``None`` for the saved one, and ``allow_change`` names result-neutral keys that may differ from it).

    ``progress``: print progress lines (stderr) and the summary: results path, diverged members,
    fitted width exponents and figures (stdout). ``should_stop``: polled between step chunks; when
    it turns true a run with an output directory checkpoints and raises
    :class:`sweepjax.engine.checkpoint.Interrupted` (whose ``out`` attribute is the directory).
    ``command``: what the manifest and the lock record as the command (default: this call).

    A bad config, a member too big for memory or an unusable directory raises
    :class:`sweepjax.config.ConfigError` (one line naming the key, the value and the fix) before any
    of the sweep's programs compiles (the first run on a machine may time the bucketing calibration's
    reference programs before the directory is checked).
    """
    import jax

    from sweepjax import results
    from sweepjax.engine import checkpoint
    from sweepjax.engine.compile_cache import compile_cache
    from sweepjax.engine.lock import OutputLock

    main_process = jax.process_index() == 0
    on_cpu = jax.default_backend() == "cpu"
    log = sys.stderr if progress and main_process else None
    say = sys.stdout if progress and main_process else None
    command = command or _api_command(config, set, out, resume)
    out = None if out is False else out   # False, like None: results in memory only
    with contextlib.ExitStack() as held:   # the output directory's lock, held to the end
        if resume:
            if out is None or out is True:
                raise ConfigError("resume: name the directory of the sweep to resume (out=DIR, or --resume DIR)")
            out = Path(out)
            held.enter_context(OutputLock(out, create=False, enabled=main_process, command=command))
            cfg = resume_config(out, config, set, allow_change, on_cpu)
            held.enter_context(compile_cache(cfg.run.compile_cache))
            grid = check_memory(cfg)
            check_data_identity(out, grid)
        else:
            if config is None:
                raise ConfigError("sweepjax run needs a config: a TOML file or a dict (or resume a sweep: --resume DIR)")
            raw, name = _read(config)
            cfg = build_config(raw, _overrides(set), name=name, on_cpu=on_cpu)
            held.enter_context(compile_cache(cfg.run.compile_cache))
            grid = check_memory(cfg)   # before the directory is made: a member too big leaves nothing behind
            if out is True:
                out = default_out(cfg)
            if out is not None:
                out = Path(out)
                held.enter_context(OutputLock(out, enabled=main_process, command=command))
                check_out(out, overwrite)
            if on_cpu and "on_cpu" in raw and log:
                print("no accelerator found: using the config's [on_cpu] sizes (the full sweep needs a GPU)", file=log)
            if out is not None:
                if jax.process_count() > 1:   # every process checked the directory before any writes to it
                    from jax.experimental import multihost_utils
                    multihost_utils.sync_global_devices("sweepjax: output checked")
                if main_process:
                    results.save_config(cfg, out)
                    atomic_write(out / DATA_FILE, lambda p: p.write_text(json.dumps(data_identity(grid), indent=1)))
        store = None if out is None else checkpoint.Store(
            out, keep=cfg.run.keep_checkpoints, every_steps=cfg.run.checkpoint_steps,
            every_minutes=cfg.run.checkpoint_minutes)
        try:
            ds, manifest = run_sweep(cfg, log=log, grid=grid, store=store,
                                     should_stop=should_stop or (lambda: False))
        except checkpoint.Interrupted as e:
            e.out = out
            raise
        finally:
            if store is not None:
                store.close()
        if out is not None and main_process:   # multi-host: process 0 writes and analyses
            manifest["command"] = command
            results.save(ds, cfg, out, manifest)
            shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
            if say:
                print(f"results: {out}/ ({RESULTS_FILE}, {CONFIG_FILE}, manifest.json)", file=say)
        n_div = int(ds["diverged"].sum())
        if n_div and say:
            print(f"warning: {n_div} member(s) diverged and were frozen (see the 'diverged' variable)", file=say)
        if out is not None and main_process:
            analyse(out, ds, cfg.run, log=say, warn=log)
    return ds


def resolve_config(config: ConfigSource, set: Overrides = None, on_cpu: bool = False,
                   combinations: bool = True) -> Config:
    """The validated :class:`Config` of a TOML path or dict plus overrides (``[on_cpu]`` applied if ``on_cpu``)."""
    raw, name = _read(config)
    return build_config(raw, _overrides(set), name=name, on_cpu=on_cpu, combinations=combinations)


def _read(config: ConfigSource) -> tuple[dict, str]:
    """(raw TOML dict, sweep name) of a config path (name: the file's stem) or dict (name: ``sweep``)."""
    if isinstance(config, Mapping):
        return dict(config), "sweep"
    if not isinstance(config, (str, os.PathLike)):
        raise ConfigError(f"config = {config!r}: a TOML file's path or a dict with the TOML's structure")
    return read_toml(config), Path(config).stem


def _overrides(overrides: Overrides) -> list[tuple[str, Any]]:
    """Overrides as (key, value) pairs: strings are parsed like ``--set``, dict values taken as they are."""
    if overrides is None:
        return []
    if isinstance(overrides, str):
        overrides = [overrides]
    if isinstance(overrides, Mapping):
        return [(str(k), _plain(v)) for k, v in overrides.items()]
    return [parse_override(o) for o in overrides]


def _plain(value: Any) -> Any:
    """A notebook value as the TOML value it stands for: numpy scalars and arrays, tuples and ranges
    become Python numbers and lists (``np.logspace(-4, -2, 3)`` is a fine lr axis)."""
    if hasattr(value, "tolist"):          # numpy scalar or array
        return value.tolist()
    if isinstance(value, (tuple, range)):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _api_command(config: ConfigSource | None, overrides: Overrides, out: Any, resume: bool) -> str:
    """How a Python call is recorded in the manifest and the lock file."""
    what = "<dict>" if isinstance(config, Mapping) else repr(None if config is None else str(config))
    extra = "".join(f", {k}={v!r}" for k, v in (("set", overrides), ("out", out), ("resume", resume)) if v)
    return f"sweepjax.run({what}{extra})"


def default_out(cfg: Config) -> Path:
    """The results directory ``sweepjax run`` chooses: ``run.out``, else ``runs/<config name>``."""
    return Path(cfg.run.out or Path("runs") / cfg.name)


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse (ConfigError) a fresh run into a directory holding results or an unfinished sweep (unless
    ``overwrite``: then the old checkpoints are removed), or a directory that cannot be written."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output path {str(out)!r} exists and is not a directory; choose another --out")
    if overwrite:
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    elif (out / RESULTS_FILE).exists():
        raise ConfigError(f"{str(out)!r} already holds results; pass --overwrite (Python: overwrite=True) "
                          f"or choose another --out")
    elif (out / CHECKPOINT_DIR).exists():
        raise ConfigError(f"{str(out)!r} holds an unfinished sweep; continue it with "
                          f"'sweepjax run --resume {out}' (Python: resume=True) or pass --overwrite")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"cannot write to output directory {str(out)!r}: {e.strerror}") from None


def resume_config(out: Path, config: ConfigSource | None, overrides: Overrides = None,
                  allow_change: Iterable[str] = (), on_cpu: bool = False) -> Config:
    """The config of a resumed run: the saved one (plus overrides), checked against ``config`` if given.

    Refused (ConfigError): no sweep in ``out``, a sweep that already finished, or a config differing
    from the saved one in any key not named in ``allow_change`` (which may only name keys of
    :data:`sweepjax.config.RESUME_SAFE_KEYS`).
    """
    saved_path = out / CONFIG_FILE
    if not saved_path.is_file():
        raise ConfigError(f"--resume {str(out)!r}: no sweep to resume there (no {CONFIG_FILE})")
    if (out / RESULTS_FILE).exists() and not (out / CHECKPOINT_DIR).exists():
        raise ConfigError(f"--resume {str(out)!r}: that sweep already finished")
    saved = resolve_config(saved_path)
    cfg = resolve_config(config, overrides, on_cpu=on_cpu) if config is not None else resolve_config(saved_path, overrides)
    allowed = frozenset([allow_change] if isinstance(allow_change, str) else allow_change)
    for key in sorted(allowed - frozenset(RESUME_SAFE_KEYS)):
        raise ConfigError(f"--allow-change {key}: changing it would change results; only "
                          f"{', '.join(RESUME_SAFE_KEYS)} may change on resume")
    for key in ("program_seconds", "flop_rate"):   # 0 means "measure": the saved run measured them, keep its numbers
        if not getattr(cfg.run, key):
            setattr(cfg.run, key, getattr(saved.run, key))
    diff = {k: v for k, v in differences(saved, cfg).items() if k not in allowed}
    if diff:
        listed = "; ".join(f"{k} (saved {a!r}, now {b!r})" for k, (a, b) in diff.items())
        raise ConfigError(f"--resume {str(out)!r}: config differs from the saved one in {listed}")
    if config is None:
        cfg.name = saved.name
    return cfg


def data_identity(grid: Grid) -> dict[str, str]:
    """The hashes among the tasks' info (:func:`task_info`, keys ending in ``_sha256``: the text corpus, a
    generator's parameters): the data a resumed sweep must find unchanged."""
    return {k: v for k, v in task_info(grid).items() if k.endswith("_sha256")}


def check_data_identity(out: Path, grid: Grid) -> None:
    """Refuse (ConfigError) to resume a sweep whose data changed since it started (another corpus, a retrained
    generator): :func:`data_identity` against the one saved in ``out`` (a sweep started before sweepjax saved it
    has none, and is not checked; nor is one whose file was deleted); an unreadable file is refused."""
    path = out / DATA_FILE
    if not path.is_file():
        return
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        saved = None
    if not isinstance(saved, dict):
        raise ConfigError(f"--resume {str(out)!r}: {DATA_FILE} is not the JSON object sweepjax wrote (the hashes of "
                          f"the sweep's data); restore it, delete it to resume unchecked, or start again with --overwrite")
    now = data_identity(grid)
    diff = {k: (saved.get(k), now.get(k)) for k in sorted(saved.keys() | now.keys()) if saved.get(k) != now.get(k)}
    if diff:
        listed = "; ".join(f"{k} ({_changed(a, b)})" for k, (a, b) in diff.items())
        raise ConfigError(f"--resume {str(out)!r}: the task's data changed since the sweep started: {listed}; "
                          f"resume where the data are as they were, or start again with --overwrite")


def _changed(saved, now) -> str:
    """``saved X, now Y``; for values that differ between groups (:func:`task_info`'s JSON objects, group label ->
    value), only the groups whose value changed."""
    try:
        a, b = json.loads(saved), json.loads(now)
    except (TypeError, ValueError):
        a = b = None
    if isinstance(a, dict) and isinstance(b, dict):
        return "; ".join(f"{g}: saved {a.get(g)!r}, now {b.get(g)!r}" for g in sorted(a.keys() | b.keys())
                         if a.get(g) != b.get(g))
    return f"saved {saved!r}, now {now!r}"


def check_memory(cfg: Config) -> Grid:
    """Build the sweep's grid (once per run) and refuse (ConfigError) a member too big for the device."""
    from sweepjax.engine.memory import plan_member_chunk
    from sweepjax.grid import build_grid
    from sweepjax.models import padded_sizes
    grid = build_grid(cfg)
    for g in grid.groups:
        plan_member_chunk(g.config, g.size, padded_sizes(g.sizes()))
    return grid


def run_sweep(cfg: Config, log: TextIO | None = sys.stderr, *, grid: Grid | None = None, store=None,
              should_stop: Callable[[], bool] = lambda: False) -> tuple[xr.Dataset, dict]:
    """Train every member of the sweep; returns (results Dataset, manifest dict). Writes nothing itself.

    ``grid``: the grid :func:`check_memory` built (built here if not given). ``log`` receives the
    progress lines (``None`` for silence). With a checkpoint ``store``
    (:class:`sweepjax.engine.checkpoint.Store`) the run checkpoints as it goes, resumes from what
    the store holds, and stops with ``Interrupted`` after a checkpoint once ``should_stop()``.
    """
    import time

    import jax

    from sweepjax import results
    from sweepjax.engine.train import run_group, sweep_eval_steps

    grid = check_memory(cfg) if grid is None else grid
    log = log if jax.process_index() == 0 else None
    if log:
        print(f"sweep {cfg.name!r}: {grid.n_members} members in {len(grid.groups)} group(s) "
              f"on {jax.default_backend()} ({jax.device_count()} device(s))", file=log)
    t0 = time.perf_counter()
    programs: dict = {}   # groups of the same structure and padded sizes (e.g. step buckets) share a program
    outputs = [run_group(g.config, g, log=log, store=store, name=f"g{i}", should_stop=should_stop, programs=programs)
               for i, g in enumerate(grid.groups)]
    wall = time.perf_counter() - t0
    steps = sweep_eval_steps(cfg)
    test = saved_test_set(cfg, grid) if cfg.eval.save_predictions else None
    ds = results.build_dataset(cfg, grid, outputs, steps, test, task_floors(grid), task_info(grid))
    man = results.manifest([o.compile_s for o in outputs], wall, [str(d) for d in jax.devices()])
    return ds, man


def saved_test_set(cfg: Config, grid: Grid) -> tuple:
    """(x, target) kept beside saved predictions: x the scalar test inputs (or the example index for vector
    inputs), target (points[, outputs]) when every group evaluates on the same test set, else one target
    per member (grid.shape + (points[, outputs])): a swept task key that changes the test set (a teacher
    seed, a target function) gives each member its own group's target."""
    import jax.numpy as jnp
    import numpy as np

    from sweepjax.engine.train import precision
    from sweepjax.tasks import make_task
    from sweepjax.tasks import task_class
    squeeze = lambda a: a[:, 0] if a.ndim == 2 and a.shape[1] == 1 else a
    sets: dict[str, tuple] = {}
    for g in grid.groups:
        key = repr(g.config.task)
        if key not in sets:
            with precision(g.config):
                x, y = make_task(g.config.task).test_set(jnp.float64 if cfg.train.precision == "float64" else jnp.float32)
            sets[key] = (np.asarray(x), squeeze(np.asarray(y)))
    (x, y), *rest = sets.values()
    same_x = all(np.array_equal(x, other[0]) for other in rest)
    coord = squeeze(x) if same_x and x.ndim == 2 and x.shape[1] == 1 else np.arange(len(x))   # inputs, or index
    if task_class(cfg.task.name).predictions(cfg.task) == "probabilities":
        return coord, None, False   # the engine keeps each member's target with its probabilities
    if same_x and all(np.array_equal(y, other[1]) for other in rest):
        return coord, y, False
    if any(other[1].shape != y.shape for other in rest):
        raise ConfigError("eval.save_predictions with a swept task key that changes the test set's size: "
                          "predictions of different groups cannot share one x axis; sweep it in separate runs")
    per_member = np.full((grid.n_members,) + y.shape, np.nan)
    for g in grid.groups:
        per_member[g.index] = sets[repr(g.config.task)][1]
    return coord, per_member.reshape(tuple(grid.shape) + y.shape), True


def task_floors(grid: Grid) -> dict[str, np.ndarray]:
    """Loss floors of tasks that know them (:meth:`sweepjax.tasks.base.Task.floors`), in the task's loss
    unit, each an array of shape ``grid.shape``: ``irreducible_loss`` (Markov: the entropy rate) and
    ``test_bayes_loss`` (the true chain's loss on the very test sequences the engine evaluates on).
    Computed per group's task config (a swept task key such as the temperature changes the chain);
    empty for tasks without them."""
    import numpy as np

    from sweepjax.engine.train import precision
    from sweepjax.tasks import make_task
    floors: dict[str, np.ndarray] = {}
    per_task: dict[str, dict[str, float]] = {}
    for g in grid.groups:
        key = repr(g.config.task)
        if key not in per_task:
            with precision(g.config):   # the test set exactly as the group's engine drew it
                per_task[key] = make_task(g.config.task).floors()
        for name, value in per_task[key].items():
            floors.setdefault(name, np.full(grid.n_members, np.nan))[g.index] = value
    return {name: v.reshape(grid.shape) for name, v in floors.items()}


def task_info(grid: Grid) -> dict[str, str | int | float]:
    """The tasks' :meth:`sweepjax.tasks.base.Task.info`, name -> value, gathered over the groups' task configs:
    a value that every group has, equal in all, is kept as it is; one that differs between groups, or that
    only some groups have, becomes a JSON object, each group's structural task keys (``"source=corpus"``) ->
    its value."""
    from sweepjax.config import dim_name
    from sweepjax.tasks import make_task
    per_group: dict[str, dict] = {}
    seen: dict[str, dict] = {}
    for g in grid.groups:
        key = repr(g.config.task)
        if key not in seen:
            seen[key] = make_task(g.config.task).info()
        label = ", ".join(f"{dim_name(k)}={v}" for k, v in g.structural.items() if k.startswith("task.")) or key
        for name, value in seen[key].items():
            per_group.setdefault(name, {})[label] = value
    groups = {label for v in per_group.values() for label in v}
    return {name: next(iter(v.values())) if set(v) == groups and len({json.dumps(x) for x in v.values()}) == 1
            else json.dumps(v) for name, v in per_group.items()}


def analyse(out: Path, ds: xr.Dataset, run_cfg: RunConfig, log: TextIO | None = None,
            warn: TextIO | None = None) -> list[dict]:
    """Width-scaling fit (saved as ``fit.json``, when the sweep has 3 or more widths; over an ``lr`` axis, of
    each size's best lr: :func:`sweepjax.analysis.scaling.at_best_lr`), then the task's study
    step (its ``STUDY`` module's ``analyse(ds, out, run_cfg, width_rows, log, warn)``: numbers and figures).

    Returns the fit rows (see :func:`sweepjax.analysis.scaling.width_scaling`); ``log`` receives the
    fitted exponents and the figure paths, ``warn`` the fit's warnings (``None``: silent).
    """
    import importlib

    from sweepjax.results import saved_task
    from sweepjax.tasks import TASKS, task_class
    name = saved_task(ds).get("name", "regression-1d")
    study = task_class(name).STUDY if name in TASKS else "sweepjax.analysis.lottery"
    rows: list[dict] = []
    if "width" in ds.dims and ds.sizes["width"] >= 3:
        from sweepjax.analysis.scaling import at_best_lr, describe, width_scaling
        rows = width_scaling(at_best_lr(ds), form=run_cfg.fit_form, n_boot=run_cfg.bootstrap, log=warn)
        if log:
            for row in rows:
                print(describe(row), file=log)
        atomic_write(Path(out) / FIT_FILE, lambda p: p.write_text(json.dumps(rows, indent=2)))
    for path in importlib.import_module(study).analyse(ds, Path(out), run_cfg, rows, log=log, warn=warn):
        if log:
            print(f"wrote: {path}", file=log)
    return rows
