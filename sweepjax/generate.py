"""Sampling sequences from a trained transformer member: a sweep's model as another sweep's data source.

:func:`sample` draws sequences autoregressively on the device from a :class:`~sweepjax.members.Member`
(:func:`sweepjax.members.load_member`) of any next-token task (one with a ``vocab`` and a ``context``):

* x_0 is drawn from a ``start`` distribution the caller gives (default uniform). The generator has no
  beginning-of-sequence token: it was trained on windows x_0..x_T and never predicted x_0, so its own
  law of x_0 is undefined. For a generator trained on random windows of a corpus, the law of x_0 in its
  training data is the corpus's unigram distribution: pass it, and the sampled windows start as the
  generator's training windows did.
* x_{t+1} ~ softmax(logits_t / temperature), logits_t the generator's output at position t given
  x_0..x_t, by inverse CDF with one uniform per token (:func:`sweepjax.tasks.markov._search`), for
  t = 0 .. context - 1: a ``lax.scan`` over positions with a key/value cache
  (:meth:`sweepjax.models.transformer.Transformer.empty_cache`). Step t runs the forward pass on the one
  token x_t (``cache=``, ``position=t``: the module's own forward, embedding, blocks and readout), writes
  its keys and values into the cache at t and attends over the cache, the entries after t masked. Each
  position so costs one token's forward pass plus attention over ``context`` cached keys, instead of a
  full forward pass on the (n, context) buffer (``context`` times the work); the price is the cache's
  memory, 2 x depth x n x context x heads x head_dim floats (padded sizes) per compiled call (``chunk``
  bounds n). The logits equal the full forward's (``member.apply`` on the finished sequences) up to float
  rounding (attention sums over ``context`` keys, masked ones exactly zero, instead of t + 1), so a token
  can differ from the full-forward sampler's only where its uniform lies within rounding of a CDF boundary.

Each sequence i uses the uniforms of ``fold_in(key, i)`` alone, so it does not depend on ``n`` or on the
chunking. The generator only ever sees positions it was trained on: ``context`` may not exceed its own.

Alongside the tokens, :func:`sample` records for every drawn token the entropy (nats) of the distribution
it was drawn from and its log-probability under it. The sampled sequences are a source whose true
next-token distribution is exactly that softmax, so the mean entropy over sequences and positions is an
unbiased estimate of the source's irreducible loss (the expected loss of the best predictor that sees the
same context, for positions 1..context given x_0's law), and for a fixed set of sampled sequences the mean
of -log_prob is the source's own (Bayes) loss on that set, as ``test_bayes_loss`` is for the Markov task.
"""
from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from sweepjax.members import Member
from sweepjax.tasks.markov import _cdf_rows, _search


def generator_io(member: Member) -> dict[str, int]:
    """The generator's ``vocab`` and ``context`` (the task it was trained on); refuses members that are not
    next-token transformers."""
    from sweepjax.models import task_io
    io = task_io(member.config)
    if member.config.model.family != "transformer" or "vocab" not in io or "context" not in io:
        raise ValueError(f"member {member.coords} is a {member.config.model.family!r} model of task "
                         f"{member.config.task.name!r}: only transformers of next-token tasks (with a vocab) generate")
    return {"vocab": int(io["vocab"]), "context": int(io["context"])}


@partial(jax.jit, static_argnums=(0, 5))
def _generate(member: Member, params: dict, cdf0: jax.Array, key: jax.Array, index: jax.Array, context: int,
              temperature: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Sequences ``index`` (m,) of :func:`sample`: tokens (m, context + 1), entropy and log_prob (m, context)."""
    v = cdf0.shape[0]
    u = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i), (context + 1,), jnp.float32))(index)
    x0 = _search(lambda j: cdf0[j], u[:, 0], v).astype(jnp.int32)

    def step(carry, tu):
        (x, cache), (t, ut) = carry, tu
        logits, cache = member.apply(params, x[:, None], cache=cache, position=t)    # logits (m, 1, V)
        lp = jax.nn.log_softmax(logits[:, 0].astype(jnp.float32) / temperature, axis=-1)
        p = jnp.exp(lp)
        cdf = _cdf_rows(p)
        nxt = _search(lambda j: jnp.take_along_axis(cdf, j[:, None], axis=1)[:, 0], ut, v).astype(jnp.int32)
        entropy = -jnp.sum(jnp.where(p > 0, p * lp, 0.0), axis=-1)
        log_prob = jnp.take_along_axis(lp, nxt[:, None], axis=1)[:, 0]
        return (nxt, cache), (nxt, entropy, log_prob)

    cache = member.model.empty_cache(index.shape[0], context)
    _, (drawn, entropy, log_prob) = jax.lax.scan(step, (x0, cache), (jnp.arange(context), u[:, 1:].T))
    return jnp.concatenate([x0[:, None], drawn.T], axis=1), entropy.T, log_prob.T


def sample(member: Member, key: jax.Array, n: int, context: int, temperature: float = 1.0,
           start: np.ndarray | None = None, chunk: int | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``n`` sequences of ``context + 1`` tokens sampled from ``member`` (see the module docstring).

    ``start``: the law of x_0, a host array of V nonnegative weights (normalised here; None: uniform);
    ``temperature`` > 0 divides the logits (1: the generator's own distribution); ``chunk``: sequences per
    compiled call (bounds memory; None: all at once; the result does not depend on it).

    Returns ``(tokens, entropy, log_prob)``: tokens (n, context + 1) int32; entropy (n, context) float32,
    ``entropy[:, t]`` the entropy in nats of the (tempered) distribution x_{t+1} was drawn from; log_prob
    (n, context) float32, ``ln p(x_{t+1} | x_0..x_t)`` under that distribution. Jitted per member and shape.
    """
    io = generator_io(member)
    v = io["vocab"]
    if not 1 <= context <= io["context"]:
        raise ValueError(f"context = {context}: the generator {member.coords} was trained on {io['context']} "
                         f"positions and only samples 1 to {io['context']}")
    if not temperature > 0:
        raise ValueError(f"temperature = {temperature}: must be > 0")
    if n < 1 or (chunk is not None and chunk < 1):
        raise ValueError(f"n = {n}, chunk = {chunk}: need at least one sequence per call")
    start = np.ones(v) if start is None else np.asarray(start, np.float64)
    if start.shape != (v,) or not np.all(np.isfinite(start)) or np.any(start < 0) or not start.sum() > 0:
        raise ValueError(f"start must be {v} finite nonnegative weights, not all zero (got shape {start.shape})")
    cdf0 = jnp.asarray(_cdf_rows(start / start.sum()))
    size = chunk or n
    parts = [_generate(member, member.params, cdf0, key, jnp.arange(i, min(i + size, n)), context,
                       jnp.float32(temperature)) for i in range(0, n, size)]
    return tuple(p[0] if len(parts) == 1 else jnp.concatenate(p) for p in zip(*parts))


__all__ = ["sample", "generator_io"]
