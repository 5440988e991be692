"""Fixed training sets of D samples per member (``task.dataset_size``), without storing them.

Sample i of a member's training set is the task's example drawn from the key
``fold_in(fold_in(data_key, DATASET_FOLD), i)``, i = 0 .. D - 1: the set is fixed by the member's
data key and D, and costs no memory (a sample is regenerated each time it is used; D is a traced
per-member number, so members with different D share one program).

Epochs: an epoch is ``ceil(D / B)`` steps (B = ``task.batch_size``). Step t is step ``t mod ceil(D/B)``
of epoch ``t // ceil(D/B)``; its minibatch holds positions ``j B .. min((j + 1) B, D) - 1`` of that
epoch's order, a pseudo-random permutation of 0 .. D - 1 keyed by (data key, epoch). So every sample
is used exactly once per epoch, the last step of an epoch holds the D - (ceil(D/B) - 1) B remaining
samples (rows past them carry weight 0: its loss is the mean over the samples it has, as a data
loader without ``drop_last``), and D <= B trains on the whole set every step, in one fixed order (rows
0 .. D - 1 hold samples 0 .. D - 1, so the full-batch loss is the same sum every step, as L-BFGS wants).

The permutation is a 4-round Feistel network on the smallest even number of bits covering D, with
cycle walking (an index that lands at or above D is permuted again until it falls below D; a bijection
on [0, D) since the network is one on [0, 4^h)): O(B) work per step, exact for any D up to 2^31.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# fold_in indices beyond any training step (steps <= 1e9 < these), so no stream meets another.
DATASET_FOLD = 2**31 - 2   # sample keys of the fixed training set
SHUFFLE_FOLD = 2**31 - 3   # per-epoch permutation keys
VALIDATION_FOLD = 2**31 - 4   # keys of the validation sample (sweepjax.engine.train: ensembles choose members on it)
ROUNDS = 4


def _mix(x: jax.Array) -> jax.Array:
    """A 32-bit integer hash (lowbias32): every output bit depends on every input bit."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def permute(key: jax.Array, i: jax.Array, n: jax.Array) -> jax.Array:
    """Image of indices ``i`` (ints in [0, n)) under a pseudo-random permutation of [0, n) keyed by ``key``."""
    n = jnp.asarray(n, jnp.uint32)
    bits = 32 - jax.lax.clz(jnp.maximum(n - 1, 1))          # bits needed for n - 1 (at least 1)
    half = ((bits + 1) // 2).astype(jnp.uint32)
    mask = (jnp.uint32(1) << half) - 1
    round_keys = jax.random.bits(key, (ROUNDS,), jnp.uint32)

    def feistel(x):
        left, right = x >> half, x & mask
        for r in range(ROUNDS):
            left, right = right, left ^ (_mix(right ^ round_keys[r]) & mask)
        return (left << half) | right

    def walk(x):
        return jax.lax.while_loop(lambda y: y >= n, feistel, feistel(x))

    return jax.vmap(walk)(jnp.asarray(i, jnp.uint32).reshape(-1)).reshape(jnp.shape(i)).astype(jnp.int32)


def minibatch(data_key: jax.Array, step: jax.Array, batch: int, size: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Training-set indices of the B rows of ``step``'s minibatch, (B,) int32, and their weights (1 for
    the rows that hold a sample, 0 for the empty rows of an epoch's last step); see the module docstring."""
    size = jnp.maximum(jnp.asarray(size, jnp.int32), 1)
    per_epoch = (size + batch - 1) // batch
    epoch, within = step // per_epoch, step % per_epoch
    position = within * batch + jnp.arange(batch, dtype=jnp.int32)
    valid = position < size
    key = jax.random.fold_in(jax.random.fold_in(data_key, SHUFFLE_FOLD), epoch)
    index = permute(key, jnp.where(valid, position, 0), size)
    index = jnp.where(per_epoch > 1, index, position)   # the whole set every step: always in one order
    return jnp.where(valid, index, 0), valid


def sample_keys(data_key: jax.Array, index: jax.Array) -> jax.Array:
    """The keys of training-set samples ``index``."""
    base = jax.random.fold_in(data_key, DATASET_FOLD)
    return jax.vmap(lambda i: jax.random.fold_in(base, i))(index)


def samples_seen(steps: int, size: int, batch: int) -> int:
    """Training samples a member with a fixed set of ``size`` samples sees in ``steps`` steps (each full
    epoch of ceil(size / batch) steps sees ``size``, each step of an unfinished epoch ``batch``)."""
    per_epoch = -(-size // batch)
    epochs, rest = divmod(steps, per_epoch)
    return epochs * size + rest * batch
