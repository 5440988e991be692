"""Model family ``transformer``: decoder-only, pre-norm, padded to a group's largest sizes.

Per member (numbers inside one compiled program): d_model ``width``, ``depth`` layers, ``heads``
attention heads of ``head_dim`` each, MLP of ``mlp_hidden`` units. Every array is padded to the
group maximum of each size and masked (see :mod:`sweepjax.models.common`): norm statistics over the
active d_model units, attention over the active heads and head dims, layers past the true depth
are ``where`` identities. No biases except the LayerNorm ones.

Parameterizations (``model.parameterization``), with m = width / base_width from the TRUE width:

* ``sp``: hidden weights N(0, 1/fan_in), embeddings N(0, 1), readout N(0, 1/width), attention
  logits q.k / sqrt(head_dim), every tensor at the config's learning rate;
* ``mup`` (the Adam rules of Yang et al.): the same inits, each hidden matrix (q, k, v, o and both
  MLP matrices) at lr over ITS OWN fan-in multiplier (true fan-in / the base model's; the MLP's
  second matrix follows the MLP width, see :func:`fan_in_multipliers`), embeddings, norms and
  readout at lr, logits multiplied by 1/m, attention logits q.k * sqrt(d_base) / head_dim. At
  ``width == base_width`` (and the base MLP ratio) every factor is 1: muP equals SP exactly.

``model.zero_init`` starts the readout (``"head"``) and/or every block's output projections, the
attention's ``wo`` and the MLP's ``w2`` (``"proj"``), at zero; ``model.depth_scaling = "inv_sqrt"`` multiplies
both residual branches by 1/sqrt(true depth).
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sweepjax.config import ModelConfig
from sweepjax.models.common import (ACTIVATIONS, active_rms, constant_init, init_root, matmul, named_param, normal_init,
                                   normalize)

SIZE_KEYS = ("width", "depth", "heads", "head_dim", "mlp_hidden")
# Parameters trained at lr / m under muP (matrices with both dimensions growing with width).
HIDDEN = ("wq", "wk", "wv", "wo", "w1", "w2")
# Parameters AdamW decays (matrices; embeddings, norm gains and biases only with train.decay_all).
DECAYED = HIDDEN + ("readout",)
PROBES = ("embed", "attn_out", "mlp_out", "residual", "logits")


def member_sizes(cfg: ModelConfig, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """True sizes of each member from its per-member config values (``model.width`` ...)."""
    width = np.asarray(values["model.width"], np.int64)
    heads = width // cfg.head_size if cfg.head_size else np.asarray(values["model.heads"], np.int64)
    return {"width": width, "depth": np.asarray(values["model.depth"], np.int64), "heads": heads,
            "head_dim": width // heads if not cfg.head_size else np.full_like(width, cfg.head_size),
            "mlp_hidden": np.asarray(values["model.mlp_ratio"], np.int64) * width}


def width_multiplier(cfg: ModelConfig, width: jax.Array) -> jax.Array:
    """muP's m = true width / base width (1 under SP)."""
    width = jnp.asarray(width, jnp.float32)
    return width / cfg.base_width if cfg.parameterization == "mup" else jnp.ones_like(width)


def fan_in_multipliers(cfg: ModelConfig, sizes: dict) -> dict[str, jax.Array]:
    """Each hidden matrix's TRUE fan-in over its fan-in in the muP base model (all 1 under SP).

    The base model has d_model ``base_width``, attention output fan-in ``base_width`` (heads x head
    dim = d_model) and MLP hidden ``base_width * base_mlp_ratio`` (``base_mlp_ratio = 0``: the
    member's own ratio, so only the width moves it).
    """
    f = lambda n: jnp.asarray(n, jnp.float32)
    if cfg.parameterization != "mup":
        return {name: f(1.0) for name in HIDDEN}
    width, inner, hidden = f(sizes["width"]), f(sizes["heads"]) * f(sizes["head_dim"]), f(sizes["mlp_hidden"])
    base_ratio = cfg.base_mlp_ratio if cfg.base_mlp_ratio else hidden / width
    base = cfg.base_width
    return {"wq": width / base, "wk": width / base, "wv": width / base, "w1": width / base,
            "wo": inner / base, "w2": hidden / (base * base_ratio)}


def attention_scale(cfg: ModelConfig, sizes: dict) -> jax.Array:
    """Attention logit factor: 1/sqrt(d_head) under SP; sqrt(d_base)/d_head under muP, d_base the base
    model's head dim (``head_size``, or ``base_width / heads``), so muP equals SP at the base width."""
    d = jnp.asarray(sizes["head_dim"], jnp.float32)
    if cfg.parameterization != "mup":
        return jax.lax.rsqrt(d)
    base = cfg.head_size or cfg.base_width / jnp.asarray(sizes["heads"], jnp.float32)
    return jnp.sqrt(base) / d


def rotary(q: jax.Array, head_dim: jax.Array, base: float, position: jax.Array | int = 0) -> jax.Array:
    """RoPE on (B, T, H, Dp) at absolute positions ``position`` .. ``position + T - 1``, with interleaved pairs
    (2i, 2i+1) at frequency base^(-2i / true head_dim)."""
    B, T, H, Dp = q.shape
    freq = base ** (-2.0 * jnp.arange(Dp // 2) / head_dim)
    angle = (position + jnp.arange(T))[:, None] * freq[None, :]         # (T, Dp/2)
    cos, sin = jnp.cos(angle)[None, :, None, :], jnp.sin(angle)[None, :, None, :]
    pairs = q.reshape(B, T, H, Dp // 2, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    return jnp.stack([a * cos - b * sin, a * sin + b * cos], -1).reshape(q.shape).astype(q.dtype)


class Transformer(nn.Module):
    """Decoder-only transformer over ``vocab`` tokens and ``context`` positions, padded to ``padded`` sizes."""
    cfg: ModelConfig
    padded: dict
    vocab: int
    context: int
    dtype: Any = jnp.float32          # parameters (float32 or float64)
    compute_dtype: Any = jnp.float32  # matmul operands (bf16 for mixed precision)

    def empty_cache(self, batch: int, length: int) -> tuple[jax.Array, jax.Array]:
        """A key/value cache for :meth:`__call__` (``cache=``) of ``batch`` sequences of up to ``length``
        positions: every layer's keys and values, each (depth, batch, heads, length, head_dim) at the padded
        sizes, zeros (heads before positions: the attention reads each head's keys and values contiguously)."""
        P = self.padded
        shape = (P["depth"], batch, P["heads"], length, P["head_dim"])
        return jnp.zeros(shape, self.dtype), jnp.zeros(shape, self.dtype)

    @nn.compact
    def __call__(self, tokens: jax.Array, sizes: dict, probes: bool = False,
                 cache: tuple[jax.Array, jax.Array] | None = None, position: jax.Array | int = 0):
        """Logits (B, T, vocab) for int tokens (B, T); with ``probes`` also a dict of activation RMS values.

        Incremental decoding: with a ``cache`` (:meth:`empty_cache`, then what the previous call returned) holding
        the keys and values of positions 0 .. ``position`` - 1 of B sequences, ``tokens`` are their tokens at
        positions ``position`` .. ``position + T - 1``; returns ``(logits, cache)`` (no probes), the cache with
        these positions' keys and values written in. The same computation as the full forward, attending over the
        cache's length (later entries masked) instead of T keys: equal logits up to float rounding.
        """
        c, P, dt, cd = self.cfg, self.padded, self.dtype, self.compute_dtype
        W, D, H, Dh, F, V = P["width"], P["depth"], P["heads"], P["head_dim"], P["mlp_hidden"], self.vocab
        if cache is not None:   # static checks (a traced position is not checked): XLA would clamp silently
            length, T = cache[0].shape[3], tokens.shape[1]
            if probes:
                raise ValueError("probes are not computed while decoding with a cache")
            if c.positions == "learned" and length > self.context:
                raise ValueError(f"a cache of {length} positions: learned positions only go to {self.context}")
            if T > length or (isinstance(position, int) and not 0 <= position <= length - T):
                raise ValueError(f"{T} token(s) at position {position} do not fit a cache of {length} positions")
        width, depth = sizes["width"], sizes["depth"]
        unit = (jnp.arange(W) < width).astype(dt)
        head = (jnp.arange(H) < sizes["heads"]).astype(dt)[:, None] * (jnp.arange(Dh) < sizes["head_dim"]).astype(dt)
        hid = (jnp.arange(F) < sizes["mlp_hidden"]).astype(dt)
        on = (jnp.arange(D) < depth).astype(dt)
        inner = sizes["heads"] * sizes["head_dim"]
        inv = lambda n: jax.lax.rsqrt(jnp.asarray(n, dt))
        m = width_multiplier(c, width).astype(dt)
        root = init_root(self)
        param = lambda name, init, shape: named_param(self, root, name, init, shape)
        proj_std = lambda std: 0.0 if "proj" in c.zero_init else std

        emb = param("embed", normal_init(1.0, unit, dt), (V, W))
        h = emb[tokens]
        T = tokens.shape[1]
        if c.positions == "learned":
            pos_embed = param("pos_embed", normal_init(1.0, unit, dt), (self.context, W))
            h = h + jax.lax.dynamic_slice_in_dim(pos_embed, position, T)[None]

        def norm_params(name, shape, mask):
            gain = param(f"{name}_gain", constant_init(1.0, mask, dt), shape) if c.norm != "none" else None
            bias = param(f"{name}_bias", constant_init(0.0, mask, dt), shape) if c.norm == "layernorm" else None
            return gain, bias

        layer_unit = on[:, None] * unit
        layers = {
            "ln1": norm_params("ln1", (D, W), layer_unit),
            "ln2": norm_params("ln2", (D, W), layer_unit),
            "wq": param("wq", normal_init(inv(width), on[:, None, None, None] * unit[:, None, None] * head, dt), (D, W, H, Dh)),
            "wk": param("wk", normal_init(inv(width), on[:, None, None, None] * unit[:, None, None] * head, dt), (D, W, H, Dh)),
            "wv": param("wv", normal_init(inv(width), on[:, None, None, None] * unit[:, None, None] * head, dt), (D, W, H, Dh)),
            "wo": param("wo", normal_init(proj_std(inv(inner)), on[:, None, None, None] * head[..., None] * unit, dt), (D, H, Dh, W)),
            "w1": param("w1", normal_init(inv(width), on[:, None, None] * unit[:, None] * hid, dt), (D, W, F)),
            "w2": param("w2", normal_init(proj_std(inv(sizes["mlp_hidden"])), on[:, None, None] * hid[:, None] * unit, dt), (D, F, W)),
            "on": on,
            "layer": jnp.arange(D),
        }
        branch_scale = inv(depth) if c.depth_scaling == "inv_sqrt" else jnp.ones((), dt)
        logit_scale = attention_scale(c, sizes).astype(dt)
        keys = T if cache is None else cache[0].shape[3]
        causal = jnp.arange(keys)[None, :] <= position + jnp.arange(T)[:, None]     # (T, keys): key s <= query t
        act = ACTIVATIONS[c.activation]
        norm = lambda v, gb: normalize(v, unit, width, c.norm, *gb)

        def block(carry, p):
            h, cache = carry
            a = norm(h, p["ln1"])
            q, k, v = (matmul("btw,whd->bthd", a, p[n], cd) for n in ("wq", "wk", "wv"))
            if c.positions == "rotary":
                q, k = (rotary(x, sizes["head_dim"], c.rope_base, position) for x in (q, k))
            if cache is not None:     # written in at ``position`` (in place), then this layer's keys and values so far
                at = (p["layer"], 0, 0, position, 0)
                cache = tuple(jax.lax.dynamic_update_slice(buf, jnp.swapaxes(x, 1, 2)[None], at)
                              for buf, x in zip(cache, (k, v)))
                k, v = (jnp.swapaxes(buf[p["layer"]], 1, 2) for buf in cache)
            s = matmul("bthd,bshd->bhts", q, k, cd).astype(dt) * logit_scale
            s = jnp.where(causal, s, -jnp.inf)
            o = matmul("bhts,bshd->bthd", jax.nn.softmax(s, axis=-1).astype(dt), v, cd).astype(dt)
            attn = matmul("bthd,hdw->btw", o, p["wo"], cd).astype(dt)
            h1 = h + branch_scale * attn
            mlp = matmul("btf,fw->btw", act(matmul("btw,wf->btf", norm(h1, p["ln2"]), p["w1"], cd).astype(dt)) * hid,
                         p["w2"], cd).astype(dt)
            h2 = h1 + branch_scale * mlp
            stats = jnp.stack([active_rms(attn, unit, width), active_rms(mlp, unit, width)])
            return (jnp.where(p["on"] > 0, h2, h), cache), stats

        h0 = h
        (h, cache), layer_stats = jax.lax.scan(block, (h, cache), layers)
        final = norm(h, norm_params("ln_f", (W,), unit))
        if c.tie_embeddings:
            readout = emb.T
        else:
            std = 0.0 if "head" in c.zero_init else inv(width)
            readout = param("readout", normal_init(std, unit[:, None] * jnp.ones(V, dt), dt), (W, V))
        logits = matmul("btw,wv->btv", final, readout, cd).astype(dt) / m
        if cache is not None:
            return logits, cache
        if not probes:
            return logits
        per_layer = jnp.sum(layer_stats * on[:, None], 0) / depth
        values = [active_rms(h0, unit, width), per_layer[0], per_layer[1], active_rms(h, unit, width),
                  jnp.sqrt(jnp.mean(jnp.square(logits)))]
        return logits, dict(zip(PROBES, values))


def lr_multipliers(cfg: ModelConfig, params: dict, sizes: dict) -> dict:
    """Per-tensor learning-rate factors (a tree like ``params``): under muP each hidden matrix at lr over
    its own fan-in multiplier (:func:`fan_in_multipliers`), everything else at lr; all 1 under SP."""
    fan = fan_in_multipliers(cfg, sizes)
    return {name: 1.0 / fan[name] if name in fan else jnp.ones(()) for name in params}


def make(cfg: ModelConfig, padded: dict[str, int], io: dict[str, int], dtype, compute_dtype) -> Transformer:
    """The group's module; ``io``: the task's ``vocab`` and ``context``."""
    return Transformer(cfg, padded, io["vocab"], io["context"], dtype, compute_dtype)


def count(cfg: ModelConfig, io: dict[str, int], s: dict[str, int]) -> dict[str, float]:
    """Parameters and forward FLOPs per token of one member at its TRUE sizes ``s``.

    ``n_params``: every trained entry. ``n_params_non_embedding``: without the token and position
    embeddings and the (untied) readout, as in Kaplan et al.'s N = 12 L d^2. ``forward_flops_per_token``:
    the matmuls exactly as computed (2 per multiply-add), attention scores and mixing over the full
    context (the causal mask does not save work here); norms, softmax and activations not counted.
    """
    c, V, T = cfg, io["vocab"], io["context"]
    W, D, inner, F = s["width"], s["depth"], s["heads"] * s["head_dim"], s["mlp_hidden"]
    norm = {"none": 0, "rmsnorm": 1, "layernorm": 2}[c.norm] * W
    layer = 4 * W * inner + 2 * W * F + 2 * norm
    embedding = V * W + (T * W if c.positions == "learned" else 0)
    readout = 0 if c.tie_embeddings else W * V
    total = embedding + D * layer + norm + readout
    flops = 2 * D * (4 * W * inner + 2 * W * F) + 2 * D * 2 * T * inner + 2 * W * V
    return {"n_params": total, "n_params_non_embedding": total - embedding - readout,
            "forward_flops_per_token": flops}


def activation_floats(cfg: ModelConfig, io: dict[str, int], s: dict[str, int]) -> int:
    """Floats per sequence kept for the backward pass (a memory estimate, not exact)."""
    T, H = io["context"], s["heads"]
    per_layer = T * (10 * s["width"] + 3 * H * s["head_dim"] + 2 * s["mlp_hidden"]) + 2 * H * T * T
    return s["depth"] * per_layer + 3 * T * io["vocab"]
