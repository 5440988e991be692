"""Data generators: pure functions of (data key, step) that make batches on the device."""
from __future__ import annotations

from sweepjax.config import TaskConfig
from sweepjax.tasks.markov import Markov
from sweepjax.tasks.regression import Regression1D

TASKS = {"regression-1d": Regression1D, "markov": Markov}


def make_task(cfg: TaskConfig):
    """The task object named by ``cfg.name``."""
    return TASKS[cfg.name](cfg)
