"""Tasks: what members learn. One module per task, one line per task in :data:`TASKS`.

A task is a class following :class:`sweepjax.tasks.base.Task` (the protocol, written down there): its
config keys, its per-member numbers, its data on device, its test set, its loss and floors. This
module stays light (no JAX): the task's module is imported when a config names it.
"""
from __future__ import annotations

import importlib

# task name -> "module:Class"
TASKS: dict[str, str] = {
    "regression-1d": "sweepjax.tasks.regression:Regression1D",
    "markov": "sweepjax.tasks.markov:Markov",
    "graph-walk": "sweepjax.tasks.graph_walk:GraphWalk",
    "text": "sweepjax.tasks.text:Text",
    "sparse-parity": "sweepjax.tasks.sparse_parity:SparseParity",
    "teacher": "sweepjax.tasks.teacher:Teacher",
}


def task_class(name: str) -> type:
    """The class of task ``name`` (imports its module)."""
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_task(cfg):
    """The task object for a task config section (``Config.task``)."""
    return task_class(cfg.name)(cfg)
