"""Per-example losses. Each returns one number per example (the first axis), averaged over any
other axes (sequence positions, output components); the engine averages examples (with weights
where a minibatch is partly empty). Computed in float32 at least, also for bf16 inputs.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

LN2 = math.log(2.0)
UNITS = ("nats", "bits", "squared error")


def _float(x: jax.Array) -> jax.Array:
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def _per_example(values: jax.Array) -> jax.Array:
    return jnp.mean(values.reshape(values.shape[0], -1), axis=1)


def cross_entropy(logits: jax.Array, labels: jax.Array, unit: str = "nats") -> jax.Array:
    """-log softmax(logits)[label] over classes (the last axis of ``logits``), in nats or bits; ``labels``
    are ints shaped like ``logits`` without its last axis."""
    nats = _per_example(optax.softmax_cross_entropy_with_integer_labels(_float(logits), labels))
    return nats / LN2 if unit == "bits" else nats


def kl_divergence(logits: jax.Array, target_logits: jax.Array, temperature: jax.Array | float = 1.0) -> jax.Array:
    """KL(p || q) in nats, p = softmax(target_logits / temperature) (the target distribution at the member's
    temperature, a traced number), q = softmax(logits); zero exactly when q = p. Classes on the last axis;
    target classes of probability 0 (logit -inf) contribute 0."""
    log_p = jax.nn.log_softmax(_float(target_logits) / temperature)
    log_q = jax.nn.log_softmax(_float(logits))
    p = jnp.exp(log_p)
    return _per_example(jnp.sum(jnp.where(p > 0, p * (log_p - log_q), 0.0), axis=-1))   # 0 log 0 = 0


def squared_error(pred: jax.Array, target: jax.Array) -> jax.Array:
    """(pred - target)^2, averaged over the output components (a scalar output: the squared error)."""
    return _per_example(jnp.square(_float(pred) - target))
