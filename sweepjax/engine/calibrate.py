"""The bucketing cost model's two numbers (:class:`sweepjax.grid.Calibration`), measured on this machine.

:func:`measure` times the engine on a small reference program per kind of model, :func:`calibrate` returns
the config's own numbers where it sets them and otherwise the measured ones, measured once per machine, versions,
reference and precision (:func:`machine_key`) and cached in :func:`calibration_path`.
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

from sweepjax.config import Config, ConfigError, build_config
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
    return Calibration(outside, (f1 - f0) / (t1 - t0) if t1 > t0 else f1 / max(t1, 1e-9))


def calibration_path() -> Path:
    """Where measured calibrations are kept: ``$XDG_CACHE_HOME/sweepjax/calibration.json`` (``~/.cache`` by default)."""
    return cache_dir() / "calibration.json"


# The accepted range of each number, given or measured: seconds a program costs, model FLOP/s.
LIMITS = {"program_seconds": (1e-6, 1e7), "flop_rate": (1.0, 1e20)}


def snap(x: float) -> float:
    """``x`` rounded to 2 significant digits."""
    return float(f"{x:.1e}")


def usable(entry) -> dict | None:
    """A cache entry as ``{"program_seconds": s, "flop_rate": r}`` (snapped, :func:`snap`) if both are numbers
    within :data:`LIMITS`, else None."""
    if not isinstance(entry, dict):
        return None
    numbers = {k: entry.get(k) for k in LIMITS}
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi   # False for NaN
             for v, (lo, hi) in zip(numbers.values(), LIMITS.values()))
    return {k: snap(v) for k, v in numbers.items()} if ok else None


def machine_key(cfg: Config) -> str:
    """The cache key of ``cfg``'s calibration: backend, device (on a CPU: its model and usable cores), device
    count, versions, reference program (:func:`reference`) and precision."""
    import jax

    device = jax.devices()[0].device_kind
    if jax.default_backend() == "cpu":   # a CPU's device kind is "cpu": name the machine
        model = ""
        with contextlib.suppress(OSError):
            model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                          if line.startswith("model name")), "")
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        device = f"{model or platform.processor() or platform.machine()} x {cores} cores"
    return " / ".join([jax.default_backend(), device, f"{jax.device_count()} devices", f"jax {jax.__version__}",
                       f"jaxlib {version('jaxlib')}", f"sweepjax {version('sweepjax')}", reference(cfg),
                       cfg.train.precision])


ENVIRONMENT = "SWEEPJAX_CALIBRATION"


def environment() -> dict[str, float]:
    """The numbers ``$SWEEPJAX_CALIBRATION`` gives, ``"PROGRAM_SECONDS,FLOP_RATE"`` (``"2.5,3.5e9"``): every run in
    that environment splits with them instead of measuring (the tests and CI use it, so that a sweep splits the
    same way in every process and on every machine); config keys set to non-zero values still win."""
    text = os.environ.get(ENVIRONMENT, "").strip()
    if not text:
        return {}
    try:
        values = [float(v) for v in text.split(",")]
        if len(values) != 2:
            raise ValueError
    except ValueError:
        raise ConfigError(f"${ENVIRONMENT} = {text!r}: give two numbers, PROGRAM_SECONDS,FLOP_RATE") from None
    return dict(zip(LIMITS, values))


def calibrate(cfg: Config) -> Calibration:
    """The cost model's numbers for ``cfg``'s groups: ``run.program_seconds`` and ``run.flop_rate`` where set
    (> 0), else those of ``$SWEEPJAX_CALIBRATION`` (:func:`environment`) (outside [1e-6, 1e7] seconds or
    [1, 1e20] FLOP/s a :class:`ConfigError`); the others measured
    (:func:`measure`) once per machine (:func:`machine_key`: backend, device, device count, versions, reference
    program and precision) and kept in :func:`calibration_path` for later runs. Measured numbers are rounded to
    2 significant digits (:func:`snap`) and clipped into those ranges before they are used or kept, so small
    timing noise does not move a split. A cache that cannot be read, or an entry that is not two numbers within
    those ranges (:func:`usable`), counts as missing: measured again and overwritten. In a multi-process run
    every process takes process 0's numbers (all must split the groups alike), measuring together when process 0
    has none."""
    import jax

    given = {k: getattr(cfg.run, k) or environment().get(k, 0.0) for k in LIMITS}
    for k, (lo, hi) in LIMITS.items():
        if given[k] and not lo <= given[k] <= hi:
            raise ConfigError(f"run.{k} = {given[k]!r}: must be 0 (measure) or within [{lo:g}, {hi:g}]")
    if all(given.values()):
        return Calibration(**given)
    key = machine_key(cfg)
    path = calibration_path()

    def cached() -> dict:
        with contextlib.suppress(OSError, ValueError):
            entries = json.loads(path.read_text())
            if isinstance(entries, dict):
                return entries
        return {}

    def process_0s(numbers: dict | None) -> dict | None:   # what process 0 has, in every process
        if jax.process_count() == 1:
            return numbers
        from jax.experimental import multihost_utils
        row = [numbers["program_seconds"], numbers["flop_rate"]] if numbers else [math.nan, math.nan]
        row = multihost_utils.broadcast_one_to_all(np.array(row, np.float32)).tolist()
        return None if math.isnan(row[0]) else {"program_seconds": snap(row[0]), "flop_rate": snap(row[1])}

    numbers = process_0s(usable(cached().get(key)))
    if numbers is None:   # measured by every process together (the reference programs span all devices)
        measured = asdict(measure(reference(cfg), cfg.train.precision))
        numbers = process_0s({k: snap(min(max(measured[k], lo), hi)) for k, (lo, hi) in LIMITS.items()})
        with contextlib.suppress(OSError):   # an unwritable cache only means measuring again next time
            path.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps({**cached(), key: numbers}, indent=1, sort_keys=True)
            atomic_write(path, lambda p: p.write_text(text))
    return Calibration(**{k: float(given[k] or numbers[k]) for k in LIMITS})
