"""Task ``markov``: next-token prediction on sequences of a random Markov chain over V tokens.

The chain
    A transition matrix P (V x V, rows sum to 1) is drawn on the host, in float64, from
    ``numpy.random.default_rng(chain_seed)`` alone, so every member of a sweep (and every run with
    the same ``chain_seed``) sees the same chain. Each row keeps ``k = max(1, round((1 - sparsity) * V))``
    nonzero entries (at most V); the other ``V - k`` are exactly 0. To make the chain irreducible
    (so its stationary distribution is unique), one random cyclic permutation sigma (a single cycle
    through all V tokens) is drawn first, and row i always keeps the edge i -> sigma(i); its other
    ``k - 1`` kept columns are distinct and uniformly random among the remaining ``V - 1``
    (self-loops allowed). The kept entries of a row get weights ``softmax(z / temperature)`` with
    ``z ~ N(0, 1)`` i.i.d.; a small temperature makes rows near-deterministic (entropy -> 0), and
    ``k = 1`` makes the chain the deterministic cycle sigma (entropy exactly 0). Kept weights are
    floored at the smallest normal float64 (~2e-308) so that an extreme temperature cannot underflow
    them to 0 and break irreducibility; in the float32 sampler such weights are simply never drawn.

    The stationary distribution pi (pi P = pi, sum 1) solves the stacked system
    ``[(P^T - I); 1^T] pi = [0; 1]`` by least squares; tiny negatives are clipped and pi is renormalised.
    The entropy rate ``H = sum_i pi_i H(P_i)`` (nats per token) is the smallest expected test loss any
    predictor can reach. The fixed test set has its own floor, ``test_bayes_loss()``: the loss of the true
    chain on those very sequences, which differs from H by the test set's sampling offset (a fixed random
    offset that shrinks as 1/sqrt(test_size * context); +0.017 nats on the transformer config's CPU sizes).
    ``test_loss - test_bayes_loss()`` is the reducible part of the reported test loss.

The data
    A sequence has ``context + 1`` tokens: ``x_0 ~ pi``, then ``x_{t+1} ~ P[x_t]``, so the process is
    stationary and every position has the same marginal pi. Models see ``x = seq[:, :-1]`` and predict
    ``y = seq[:, 1:]`` (both (batch, context) int32), and the loss is the mean cross-entropy in nats
    over all positions. Sampling runs on the device by inverse-CDF search: one uniform per token, a
    binary search (ceil(log2 V) gathers) in the float32 cumulative row of the current token, and a
    ``lax.scan`` over the ``context`` steps with the whole batch vectorised; zero-probability transitions
    can never be drawn. Training batches are pure functions of (data key, step); the test set is a fixed
    set of ``test_size`` sequences drawn once from a key derived from ``chain_seed`` alone
    (``fold_in(key(chain_seed), 2**31 - 1)``, a step no training stream reaches), the same for every member.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from sweepjax.config import TaskConfig
from sweepjax.losses import cross_entropy
from sweepjax.tasks.base import Task

# fold_in index of the test set's key: training keys are fold_in(data_key, step) with step <= 1e9 < this.
TEST_FOLD = 2**31 - 1


def _cdf_rows(p: np.ndarray | jax.Array) -> np.ndarray | jax.Array:
    """Cumulative sums along the last axis, as float32, exactly 1.0 from each row's last nonzero entry on.

    With u in [0, 1) the smallest j with cdf[j] > u then always exists and always has p[j] > 0
    (a zero entry repeats the previous cumulative value, so it can never be the first to exceed u).
    A numpy ``p`` is summed on the host in its own precision (float64 for the chains); a JAX array (a
    model's next-token probabilities, traced) on the device, with the same result type and rules.
    """
    xp = np if isinstance(p, np.ndarray) else jnp
    cdf = xp.cumsum(p, axis=-1)
    cdf = cdf / cdf[..., -1:]
    last = p.shape[-1] - 1 - xp.argmax(p[..., ::-1] > 0, axis=-1)
    cols = xp.arange(p.shape[-1])
    cdf = xp.where(cols >= last[..., None], 1.0, cdf)
    return cdf.astype(np.float32)


def _search(lookup, u: jax.Array, v: int, lo: jax.Array | None = None, hi: jax.Array | None = None) -> jax.Array:
    """Smallest j in [lo, hi] with lookup(j) > u, elementwise; ``lookup(j)`` gives cumulative values shaped like u.

    By default lo = 0 and hi = V - 1 (``v`` = V); with bounds given per element (int32 arrays shaped like u: a
    segment of a CSR array, say), ``v`` is the longest segment, hi - lo + 1 <= v. A binary search of
    ceil(log2 v) gathers; requires lookup(hi) > u (the CDF ends at exactly 1, u < 1).
    """
    lo = jnp.zeros(u.shape, jnp.int32) if lo is None else jnp.broadcast_to(lo, u.shape).astype(jnp.int32)
    hi = jnp.full(u.shape, v - 1, jnp.int32) if hi is None else jnp.broadcast_to(hi, u.shape).astype(jnp.int32)
    for _ in range(max(1, math.ceil(math.log2(v)))):
        mid = (lo + hi) // 2
        above = lookup(mid) > u
        hi = jnp.where(above, mid, hi)
        lo = jnp.where(above, lo, mid + 1)
    return lo


def _sequences(cdf0: jax.Array, next_token, key: jax.Array, n: int, t: int) -> jax.Array:
    """n sequences of t + 1 tokens, (n, t + 1) int32: x_0 by inverse CDF over ``cdf0`` ((V,) float32, the law
    of x_0), then ``x_{s+1} = next_token(x_s, u)`` with one fresh uniform u in [0, 1) per token, by a
    ``lax.scan`` over the t steps with the n sequences vectorised."""
    u = jax.random.uniform(key, (t + 1, n), jnp.float32)     # one uniform per token, in [0, 1)
    x0 = _search(lambda j: cdf0[j], u[0], cdf0.shape[0])

    def step(x, u):
        nxt = next_token(x, u)
        return nxt, nxt

    _, rest = jax.lax.scan(step, x0, u[1:])
    return jnp.concatenate([x0[:, None], rest.T], axis=1).astype(jnp.int32)


@partial(jax.jit, static_argnums=(3, 4))
def _sample(cdf: jax.Array, cdf0: jax.Array, key: jax.Array, n: int, t: int) -> jax.Array:
    """n sequences of t + 1 tokens, (n, t + 1) int32, from the CDFs of pi (``cdf0``, (V,)) and of P (``cdf``, (V, V)).

    Jitted so that eager calls compile once per shape; inside an outer jit or vmap it is simply inlined.
    """
    v = cdf0.shape[0]
    # Search row x of the transition CDF in place (no (n, V) gather of whole rows).
    return _sequences(cdf0, lambda x, u: _search(lambda j: cdf[x, j], u, v), key, n, t)


class ChainTask(Task):
    """Next-token prediction on stationary sequences of a Markov chain: the data, test set, loss and floors that
    ``markov`` and ``graph-walk`` share (the module docstring's "The data"). A subclass builds its chain in
    ``__init__`` (setting ``self._test = None``) and provides :meth:`sample` (device), :meth:`log_prob` (host,
    float64), :meth:`entropy_rate`, ``vocab``, :meth:`model_io`, and ``SEED_KEY``: its key that seeds the chain
    and the test set (or its own :meth:`test_key`). :class:`DenseChain` provides all but ``model_io`` and the
    seed for a chain given as a dense matrix. Config keys ``context`` (tokens seen per sequence) and the TaskConfig ones are assumed."""
    FAMILIES = ("transformer",)
    LOSS_UNIT = "nats"
    SEED_KEY = "chain_seed"

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """n stationary sequences, (n, context + 1) int32; jit/vmap-safe."""
        raise NotImplementedError

    def log_prob(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """ln P(y | x) elementwise (host, float64) for token arrays of one shape."""
        raise NotImplementedError

    def entropy_rate(self) -> float:
        """sum_i pi_i H(P_i) in nats per token: the irreducible (Bayes-optimal) test loss."""
        raise NotImplementedError

    @property
    def context(self) -> int:
        """Tokens a model sees per sequence T (each sequence has T + 1 tokens)."""
        return int(self.cfg.context)

    @classmethod
    def tokens_per_example(cls, keys: TaskConfig) -> int:
        return keys.context

    def init_input(self, dtype) -> jax.Array:
        """An input for model init: int32 zeros (1, context); ``dtype`` is accepted for interface compatibility."""
        return jnp.zeros((1, self.context), jnp.int32)

    def train_batch(self, data_key: jax.Array, step: jax.Array, m: dict, dtype) -> tuple[jax.Array, jax.Array]:
        """The training batch of ``step``: (x, y), each (batch_size, context) int32, y = x shifted by one token."""
        seq = self.sample(jax.random.fold_in(data_key, step), self.cfg.batch_size)
        return seq[:, :-1], seq[:, 1:]

    def examples(self, keys: jax.Array, m: dict, dtype) -> tuple[jax.Array, jax.Array]:
        """One sequence per key (fixed training sets): (x, y), each (B, context) int32."""
        seq = jax.vmap(lambda k: self.sample(k, 1)[0])(keys)
        return seq[:, :-1], seq[:, 1:]

    def test_key(self) -> jax.Array:
        """The key of the fixed test set: ``fold_in(key(seed), TEST_FOLD)``, seed the value of the task's
        ``SEED_KEY`` (markov's chain_seed, graph-walk's graph_seed), the same for every member."""
        return jax.random.fold_in(jax.random.key(getattr(self.cfg, self.SEED_KEY)), TEST_FOLD)

    def test_set(self, dtype) -> tuple[jax.Array, jax.Array]:
        """The fixed test sequences: (x, y), each (test_size, context) int32, from :meth:`test_key`.

        Drawn once (eagerly, even when called while tracing) and kept on the host; later calls reuse them.
        """
        if self._test is None:
            with jax.ensure_compile_time_eval():
                seq = np.asarray(self.sample(self.test_key(), self.cfg.test_size))
            self._test = seq
        seq = jnp.asarray(self._test)
        return seq[:, :-1], seq[:, 1:]

    def test_bayes_loss(self) -> float:
        """The true chain's loss on the fixed test set, in nats per token (float64): the mean over every
        (sequence, position) of ``test_set`` of -ln P[x_t, x_{t+1}] (:meth:`log_prob`), each position weighted
        equally as ``loss`` (and the engine's equal-sized test chunks) weight them.

        This is the reference for the excess of the test loss the engine reports (a trained model gets
        below it only by rounding, or by chance when its excess is below the test set's sampling noise);
        it differs from ``entropy_rate()`` by the test set's sampling offset. Sampled transitions always
        have P > 0, so it is finite.
        """
        x, y = (np.asarray(a) for a in self.test_set(jnp.float32))
        return float(-np.mean(self.log_prob(x, y)))

    def floors(self) -> dict[str, float]:
        return {"irreducible_loss": self.entropy_rate(), "test_bayes_loss": self.test_bayes_loss()}

    def losses(self, outputs: jax.Array, y: jax.Array, m: dict) -> jax.Array:
        """Cross-entropy in nats per sequence, the mean over its context positions; ``outputs`` (B, T, V) logits."""
        return cross_entropy(outputs, y)


class DenseChain(ChainTask):
    """A :class:`ChainTask` whose chain is a dense V x V transition matrix on the host: a subclass builds P and
    its stationary distribution pi (float64) and hands them to :meth:`set_chain`, which derives the entropy
    rate, ln P and the float32 CDFs of the device sampler (``markov`` draws P at random; ``text``'s bigram
    source counts it from a corpus)."""

    def set_chain(self, p: np.ndarray, pi: np.ndarray) -> None:
        """Use the chain P ((V, V), rows summing to 1) with stationary distribution pi ((V,), pi P = pi)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            row_entropy = -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
        self._p, self._pi = p, pi
        self._entropy_rate = float(np.dot(pi, row_entropy))
        self._cdf, self._cdf0 = _cdf_rows(p), _cdf_rows(pi)
        self._test = None

    @property
    def vocab(self) -> int:
        """Number of tokens V."""
        return self._p.shape[0]

    def transition_matrix(self) -> np.ndarray:
        """P, (V, V) float64: P[i, j] = Pr(x_{t+1} = j | x_t = i); rows sum to 1 (a copy)."""
        return self._p.copy()

    def stationary(self) -> np.ndarray:
        """pi, (V,) float64: the stationary distribution (pi P = pi), also the law of every x_t (a copy)."""
        return self._pi.copy()

    def entropy_rate(self) -> float:
        """sum_i pi_i H(P_i) in nats per token: the irreducible (Bayes-optimal) test loss."""
        return self._entropy_rate

    def log_prob(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """ln P[x, y] elementwise (host, float64; -inf where P = 0) for token arrays of one shape."""
        with np.errstate(divide="ignore"):
            return np.log(self._p[x, y])

    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """n stationary sequences, (n, context + 1) int32: x_0 ~ pi, x_{t+1} ~ P[x_t]; jit/vmap-safe."""
        return _sample(jnp.asarray(self._cdf), jnp.asarray(self._cdf0), key, n, self.context)


@dataclass
class Keys(TaskConfig):
    """Config keys of ``markov`` (batch_size and test_size count sequences)."""
    vocab: int = 32                  # tokens V
    context: int = 64                # tokens the model sees per sequence (each sequence has context + 1 tokens)
    chain_seed: int = 0              # seed of the transition matrix (the same chain for every member)
    sparsity: float = 0.0            # share of zero entries in each row of the transition matrix, in [0, 1)
    temperature: float = 1.0         # rows are softmax(N(0, 1) / temperature): small = near-deterministic


class Markov(DenseChain):
    """Next-token prediction on sequences of a random Markov chain over V tokens (see the module docstring)."""
    Keys = Keys
    MINIMUM = {"task.vocab": (2, True), "task.context": (1, True), "task.chain_seed": (0, True),
               "task.sparsity": (0, True), "task.temperature": (0, False)}
    MAXIMUM = {"task.vocab": 4096, "task.context": 2**16}
    BELOW = {"task.sparsity": 1.0}
    PREDICTIONS = "probabilities"   # next-token distributions (test_size, context, vocab)

    def __init__(self, cfg: Keys):
        super().__init__(cfg)
        c = self.cfg
        v = int(c.vocab)
        rng = np.random.default_rng(c.chain_seed)
        k = min(v, max(1, int(round((1.0 - c.sparsity) * v))))
        # One cycle through all tokens: sigma(order[i]) = order[i + 1].
        order = rng.permutation(v)
        sigma = np.empty(v, np.int64)
        sigma[order] = np.roll(order, -1)
        # Kept columns: the cycle edge first (score -1), then the k - 1 smallest random scores.
        scores = rng.random((v, v))
        scores[np.arange(v), sigma] = -1.0
        kept = np.argpartition(scores, k - 1, axis=1)[:, :k] if k < v else np.tile(np.arange(v), (v, 1))
        z = rng.standard_normal((v, k)) / c.temperature
        w = np.exp(z - z.max(axis=1, keepdims=True))
        w = np.maximum(w / w.sum(axis=1, keepdims=True), np.finfo(np.float64).tiny)
        w = w / w.sum(axis=1, keepdims=True)
        p = np.zeros((v, v))
        p[np.arange(v)[:, None], kept] = w
        # Stationary distribution: [(P^T - I); 1^T] pi = [0; 1].
        a = np.vstack([p.T - np.eye(v), np.ones((1, v))])
        b = np.zeros(v + 1)
        b[-1] = 1.0
        pi = np.linalg.lstsq(a, b, rcond=None)[0]
        pi = np.clip(pi, 0.0, None)
        self._k = k
        self.set_chain(p, pi / pi.sum())

    @property
    def kept_per_row(self) -> int:
        """Nonzero entries per row of the transition matrix, k = max(1, round((1 - sparsity) * V))."""
        return self._k

    @classmethod
    def model_io(cls, keys: TaskConfig) -> dict[str, int]:
        return {"vocab": keys.vocab, "context": keys.context}
