"""Padded, masked model families and what the rest of sweepjax needs to know about them.

A family is one module and one line in :data:`FAMILIES`. It provides (the family protocol):

* ``SIZE_KEYS``: the per-member sizes it is padded over, and ``member_sizes(model_cfg, values)``:
  each member's true sizes from its per-member config values (the padded size is their maximum);
* ``make(model_cfg, padded, io, dtype, compute_dtype)``: the flax module of a group, padded to
  ``padded``; ``io`` holds the sizes the task sets (:meth:`sweepjax.tasks.base.Task.model_io`); its
  ``__call__(x, sizes, probes=False)`` takes the member's true sizes as traced numbers and must be
  padding-invariant (see :mod:`sweepjax.models.common`);
* the parameterization: ``lr_multipliers(model_cfg, params, sizes)`` (per-tensor lr factors, or
  None) and ``DECAYED`` (the parameters AdamW decays);
* counts: ``count(model_cfg, io, sizes)`` (``n_params``, ``n_params_non_embedding``,
  ``forward_flops_per_token``) and the memory estimate ``activation_floats(model_cfg, io, sizes)``;
* ``PROBES``: the activation sizes it reports with ``eval.activations``.

This module dispatches on ``model.family``.
"""
from __future__ import annotations

from types import ModuleType

import jax.numpy as jnp
import numpy as np

from sweepjax.config import Config
from sweepjax.models import mlp, transformer
from sweepjax.tasks import task_class

FAMILIES: dict[str, ModuleType] = {"mlp": mlp, "transformer": transformer}


def family(cfg: Config) -> ModuleType:
    """The module of ``cfg.model.family``."""
    return FAMILIES[cfg.model.family]


def member_sizes(cfg: Config, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """True sizes (``SIZE_KEYS`` of the family) of each member, from the per-member config values."""
    return family(cfg).member_sizes(cfg.model, values)


def padded_sizes(sizes: dict[str, np.ndarray]) -> dict[str, int]:
    """The group's padded sizes: the maximum of each size over its members."""
    return {k: int(np.max(v)) for k, v in sizes.items()}


def dtypes(cfg: Config) -> tuple:
    """(parameter dtype, matmul dtype) for ``train.precision``."""
    return {"float32": (jnp.float32, jnp.float32), "float64": (jnp.float64, jnp.float64),
            "bf16": (jnp.float32, jnp.bfloat16)}[cfg.train.precision]


def task_io(cfg: Config) -> dict[str, int]:
    """The model sizes ``cfg``'s task sets (input and output sizes, vocabulary, context)."""
    return task_class(cfg.task.name).model_io(cfg.task)


def make_model(cfg: Config, padded: dict[str, int]):
    """The flax module of the group, padded to ``padded`` sizes."""
    return family(cfg).make(cfg.model, padded, task_io(cfg), *dtypes(cfg))


def count(cfg: Config, sizes: dict[str, int]) -> dict[str, float]:
    """``n_params``, ``n_params_non_embedding`` and ``forward_flops_per_token`` of one member at ``sizes``."""
    return family(cfg).count(cfg.model, task_io(cfg), {k: int(v) for k, v in sizes.items()})


def activation_floats(cfg: Config, sizes: dict[str, int]) -> int:
    """Floats per example kept for the backward pass (the memory plan's estimate)."""
    return family(cfg).activation_floats(cfg.model, task_io(cfg), sizes)


def tokens_per_step(cfg: Config) -> int:
    """Tokens (sequence positions, or samples) in one training batch."""
    task = task_class(cfg.task.name)
    return task.batch_rows(cfg.task) * task.tokens_per_example(cfg.task)
