"""Model family ``mlp``: plain or residual MLPs, padded to a group's largest width and depth.

Padding invariance (DESIGN invariant 1) is built in three ways:

* every parameter entry is drawn from a key folded with its own index, so the entries inside a
  member's true size are the same whatever the padded shape, and scaled by TRUE fan-ins;
* entries outside the true size start at zero and activations of inactive units are multiplied
  by zero, so their gradients are exactly zero and they stay zero under any optimizer here;
* layers beyond the true depth are skipped with ``where`` (exact identities), and RMSNorm
  statistics are taken over the active units only.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from sweepjax.config import ModelConfig

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "silu": jax.nn.silu,
    "relu": jax.nn.relu,
    "relu2": lambda z: jnp.square(jax.nn.relu(z)),
    "gelu": lambda z: jax.nn.gelu(z, approximate=False),
    "tanh": jnp.tanh,
}


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


def init_entries(kind: str, is_bias: bool, fan_in: jax.Array, mask: jax.Array, dtype) -> Callable:
    """A flax init function: ``torch`` = U(+-1/sqrt(fan_in)); ``normal`` = N(0, 1/fan_in) weights, zero biases.

    ``fan_in`` is the member's TRUE fan-in; entries where ``mask`` is 0 are zero.
    """
    bound = 1.0 / jnp.sqrt(jnp.asarray(fan_in, dtype))

    def init(key, shape, _dtype=None):
        if kind == "torch":
            u = elementwise_draw(key, shape, lambda k: jax.random.uniform(k, (), dtype, -1.0, 1.0))
            return (u * bound * mask).astype(dtype)
        if is_bias:
            return jnp.zeros(shape, dtype)
        z = elementwise_draw(key, shape, lambda k: jax.random.normal(k, (), dtype))
        return (z * bound * mask).astype(dtype)

    return init


def rms_norm(h: jax.Array, unit: jax.Array, n_active: jax.Array, eps: float = 1e-6) -> jax.Array:
    """RMSNorm over the active units only (inactive entries of ``h`` are zero and stay zero)."""
    ms = jnp.sum(jnp.square(h) * unit, axis=-1, keepdims=True) / n_active
    return h * jax.lax.rsqrt(ms + eps) * unit


class MLP(nn.Module):
    """Plain or residual MLP, padded to (padded_width, padded_depth); true sizes are call arguments.

    Plain: ``depth`` hidden layers of ``width`` units (depth 1 with scalar in/out is the
    lottery-ticket net h = act(w x + b), y = v.h + c). Residual: input projection to a stream of
    ``width``, ``depth`` blocks h += s * W2 act(W1 norm(h) + b1), then the output projection.
    """
    cfg: ModelConfig
    padded_width: int
    padded_depth: int
    in_dim: int
    out_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, width: jax.Array, depth: jax.Array) -> jax.Array:
        c, W, D, dt = self.cfg, self.padded_width, self.padded_depth, self.dtype
        act = ACTIVATIONS[c.activation]
        unit = (jnp.arange(W) < width).astype(dt)
        one = jnp.ones((), dt)

        def param(name, shape, fan_in, mask, is_bias=False):
            return self.param(name, init_entries(c.init, is_bias, fan_in, mask, dt), shape)

        w_in = param("w_in", (self.in_dim, W), self.in_dim, unit[None, :])
        b_in = param("b_in", (W,), self.in_dim, unit, is_bias=True)
        h = x @ w_in + b_in
        if c.residual:
            H = c.mlp_ratio * W
            hid = (jnp.arange(H) < c.mlp_ratio * width).astype(dt)
            layer_on = (jnp.arange(D) < depth).astype(dt)
            w1 = param("w1", (D, W, H), width, layer_on[:, None, None] * unit[:, None] * hid[None, :])
            b1 = param("b1", (D, H), width, layer_on[:, None] * hid[None, :], is_bias=True)
            w2 = param("w2", (D, H, W), c.mlp_ratio * width, layer_on[:, None, None] * hid[:, None] * unit[None, :])
            scale = jax.lax.rsqrt(jnp.asarray(depth, dt)) if c.depth_scaling == "inv_sqrt" else one
            norm = (lambda v: rms_norm(v, unit, width)) if c.norm == "rmsnorm" else (lambda v: v)

            def block(h, p):
                a, b, w_out2, on = p
                branch = (act(norm(h) @ a + b) * hid) @ w_out2
                return jnp.where(on > 0, h + scale * branch, h), None

            h, _ = jax.lax.scan(block, h * unit, (w1, b1, w2, layer_on))
            h = norm(h)
        else:
            h = act(h) * unit
            if D > 1:  # no empty hidden stack for one-hidden-layer nets
                layer_on = (jnp.arange(D - 1) < depth - 1).astype(dt)
                w_h = param("w_h", (D - 1, W, W), width, layer_on[:, None, None] * unit[:, None] * unit[None, :])
                b_h = param("b_h", (D - 1, W), width, layer_on[:, None] * unit[None, :], is_bias=True)

                def layer(h, p):
                    w, b, on = p
                    return jnp.where(on > 0, act(h @ w + b) * unit, h), None

                h, _ = jax.lax.scan(layer, h, (w_h, b_h, layer_on))
        w_out = param("w_out", (W, self.out_dim), width, unit[:, None])
        b_out = param("b_out", (self.out_dim,), width, jnp.ones((self.out_dim,), dt), is_bias=True)
        return h @ w_out + b_out


def count_params(cfg: ModelConfig, width: int, depth: int, in_dim: int, out_dim: int) -> int:
    """Trainable parameters of a member at its TRUE sizes."""
    ends = in_dim * width + width + width * out_dim + out_dim
    if cfg.residual:
        h = cfg.mlp_ratio * width
        return ends + depth * (width * h + h + h * width)
    return ends + (depth - 1) * (width * width + width)
