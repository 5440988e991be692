"""Optimizers and learning-rate schedules, built per member from a (possibly traced) peak lr and length.

Built inside the vmapped step, so each member's lr and number of steps are just numbers in the one
compiled program.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sweepjax.config import TrainConfig


def schedule_shape(cfg: TrainConfig, steps: jax.Array) -> optax.Schedule:
    """The schedule's shape (peak 1) as a function of the update count, for a run of ``steps`` steps.

    ``steps`` may be a traced per-member number: every member's schedule is stretched over its own
    run. The shape holds only config numbers and ``steps``, so the members' schedules are independent.

    - ``constant``: 1.
    - ``cosine``: half a cosine from 1 down to ``final_lr_fraction`` at step ``steps``.
    - ``warmup_cosine``: linear from 0 to 1 over ``max(1, round(warmup_fraction * steps))`` steps,
      then cosine down to ``final_lr_fraction`` at step ``steps`` (``warmup_fraction`` 0: cosine).
    - ``linear``: linear from 1 down to ``final_lr_fraction`` at step ``steps``.
    - ``wsd`` (warmup-stable-decay without warmup): 1 until ``(1 - decay_fraction) * steps``, then
      linear down to ``final_lr_fraction`` at step ``steps``.
    """
    end = cfg.final_lr_fraction
    n = jnp.asarray(steps).astype(float)

    def cosine(t, length):
        t = jnp.minimum(t, length)
        return (1 - end) * (0.5 * (1 + jnp.cos(jnp.pi * t / length))) + end

    if cfg.schedule == "cosine" or (cfg.schedule == "warmup_cosine" and cfg.warmup_fraction == 0):
        return lambda count: cosine(jnp.asarray(count).astype(float), n)
    if cfg.schedule == "warmup_cosine":
        warmup = jnp.maximum(1.0, jnp.round(cfg.warmup_fraction * n))

        def shape(count):
            t = jnp.asarray(count).astype(float)
            return jnp.where(t < warmup, t / warmup, cosine(t - warmup, jnp.maximum(n - warmup, 1.0)))
        return shape
    if cfg.schedule == "linear":
        return lambda count: (1 - end) * (1 - jnp.minimum(jnp.asarray(count).astype(float), n) / n) + end
    if cfg.schedule == "wsd":
        decay = cfg.decay_fraction * n
        return lambda count: end + (1 - end) * jnp.clip((n - jnp.asarray(count).astype(float)) / decay, 0.0, 1.0)
    return lambda count: jnp.ones((), float)


def schedule(cfg: TrainConfig, lr: jax.Array, steps: jax.Array | int | None = None) -> optax.Schedule:
    """Learning rate as a function of the update count: ``lr`` times :func:`schedule_shape` over
    ``steps`` steps (default ``cfg.steps``); a constant schedule is ``lr`` itself."""
    if cfg.schedule == "constant":
        return lambda count: lr
    shape = schedule_shape(cfg, cfg.steps if steps is None else steps)
    return lambda count: lr * shape(count)


def member_lr(cfg: TrainConfig, lr: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Each member's peak learning rate: ``lr``, times ``c / sqrt(true depth)`` when
    ``cfg.lr_depth_scaling = c > 0`` (the depth rule of the inverse-depth study: 6e-4 x c / sqrt(depth))."""
    lr = np.asarray(lr, np.float64)
    if cfg.lr_depth_scaling:
        lr = lr * cfg.lr_depth_scaling / np.sqrt(np.asarray(depth, np.float64))
    return lr


def make_optimizer(cfg: TrainConfig, lr: jax.Array, decayed: tuple[str, ...] = (),
                   steps: jax.Array | int | None = None) -> optax.GradientTransformation:
    """The optax transformation named by ``cfg.optimizer`` with peak learning rate ``lr`` for a run of
    ``steps`` steps (a traced per-member number inside the engine; default ``cfg.steps``).

    AdamW decays only the parameters named in ``decayed`` (the family's weight matrices) unless
    ``cfg.decay_all``. L-BFGS uses a backtracking (Armijo) line search of at most
    ``cfg.lbfgs_linesearch_steps`` trials, so every step ends: optax's default zoom search can loop
    forever under vmap for a member whose objective is flat at rounding level.
    """
    if cfg.optimizer == "lbfgs":
        search = optax.scale_by_backtracking_linesearch(max_backtracking_steps=cfg.lbfgs_linesearch_steps,
                                                        store_grad=True)
        return optax.lbfgs(memory_size=cfg.lbfgs_memory, linesearch=search)
    sched = schedule(cfg, lr, steps)
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
