"""Shared test helpers: small configs built in code, run on CPU."""
from __future__ import annotations

import os
import tempfile

import pytest


from sweepjax.config import build_config
from sweepjax.run import run_sweep

# Every test, and every process a test starts, buckets with the same cost model (typical of a 2-core CPU) instead
# of timing this machine: splits that do not depend on the load or the machine, no minute of measuring in CI; and
# caches (calibration, compiled programs, corpus) go to a directory of this session, not ~/.cache.
# tests/test_grid.py times the engine itself.
os.environ["SWEEPJAX_CALIBRATION"] = "2.5,3.5e9"
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="sweepjax-tests-")


def small_config(sweep: dict, **sections) -> "Config":
    """A quick config: fresh minibatches of 64, 40 Adam steps, 4 eval points, plus overrides.

    ``sections`` maps a section name to a dict of its keys, e.g. model={"residual": True}.
    """
    raw = {
        "task": {"batch_size": 64, "test_size": 101},
        "train": {"steps": 40, "chunk_steps": 15, "lr": 1e-2},
        "eval": {"points": 4},
    }
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    # keys that have no effect (and are refused) in some configs: minibatches on a full-batch grid, lr for L-BFGS
    if raw["task"].get("train_data") == "grid" and "batch_size" not in sections.get("task", {}):
        del raw["task"]["batch_size"]
    if raw["train"].get("optimizer") == "lbfgs" and "lr" not in sections.get("train", {}):
        del raw["train"]["lr"]
    for key in sweep:   # a default here beside an axis of the same key would be refused (the sweep sets it)
        section, _, name = key.partition(".")
        if name in raw.get(section, {}) and name not in sections.get(section, {}):
            del raw[section][name]
    raw["sweep"] = sweep
    return build_config(raw)


def run(sweep: dict, **sections):
    """Results Dataset of a small sweep (silent)."""
    ds, _ = run_sweep(small_config(sweep, **sections), log=None)
    return ds


@pytest.fixture
def small():
    return run


def run_alone(cfg, member: dict, partner: dict):
    """The run of one member of ``cfg``'s single group without the members that differ from it in other
    numbers: the member (``member``: full key -> value), twice, beside ``partner`` (the widest or deepest, so
    the padding and member count stay those of the sweep; XLA on CPU rounds differently for another member
    axis length). Returns the group output; row 0 is the member."""
    import numpy as np

    from sweepjax.engine.train import run_group
    from sweepjax.grid import build_grid
    (g,) = build_grid(cfg).groups
    row = lambda sel: int(np.flatnonzero(np.all([g.values[k] == v for k, v in sel.items()], axis=0))[0])
    r, p = row(member), row(partner)
    return run_group(g.config, g.subset(np.array([r, r, p])), log=None)
