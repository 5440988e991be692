"""Model family ``mlp``: plain or residual MLPs, padded to a group's largest width and depth.

Padding follows the rules in :mod:`sweepjax.models.common`: per-index init draws scaled by TRUE
fan-ins, zero entries and masked activations outside the true size, ``where`` identities past
the true depth, RMSNorm statistics over the active units only.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sweepjax.config import ModelConfig
from sweepjax.models.common import ACTIVATIONS, active_rms, elementwise_draw, init_root, matmul, named_param, normalize

SIZE_KEYS = ("width", "depth", "mlp_hidden")
# Parameters AdamW decays (weight matrices; biases only with train.decay_all).
DECAYED = ("w_in", "w_h", "w_out", "w1", "w2")
PROBES = ("hidden", "output")


def member_sizes(cfg: ModelConfig, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """True sizes of each member from its per-member config values."""
    width = np.asarray(values["model.width"], np.int64)
    return {"width": width, "depth": np.asarray(values["model.depth"], np.int64),
            "mlp_hidden": np.asarray(values["model.mlp_ratio"], np.int64) * width}


def init_entries(kind: str, is_bias: bool, fan_in: jax.Array, mask: jax.Array, dtype, zero: bool = False) -> Callable:
    """A flax init function: ``torch`` = U(+-1/sqrt(fan_in)); ``normal`` = N(0, 1/fan_in) weights, zero biases;
    ``zero``: all zero (``model.zero_init``).

    ``fan_in`` is the member's TRUE fan-in; entries where ``mask`` is 0 are zero.
    """
    bound = 0.0 if zero else 1.0 / jnp.sqrt(jnp.asarray(fan_in, dtype))

    def init(key, shape, _dtype=None):
        if kind == "torch":
            u = elementwise_draw(key, shape, lambda k: jax.random.uniform(k, (), dtype, -1.0, 1.0))
            return (u * bound * mask).astype(dtype)
        if is_bias:
            return jnp.zeros(shape, dtype)
        z = elementwise_draw(key, shape, lambda k: jax.random.normal(k, (), dtype))
        return (z * bound * mask).astype(dtype)

    return init


class MLP(nn.Module):
    """Plain or residual MLP, padded to ``padded`` sizes; true sizes are call arguments.

    Inputs (B, in_dim) and outputs (B, out_dim) have the task's sizes (``out_dim`` classes for a
    classification task, whose loss reads the outputs as logits). Plain: ``depth`` hidden layers of
    ``width`` units (depth 1 with scalar in/out is the lottery-ticket net h = act(w x + b), y = v.h + c).
    Residual: input projection to a stream of ``width``, ``depth`` pre-norm blocks
    h += s * W2 act(W1 norm(h) + b1) with ``mlp_hidden`` units, the final norm, then the output
    projection (the head). Norms here have no parameters. ``model.zero_init``: ``"proj"`` starts every
    W2 at zero (each block starts as the identity), ``"head"`` the output projection and its bias.
    ``model.input = "none"`` (residual): no input projection, the stream starts as norm(x) (width = in_dim);
    ``model.head``: ``"affine"`` (W h + b), ``"linear"`` (no bias) or ``"none"`` (the outputs are the final
    normed stream, width = out_dim) -- the inverse-depth study's student is input "none", head "linear"
    (KL) or "none" (MSE).
    """
    cfg: ModelConfig
    padded: dict
    in_dim: int
    out_dim: int
    dtype: Any = jnp.float32
    compute_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, sizes: dict, probes: bool = False, layers: bool = False):
        """Outputs (B, out_dim); with ``probes`` also a dict of activation RMS values; with ``layers`` (residual
        only) also ``{"states": (D + 1, B, W) stream h_0 .. h_D, "readouts": (D + 1, B, out_dim) each h_l read
        out through the final norm and the head}`` (D the padded depth)."""
        c, dt, cd = self.cfg, self.dtype, self.compute_dtype
        W, D = self.padded["width"], self.padded["depth"]
        width, depth = sizes["width"], sizes["depth"]
        act = ACTIVATIONS[c.activation]
        unit = (jnp.arange(W) < width).astype(dt)
        one = jnp.ones((), dt)
        mm = lambda a, b: matmul("bi,io->bo", a, b, cd).astype(dt)
        root = init_root(self)

        def param(name, shape, fan_in, mask, is_bias=False, zero=False):
            return named_param(self, root, name, init_entries(c.init, is_bias, fan_in, mask, dt, zero), shape)

        if c.input == "none":   # the stream starts as the normed input (width = in_dim, checked by the config)
            h = normalize(x.astype(dt), unit, width, c.norm)
        else:
            w_in = param("w_in", (self.in_dim, W), self.in_dim, unit[None, :])
            b_in = param("b_in", (W,), self.in_dim, unit, is_bias=True)
            h = mm(x, w_in) + b_in
        states = None
        if c.residual:
            H = self.padded["mlp_hidden"]
            hid = (jnp.arange(H) < sizes["mlp_hidden"]).astype(dt)
            layer_on = (jnp.arange(D) < depth).astype(dt)
            w1 = param("w1", (D, W, H), width, layer_on[:, None, None] * unit[:, None] * hid[None, :])
            b1 = param("b1", (D, H), width, layer_on[:, None] * hid[None, :], is_bias=True)
            w2 = param("w2", (D, H, W), sizes["mlp_hidden"], layer_on[:, None, None] * hid[:, None] * unit[None, :],
                       zero="proj" in c.zero_init)
            scale = jax.lax.rsqrt(jnp.asarray(depth, dt)) if c.depth_scaling == "inv_sqrt" else one
            norm = lambda v: normalize(v, unit, width, c.norm)

            def block(h, p):
                a, b, w_out2, on = p
                branch = mm(act(mm(norm(h), a) + b) * hid, w_out2)
                h = jnp.where(on > 0, h + scale * branch, h)
                return h, h if layers else None

            h0 = h * unit
            h, stack = jax.lax.scan(block, h0, (w1, b1, w2, layer_on))
            if layers:   # h_0 .. h_D; layers past the member's depth repeat its final state
                states = jnp.concatenate([h0[None], stack], axis=0)
        else:
            norm = lambda v: v
            h = act(h) * unit
            if D > 1:  # no empty hidden stack for one-hidden-layer nets
                layer_on = (jnp.arange(D - 1) < depth - 1).astype(dt)
                w_h = param("w_h", (D - 1, W, W), width, layer_on[:, None, None] * unit[:, None] * unit[None, :])
                b_h = param("b_h", (D - 1, W), width, layer_on[:, None] * unit[None, :], is_bias=True)

                def layer(h, p):
                    w, b, on = p
                    return jnp.where(on > 0, act(mm(h, w) + b) * unit, h), None

                h, _ = jax.lax.scan(layer, h, (w_h, b_h, layer_on))
        if c.head == "none":   # the outputs are the final normed stream (width = out_dim, checked by the config)
            readout = norm
        else:
            zero_head = "head" in c.zero_init
            w_out = param("w_out", (W, self.out_dim), width, unit[:, None], zero=zero_head)
            b_out = (param("b_out", (self.out_dim,), width, jnp.ones((self.out_dim,), dt), is_bias=True, zero=zero_head)
                     if c.head == "affine" else 0.0)
            readout = lambda v: mm(norm(v), w_out) + b_out
        out = readout(h)
        if layers:
            if states is None:
                raise ValueError("layer states exist for the residual MLP only")
            return out, {"states": states, "readouts": jax.vmap(readout)(states)}
        if not probes:
            return out
        return out, {"hidden": active_rms(norm(h), unit, width), "output": jnp.sqrt(jnp.mean(jnp.square(out)))}


def lr_multipliers(cfg: ModelConfig, params: dict, sizes: dict) -> None:
    """Per-tensor learning-rate factors: none (every tensor at the config's lr)."""
    return None


def make(cfg: ModelConfig, padded: dict[str, int], io: dict[str, int], dtype, compute_dtype) -> MLP:
    """The group's module; ``io``: the task's ``in_dim`` and ``out_dim``."""
    return MLP(cfg, padded, io["in_dim"], io["out_dim"], dtype, compute_dtype)


def count(cfg: ModelConfig, io: dict[str, int], s: dict[str, int]) -> dict[str, float]:
    """Parameters and forward FLOPs per sample of one member at its TRUE sizes ``s``.

    Every parameter is a non-embedding one; FLOPs are 2 per weight (multiply-add), biases and
    activations not counted.
    """
    W, D, n_in, n_out = s["width"], s["depth"], io["in_dim"], io["out_dim"]
    inputs = (n_in * W, W) if cfg.input == "affine" else (0, 0)          # (weights, biases) of each layer
    head = {"affine": (W * n_out, n_out), "linear": (W * n_out, 0), "none": (0, 0)}[cfg.head]
    if cfg.residual:
        hidden = (D * 2 * W * s["mlp_hidden"], D * s["mlp_hidden"])
    else:
        hidden = ((D - 1) * W * W, (D - 1) * W)
    weights = inputs[0] + hidden[0] + head[0]
    total = weights + inputs[1] + hidden[1] + head[1]
    return {"n_params": total, "n_params_non_embedding": total, "forward_flops_per_token": 2 * weights}


def activation_floats(cfg: ModelConfig, io: dict[str, int], s: dict[str, int]) -> int:
    """Floats per sample kept for the backward pass (a memory estimate, not exact)."""
    units = s["width"] + (s["mlp_hidden"] if cfg.residual else 0)
    return 4 * units * max(s["depth"], 1) + io["in_dim"] + 2 * io["out_dim"]
