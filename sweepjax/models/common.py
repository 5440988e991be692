"""Pieces every padded model family shares: per-index init draws, masked norms, matmuls, activations.

Padding invariance (DESIGN invariant 1) rests on three rules used by every family:

* every parameter's key is the member's init key folded with a hash of the parameter's NAME
  (:func:`named_param`), never flax's creation-order key, so which parameters exist in the
  padded group (a hidden stack only when some member is deeper than 1, say) cannot shift it;
* every parameter entry is drawn from that key folded with its own index, so the entries inside a
  member's true size are the same whatever the padded shape, and scaled by TRUE fan-ins;
* entries outside the true size start at zero and activations of inactive units are multiplied
  by zero, so their gradients are exactly zero and they stay zero under every optimizer here;
* layers beyond the true depth are skipped with ``where`` (exact identities), and normalisation
  statistics are taken over the active units only.
"""
from __future__ import annotations

import zlib
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "silu": jax.nn.silu,
    "relu": jax.nn.relu,
    "relu2": lambda z: jnp.square(jax.nn.relu(z)),
    "gelu": lambda z: jax.nn.gelu(z, approximate=False),
    "tanh": jnp.tanh,
}


def init_root(module: nn.Module) -> jax.Array | None:
    """The member's init key, taken as the FIRST ``params`` draw of the top-level module (a function of the
    key passed to ``init`` alone); None outside init, where parameters are only shape-checked."""
    return module.make_rng("params") if module.is_initializing() else None


def named_param(module: nn.Module, root: jax.Array | None, name: str, init: Callable, shape: tuple) -> jax.Array:
    """``module.param(name, ...)`` whose init key is ``fold_in(root, crc32(name))``: a function of the member's
    init key and the parameter's name only, whatever other parameters exist or in which order they are made.
    (Outside init flax only traces ``init`` for its shape; the key is then irrelevant.)"""
    def keyed(key, shape, *_):
        return init(key if root is None else jax.random.fold_in(root, zlib.crc32(name.encode())), shape)
    return module.param(name, keyed, shape)


def elementwise_draw(key: jax.Array, shape: tuple[int, ...], draw: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """One independent scalar draw per array entry, keyed by the entry's index.

    ``draw(key)`` returns a scalar; the value at index (i, j, ...) depends only on ``key`` and
    (i, j, ...), never on ``shape``, which is what makes padded init exact.
    """
    if 0 in shape:
        return jnp.zeros(shape)
    idx = jnp.stack(jnp.meshgrid(*[jnp.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, len(shape))

    def one(ix):
        k = key
        for a in range(len(shape)):
            k = jax.random.fold_in(k, ix[a])
        return draw(k)

    return jax.vmap(one)(idx).reshape(shape)


def normal_init(std: jax.Array, mask: jax.Array, dtype) -> Callable:
    """A flax init function: N(0, std^2) per entry (drawn by index), zero where ``mask`` is 0."""
    def init(key, shape, _dtype=None):
        z = elementwise_draw(key, shape, lambda k: jax.random.normal(k, (), dtype))
        return (z * jnp.asarray(std, dtype) * mask).astype(dtype)
    return init


def constant_init(value: float, mask: jax.Array, dtype) -> Callable:
    """A flax init function: ``value`` where ``mask`` is 1, zero elsewhere (norm gains and biases)."""
    return lambda key, shape, _dtype=None: jnp.broadcast_to(value * mask, shape).astype(dtype)


def normalize(h: jax.Array, unit: jax.Array, n_active: jax.Array, kind: str,
              gain: jax.Array | None = None, bias: jax.Array | None = None, eps: float = 1e-6) -> jax.Array:
    """RMSNorm or LayerNorm over the last axis, statistics over the active units only.

    ``unit`` is the 0/1 mask of active units and ``n_active`` their number; inactive entries of
    the result are exactly zero. ``kind = "none"`` returns ``h`` unchanged.
    """
    if kind == "none":
        return h
    if kind == "layernorm":
        h = (h - jnp.sum(h * unit, -1, keepdims=True) / n_active) * unit
    ms = jnp.sum(jnp.square(h) * unit, axis=-1, keepdims=True) / n_active
    out = h * jax.lax.rsqrt(ms + eps)
    if gain is not None:
        out = out * gain
    if bias is not None:
        out = out + bias
    return out * unit


def matmul(spec: str, a: jax.Array, b: jax.Array, compute_dtype) -> jax.Array:
    """``einsum(spec, a, b)`` with both operands in ``compute_dtype`` (bf16: float32 accumulation and result)."""
    if compute_dtype == jnp.bfloat16:
        return jnp.einsum(spec, a.astype(compute_dtype), b.astype(compute_dtype), preferred_element_type=jnp.float32)
    return jnp.einsum(spec, a, b)


def active_rms(h: jax.Array, unit: jax.Array, n_active: jax.Array) -> jax.Array:
    """Root mean square of the active coordinates of ``h`` (last axis), averaged over all other axes."""
    return jnp.mean(jnp.sqrt(jnp.sum(jnp.square(h) * unit, -1) / n_active))
