"""Per-example losses: cross-entropy in nats and bits, KL at a traced temperature, MSE on vectors."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sweepjax.losses import cross_entropy, kl_divergence, squared_error


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_cross_entropy_in_nats_and_bits():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 7, 4)) * 3
    labels = rng.integers(0, 4, size=(5, 7))
    ref = -np.take_along_axis(_log_softmax(logits), labels[..., None], -1)[..., 0].mean(1)
    nats = cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(labels))
    assert nats.shape == (5,)
    np.testing.assert_allclose(nats, ref, rtol=1e-5)
    np.testing.assert_allclose(cross_entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(labels), "bits"),
                               ref / np.log(2), rtol=1e-5)
    # Uniform logits: log2(classes) bits exactly.
    np.testing.assert_allclose(cross_entropy(jnp.zeros((3, 4)), jnp.array([0, 1, 3]), "bits"), 2.0, rtol=1e-7)
    assert cross_entropy(jnp.zeros((2, 4), jnp.bfloat16), jnp.array([0, 1])).dtype == jnp.float32


def test_kl_divergence_at_a_traced_temperature():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 5))
    target = rng.normal(size=(6, 5)) * 2
    for t in (0.5, 1.0, 3.0):
        log_p, log_q = _log_softmax(target / t), _log_softmax(logits)
        ref = (np.exp(log_p) * (log_p - log_q)).sum(-1)
        np.testing.assert_allclose(kl_divergence(jnp.asarray(logits), jnp.asarray(target), t), ref, rtol=1e-5, atol=1e-7)
    # Zero when the model's distribution is the target's (logits = target / T up to a constant).
    np.testing.assert_allclose(kl_divergence(jnp.asarray(target / 2 + 7), jnp.asarray(target), 2.0), 0.0, atol=1e-6)
    # Target classes of probability 0 (a sparse row) contribute 0, also to KL(p || p).
    sparse = jnp.array([[0.0, -jnp.inf, 1.0]])
    np.testing.assert_allclose(kl_divergence(sparse, sparse), 0.0, atol=1e-7)
    assert np.isfinite(kl_divergence(jnp.zeros((1, 3)), sparse)).all()
    # One program over members with different temperatures equals each temperature alone.
    temps = jnp.array([0.5, 1.0, 3.0])
    batched = jax.jit(jax.vmap(lambda t: kl_divergence(jnp.asarray(logits), jnp.asarray(target), t)))(temps)
    for i, t in enumerate((0.5, 1.0, 3.0)):
        np.testing.assert_allclose(batched[i], kl_divergence(jnp.asarray(logits), jnp.asarray(target), t), rtol=1e-6)
    assert not np.allclose(batched[0], batched[2])


def test_squared_error_on_vectors():
    rng = np.random.default_rng(2)
    pred, target = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    np.testing.assert_allclose(squared_error(jnp.asarray(pred), jnp.asarray(target)),
                               ((pred - target) ** 2).mean(1), rtol=1e-6)
    np.testing.assert_allclose(squared_error(jnp.ones((2, 1)), jnp.zeros((2, 1))), [1.0, 1.0])
