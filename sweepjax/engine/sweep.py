"""Run a whole sweep: every structural group, one compiled program each, by one call."""
from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from sweepjax.config import Config
from sweepjax.engine.memory import plan_member_chunk
from sweepjax.engine.train import eval_steps, precision, run_group
from sweepjax.models import padded_sizes
from sweepjax.tasks import make_task
from sweepjax.grid import Grid, build_grid


def check_memory(cfg: Config) -> Grid:
    """Build the grid and refuse (ConfigError) a sweep with a member too big for the device."""
    grid = build_grid(cfg)
    for g in grid.groups:
        plan_member_chunk(g.config, g.size, padded_sizes(g.sizes()))
    return grid


def task_floors(grid: Grid) -> dict[str, np.ndarray]:
    """Loss floors of tasks that have them, in nats per token, each an array of shape ``grid.shape``:
    ``irreducible_loss`` (the entropy rate) and ``test_bayes_loss`` (the true chain's loss on the very
    test sequences the engine evaluates on). Computed per group's task config (a swept task key such as
    the temperature changes the chain); empty for tasks without them."""
    floors: dict[str, np.ndarray] = {}
    per_task: dict[str, dict[str, float]] = {}
    for g in grid.groups:
        key = repr(g.config.task)
        if key not in per_task:
            task = make_task(g.config.task)
            per_task[key] = {}
            if hasattr(task, "test_bayes_loss"):
                with precision(g.config):   # the test set exactly as the group's engine drew it
                    per_task[key] = {"irreducible_loss": task.entropy_rate(),
                                     "test_bayes_loss": task.test_bayes_loss()}
        for name, value in per_task[key].items():
            floors.setdefault(name, np.full(grid.n_members, np.nan))[g.index] = value
    return {name: v.reshape(grid.shape) for name, v in floors.items()}


def run_sweep(cfg: Config, log=sys.stderr, store=None, should_stop=lambda: False) -> tuple[xr.Dataset, dict]:
    """Train every member of the sweep; returns (results Dataset, manifest dict).

    ``log`` receives the progress lines (``None`` for silence). With a checkpoint ``store``
    (:class:`sweepjax.engine.checkpoint.Store`) the run checkpoints as it goes, resumes from what
    the store holds, and stops with ``Interrupted`` after a checkpoint once ``should_stop()``.
    """
    from sweepjax import results  # results sits downstream of the engine; imported lazily

    grid = check_memory(cfg)
    log = log if jax.process_index() == 0 else None
    if log:
        print(f"sweep {cfg.name!r}: {grid.n_members} members in {len(grid.groups)} group(s) "
              f"on {jax.default_backend()} ({jax.device_count()} device(s))", file=log)
    t0 = time.perf_counter()
    outputs = [run_group(g.config, g, log=log, store=store, name=f"g{i}", should_stop=should_stop)
               for i, g in enumerate(grid.groups)]
    wall = time.perf_counter() - t0
    steps = eval_steps(cfg.train.steps, cfg.eval.points)
    task = make_task(cfg.task)
    test = None
    if cfg.eval.save_predictions:
        with precision(cfg):
            x, y = task.test_set(jnp.float64 if cfg.train.precision == "float64" else jnp.float32)
        test = (np.asarray(x)[:, 0], np.asarray(y)[:, 0])
    ds = results.build_dataset(cfg, grid, outputs, steps, test, task_floors(grid))
    man = results.manifest([o.compile_s for o in outputs], wall, [str(d) for d in jax.devices()])
    return ds, man
