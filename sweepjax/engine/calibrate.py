"""The bucketing cost model's two numbers (:class:`sweepjax.grid.Calibration`), measured on this machine.

:func:`measure` times the engine on a small reference program per kind of model, :func:`calibrate` returns
the config's own numbers where it sets them and otherwise the measured ones, measured once per backend,
device, versions, reference and precision and cached in :func:`calibration_path`.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import time
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path

import numpy as np

from sweepjax.config import Config, build_config
from sweepjax.engine.train import run_group
from sweepjax.files import atomic_write, cache_dir
from sweepjax.grid import Calibration, build_grid
from sweepjax.models import padded_sizes, tokens_per_step


# The reference programs the calibration times, by kind of model (:func:`reference`): config, then (members, narrow
# and wide width, steps) on a CPU and on an accelerator. Two widths: the loop's marginal rate is the slope between
# them (a per-step cost that does not grow with the padded sizes is no padding cost); the wide one, timed second
# (the first program of a process also pays for JAX's start-up), gives program_seconds. Residual MLPs have their
# own: their programs take about twice as long to compile as a one-hidden-layer MLP's.
CALIBRATION_REFERENCE = {
    "mlp": ({"task": {"batch_size": 256}, "eval": {"points": 5}},
            {"cpu": (32, 32, 256, 50), "accelerator": (256, 128, 1024, 200)}),
    "mlp-residual": ({"task": {"batch_size": 256}, "eval": {"points": 5},
                      "model": {"residual": True, "norm": "rmsnorm", "mlp_ratio": 4, "depth": 4}},
                     {"cpu": (8, 16, 64, 20), "accelerator": (256, 64, 256, 100)}),
    "transformer": ({"task": {"name": "markov", "batch_size": 16, "test_size": 16}, "eval": {"points": 5},
                     "model": {"family": "transformer"}},
                    {"cpu": (8, 32, 128, 20), "accelerator": (64, 128, 512, 100)}),
}


def reference(cfg: Config) -> str:
    """The reference program (:data:`CALIBRATION_REFERENCE`) that stands for ``cfg``'s model."""
    return "mlp-residual" if cfg.model.family == "mlp" and cfg.model.residual else cfg.model.family


def reference_config(name: str, width: int, members: int, steps: int, precision: str = "float32") -> Config:
    """The config of reference program ``name`` at ``width``: ``members`` seeds, ``steps`` steps in one chunk."""
    raw = CALIBRATION_REFERENCE[name][0]
    return build_config({**raw, "model": {**raw.get("model", {}), "width": width},
                         "train": {"steps": steps, "chunk_steps": steps, "precision": precision},
                         "sweep": {"seed": list(range(members))}})


def measure(name: str, precision: str = "float32") -> Calibration:
    """Time the engine on the reference programs ``name`` (:data:`CALIBRATION_REFERENCE`) on the default backend.

    ``flop_rate`` = (wide work - narrow work) / (wide loop s - narrow loop s) (the wide program's own rate
    if the loops came out no different); ``program_seconds`` = the wide program's wall time outside its loop
    (:func:`sweepjax.engine.train.run_group`: tracing, compiling, init, evaluation and transfers).
    """
    import jax

    n, narrow, wide, steps = CALIBRATION_REFERENCE[name][1]["cpu" if jax.default_backend() == "cpu" else "accelerator"]
    jax.jit(lambda x: x + 1)(1).block_until_ready()   # backend start-up is no program's cost
    timed = []
    kept = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", math.inf)   # compiled cold now and next time
    try:
        for width in (narrow, wide):
            cfg = reference_config(name, width, n, steps, precision)
            (group,) = build_grid(cfg).groups
            t0 = time.perf_counter()
            out = run_group(cfg, group, log=None)
            wall = time.perf_counter() - t0
            flops = n * 3.0 * tokens_per_step(cfg) * group.cost(padded_sizes(group.sizes()), steps + 1)
            timed.append((flops, out.run_s, wall - out.run_s))
    finally:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", kept)
    (f0, t0, _), (f1, t1, outside) = timed
    return Calibration(outside, (f1 - f0) / (t1 - t0) if t1 > t0 else f1 / t1)


def calibration_path() -> Path:
    """Where measured calibrations are kept: ``$XDG_CACHE_HOME/sweepjax/calibration.json`` (``~/.cache`` by default)."""
    return cache_dir() / "calibration.json"


def calibrate(cfg: Config) -> Calibration:
    """The cost model's numbers for ``cfg``'s groups: ``run.program_seconds`` and ``run.flop_rate`` where set
    (> 0); the others measured (:func:`measure`) once per backend, device kind, versions, reference program
    (:func:`reference`) and precision, and kept in :func:`calibration_path` for later runs. In a multi-process
    run every process takes process 0's numbers (all must split the groups alike), measuring together when
    process 0 has none."""
    import jax

    given = Calibration(cfg.run.program_seconds, cfg.run.flop_rate)
    if given.program_seconds and given.flop_rate:
        return given
    device = jax.devices()[0].device_kind
    if jax.default_backend() == "cpu":   # a CPU's device kind is "cpu": name the machine
        device = f"{platform.machine()} x {os.cpu_count()}"
    key = " / ".join([jax.default_backend(), device, f"jax {jax.__version__}",
                      f"jaxlib {version('jaxlib')}", f"sweepjax {version('sweepjax')}", reference(cfg),
                      cfg.train.precision])
    path = calibration_path()

    def cached() -> dict:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    def process_0s(numbers: dict | None) -> dict | None:   # what process 0 has, in every process
        if jax.process_count() == 1:
            return numbers
        from jax.experimental import multihost_utils
        row = [numbers["program_seconds"], numbers["flop_rate"]] if numbers else [math.nan, math.nan]
        row = multihost_utils.broadcast_one_to_all(np.array(row, np.float32)).tolist()
        return None if math.isnan(row[0]) else {"program_seconds": row[0], "flop_rate": row[1]}

    numbers = process_0s(cached().get(key))
    if numbers is None:   # measured by every process together (the reference programs span all devices)
        numbers = process_0s(asdict(measure(reference(cfg), cfg.train.precision)))
        with contextlib.suppress(OSError):   # an unwritable cache only means measuring again next time
            path.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps({**cached(), key: numbers}, indent=1, sort_keys=True)
            atomic_write(path, lambda p: p.write_text(text))
    numbers = [given.program_seconds or numbers["program_seconds"], given.flop_rate or numbers["flop_rate"]]
    return Calibration(*map(float, numbers))
