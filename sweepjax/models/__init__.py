"""Padded, masked model families and what the rest of sweepjax needs to know about them.

Each family module provides the flax module, ``SIZE_KEYS`` (the per-member sizes it is padded
over), ``PROBES`` (activation sizes it can report), ``member_sizes``, ``lr_multipliers``,
``count`` and ``activation_floats``. This module dispatches on ``model.family``.
"""
from __future__ import annotations

from types import ModuleType

import jax.numpy as jnp
import numpy as np

from sweepjax.config import Config
from sweepjax.models import mlp, transformer

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


def make_model(cfg: Config, padded: dict[str, int]):
    """The flax module of the group, padded to ``padded`` sizes."""
    dt, cd = dtypes(cfg)
    if cfg.model.family == "transformer":
        return transformer.Transformer(cfg.model, padded, cfg.task.vocab, cfg.task.context, dt, cd)
    return mlp.MLP(cfg.model, padded, 1, 1, dt, cd)


def count(cfg: Config, sizes: dict[str, int]) -> dict[str, float]:
    """``n_params``, ``n_params_non_embedding`` and ``forward_flops_per_token`` of one member at ``sizes``."""
    return family(cfg).count(cfg, {k: int(v) for k, v in sizes.items()})


def tokens_per_step(cfg: Config) -> int:
    """Tokens (sequence positions, or samples for regression) in one training batch."""
    if cfg.model.family == "transformer":
        return cfg.task.batch_size * cfg.task.context
    return cfg.task.grid_size if cfg.task.train_data == "grid" else cfg.task.batch_size
