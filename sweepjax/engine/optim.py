"""Optimizers and learning-rate schedules, built per member from a (possibly traced) peak lr.

Built inside the vmapped step, so each member's lr is just a number in the one compiled program.
"""
from __future__ import annotations

import jax
import optax

from sweepjax.config import TrainConfig


def schedule(cfg: TrainConfig, lr: jax.Array) -> optax.Schedule:
    """Learning rate as a function of step: ``lr`` times a schedule shape that peaks at 1.

    The shape holds only config numbers, so a traced per-member ``lr`` stays a plain factor.
    """
    end = cfg.final_lr_fraction
    if cfg.schedule == "cosine" or (cfg.schedule == "warmup_cosine" and cfg.warmup_fraction == 0):
        shape = optax.cosine_decay_schedule(1.0, cfg.steps, alpha=end)
    elif cfg.schedule == "warmup_cosine":
        warmup = max(1, int(round(cfg.warmup_fraction * cfg.steps)))
        shape = optax.warmup_cosine_decay_schedule(0.0, 1.0, warmup, cfg.steps, end_value=end)
    elif cfg.schedule == "linear":
        shape = optax.linear_schedule(1.0, end, cfg.steps)
    else:
        shape = optax.constant_schedule(1.0)
    return lambda step: lr * shape(step)


def make_optimizer(cfg: TrainConfig, lr: jax.Array, decayed: tuple[str, ...] = ()) -> optax.GradientTransformation:
    """The optax transformation named by ``cfg.optimizer`` with peak learning rate ``lr``.

    AdamW decays only the parameters named in ``decayed`` (the family's weight matrices) unless
    ``cfg.decay_all``. L-BFGS uses a backtracking (Armijo) line search of at most
    ``cfg.lbfgs_linesearch_steps`` trials, so every step ends: optax's default zoom search can loop
    forever under vmap for a member whose objective is flat at rounding level.
    """
    if cfg.optimizer == "lbfgs":
        search = optax.scale_by_backtracking_linesearch(max_backtracking_steps=cfg.lbfgs_linesearch_steps,
                                                        store_grad=True)
        return optax.lbfgs(memory_size=cfg.lbfgs_memory, linesearch=search)
    sched = schedule(cfg, lr)
    adam = dict(b1=cfg.adam_b1, b2=cfg.adam_b2, eps=cfg.adam_eps)
    if cfg.optimizer == "adam":
        return optax.adam(sched, **adam)
    if cfg.optimizer == "adamw":
        mask = None if cfg.decay_all else (lambda params: {k: k in decayed for k in params})
        return optax.adamw(sched, weight_decay=cfg.weight_decay, mask=mask, **adam)
    return optax.sgd(sched, momentum=cfg.momentum or None)


def needs_value_fn(cfg: TrainConfig) -> bool:
    """Whether ``update`` takes the loss value and function (line-search methods)."""
    return cfg.optimizer == "lbfgs"
