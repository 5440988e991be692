"""Optimizers and learning-rate schedules, built per member from a (possibly traced) peak lr.

Built inside the vmapped step, so each member's lr is just a number in the one compiled program.
"""
from __future__ import annotations

import jax
import optax

from sweepjax.config import TrainConfig


def schedule(cfg: TrainConfig, lr: jax.Array) -> optax.Schedule:
    """Learning rate as a function of step, peaking at ``lr``."""
    end = lr * cfg.final_lr_fraction
    if cfg.schedule == "cosine" or (cfg.schedule == "warmup_cosine" and cfg.warmup_fraction == 0):
        return optax.cosine_decay_schedule(lr, cfg.steps, alpha=cfg.final_lr_fraction)
    if cfg.schedule == "warmup_cosine":
        warmup = max(1, int(round(cfg.warmup_fraction * cfg.steps)))
        return optax.warmup_cosine_decay_schedule(0.0, lr, warmup, cfg.steps, end_value=end)
    if cfg.schedule == "linear":
        return optax.linear_schedule(lr, end, cfg.steps)
    return optax.constant_schedule(lr)


def make_optimizer(cfg: TrainConfig, lr: jax.Array) -> optax.GradientTransformation:
    """The optax transformation named by ``cfg.optimizer`` with peak learning rate ``lr``."""
    if cfg.optimizer == "lbfgs":
        return optax.lbfgs(memory_size=cfg.lbfgs_memory)
    sched = schedule(cfg, lr)
    if cfg.optimizer == "adam":
        return optax.adam(sched)
    if cfg.optimizer == "adamw":
        return optax.adamw(sched, weight_decay=cfg.weight_decay)
    return optax.sgd(sched, momentum=cfg.momentum or None)


def needs_value_fn(cfg: TrainConfig) -> bool:
    """Whether ``update`` takes the loss value and function (line-search methods)."""
    return cfg.optimizer == "lbfgs"
