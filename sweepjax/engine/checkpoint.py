"""Checkpoints of a running sweep, so that nothing is lost on interruption.

A sweep is trained as a sequence of units (one size bucket x one member chunk each). While a unit
trains, its stacked state (parameters, optimizer state, divergence flags, curves so far, step) is
saved with orbax between step chunks; orbax writes into a temporary directory and renames it
when complete, so a resume never picks up a half-written checkpoint. A finished unit's host
results are written as a ``.npz`` (atomically, read back without pickle) and its state
checkpoints are no longer needed.
"""
from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from sweepjax.files import CHECKPOINT_DIR, atomic_write


class Interrupted(Exception):
    """Raised after a checkpoint was written because the user asked the run to stop."""


class Store:
    """Checkpoints and finished units of one sweep, under ``<run dir>/checkpoints``."""

    def __init__(self, run_dir: str | Path, keep: int = 2, every_steps: int = 0, every_minutes: float = 10.0):
        self.root = Path(run_dir) / CHECKPOINT_DIR
        self.root.mkdir(parents=True, exist_ok=True)
        self.parts = self.root / "units"
        self.parts.mkdir(exist_ok=True)
        self.every_steps, self.every_minutes = every_steps, every_minutes
        self.manager = ocp.CheckpointManager(
            (self.root / "state").absolute(), options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))
        self._last_time, self._last_step = time.monotonic(), None

    # ---- finished units -----------------------------------------------------------------------
    def load_unit(self, unit: str) -> dict | None:
        """Host results of a finished unit, or None."""
        path = self.parts / f"{unit}.npz"
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def save_unit(self, unit: str, host: dict[str, np.ndarray]) -> None:
        """Write a finished unit's host results atomically (process 0 only, when multi-host)."""
        if jax.process_index() != 0:
            return

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:   # a file object: np.savez would append ".npz" to a name
                np.savez(f, **host)
        atomic_write(self.parts / f"{unit}.npz", write)

    # ---- state of the unit in progress ---------------------------------------------------------
    def restore(self, unit: str, like: dict) -> tuple[dict, int] | None:
        """(state, next step) of ``unit`` from the latest checkpoint, if that checkpoint is of ``unit``."""
        latest = self.manager.latest_step()
        if latest is None:
            return None
        meta = self.manager.restore(latest, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        if meta["unit"] != unit:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        got = self.manager.restore(latest, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
        state = jax.tree.unflatten(jax.tree.structure(like), jax.tree.leaves(got["state"]))
        return state, int(meta["step"])

    def due(self, step: int) -> bool:
        """Whether a checkpoint is due after reaching ``step`` (by steps or by minutes)."""
        by_steps = self.every_steps and (self._last_step is None or step - self._last_step >= self.every_steps)
        by_time = self.every_minutes and time.monotonic() - self._last_time >= 60 * self.every_minutes
        return bool(by_steps or by_time)

    def save(self, unit: str, step: int, state: dict) -> None:
        """Checkpoint ``state`` of ``unit`` at ``step`` (the next step to run), and wait until it is on disk."""
        n = (self.manager.latest_step() or 0) + 1
        self.manager.save(n, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave({"unit": unit, "step": int(step)})))
        self.manager.wait_until_finished()
        self._last_time, self._last_step = time.monotonic(), step

    def close(self) -> None:
        self.manager.close()
