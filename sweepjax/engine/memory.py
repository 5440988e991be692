"""Memory planning: estimate what one member needs and split members into chunks that fit.

The estimate is deliberately simple and conservative: parameters, gradients, the update and the
optimizer state (in parameter copies), plus the activations of one training batch kept for the backward
pass and those of the forward pass over the test set. It is checked before anything is compiled.
"""
from __future__ import annotations

import os

import jax

from sweepjax.config import Config, ConfigError
from sweepjax.models import activation_floats, count
from sweepjax.tasks import task_class

# Parameter-sized buffers besides the parameters themselves: gradient, update, new parameters.
_WORK_COPIES = 3
# Optimizer state in parameter copies, per optimizer (lbfgs: s and y histories plus line search).
_OPT_COPIES = {"adam": 2, "adamw": 2, "sgd": 1}
# Activation floats kept for the backward pass per forward-only float (the test pass keeps none).
_ACT_BUFFERS = 4


def member_bytes(cfg: Config, padded: dict[str, int]) -> int:
    """Estimated peak device bytes of one member padded to ``padded`` sizes."""
    item = 8 if cfg.train.precision == "float64" else 4
    params = count(cfg, padded)["n_params"]
    opt = 2 * cfg.train.lbfgs_memory + 4 if cfg.train.optimizer == "lbfgs" else _OPT_COPIES[cfg.train.optimizer]
    batch = task_class(cfg.task.name).batch_rows(cfg.task)
    acts = (batch + cfg.task.test_size / _ACT_BUFFERS) * activation_floats(cfg, padded)  # test: forward only
    return int(item * (params * (1 + _WORK_COPIES + opt) + acts))


def device_limit_bytes(cfg: Config) -> int:
    """Usable device memory: ``run.memory_limit_gb`` if set, else the device's (GPU) or host's (CPU)
    total, times ``run.memory_fraction`` (headroom for XLA's own buffers)."""
    if cfg.run.memory_limit_gb:
        total = cfg.run.memory_limit_gb * 2**30
    else:
        stats = jax.local_devices()[0].memory_stats() or {}
        total = stats.get("bytes_limit") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(total * cfg.run.memory_fraction)


def plan_member_chunk(cfg: Config, n_members: int, padded: dict[str, int]) -> int:
    """Members per compiled call and device for a bucket of ``n_members`` (per device) padded to ``padded`` sizes.

    ``run.member_chunk`` > 0 is used as given (capped at ``n_members``); 0 means as many as fit
    in one device's memory.
    Raises :class:`ConfigError` when a single member does not fit.
    """
    need, limit = member_bytes(cfg, padded), device_limit_bytes(cfg)
    if need > limit:
        raise ConfigError(f"one member of width {padded['width']}, depth {padded['depth']} needs ~{need / 2**30:.2f} GiB, more than "
                          f"the {limit / 2**30:.2f} GiB usable on {jax.devices()[0].platform} "
                          f"(run.memory_fraction = {cfg.run.memory_fraction}); shrink model.width/model.depth "
                          f"or the batch")
    if cfg.run.member_chunk:
        return min(cfg.run.member_chunk, n_members)
    return max(1, min(n_members, limit // need))
