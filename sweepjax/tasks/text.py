"""Task ``text``: next-token prediction on a real text corpus, or on a source made from it (issue 15).

The corpus is the docstrings of Python's standard library, byte-level tokens (vocabulary 256), split into
train and test documents: :mod:`sweepjax.corpus`. Results carry which corpus it was (its sha256, bytes,
documents, split sizes, Python version: :meth:`Text.info`, attributes of the results). ``task.source``
(structural: one program per value) picks what the sequences are; every source gives sequences of
``context + 1`` tokens, models see ``x = seq[:, :-1]`` and predict ``y = seq[:, 1:]`` (both (batch, context)
int32), and the loss is the mean cross-entropy in nats over the ``context`` positions, as for ``markov``.

``corpus``: the text itself; floors unknown (fitted)
    The train split is cut into ``n = floor(len(train) / (context + 1))`` non-overlapping windows of
    ``context + 1`` bytes (window k = bytes k(context + 1) .. (k + 1)(context + 1) - 1; the tail is dropped).
    One epoch, no window reused: step s of a member reads windows ``permute(key, s B + b, n)``, b = 0..B-1
    (B = ``task.batch_size``; :func:`sweepjax.tasks.dataset.permute`, keyed by ``fold_in(data key,
    WINDOW_FOLD)``), so a member that trains S steps sees S B distinct windows, and a sweep over
    ``train.steps`` is a sweep over one-epoch data budgets. A config whose longest member (with fresh data,
    ``task.dataset_size = 0``) needs more windows than the split holds is refused. ``examples`` (fixed
    training sets of ``task.dataset_size`` samples, and the validation sample of saved predictions) maps each
    key to a uniformly random train window. The test set: ``test_size`` of the test split's non-overlapping
    windows, chosen by ``numpy.random.default_rng(0).permutation``, the same for every member; test windows
    hold only test documents. No floor is known: ``floors()`` is empty.

``bigram``: the corpus's bigram chain, a Markov source with an exact entropy rate
    The train split read as a cyclic byte sequence s_0 .. s_{N-1} (s_N = s_0): C[i, j] = #{t : s_t = i,
    s_{t+1} = j}. Cyclic, each row sum equals its column sum, the count n_i of byte i, so with
    ``P = C / n_i`` (row-normalised) ``pi_i = n_i / N`` is exactly stationary (sum_i pi_i P[i, j] =
    sum_i C[i, j] / N = pi_j), and the entropy rate ``H = sum_i pi_i H(P_i) = -(1/N) sum_ij C_ij ln(C_ij / n_i)``
    is the ``irreducible_loss``. Bytes that never occur (pi_i = 0, never reached) get a self-loop row.
    Sequences, the fixed test set (``test_size`` sequences from ``fold_in(key(0), 2**31 - 1)``) and its
    ``test_bayes_loss`` are :class:`sweepjax.tasks.markov.ChainTask`'s; sampling is markov's inverse-CDF
    sampler (:class:`sweepjax.tasks.markov.DenseChain`).

Adding a source is one class in :data:`SOURCES` (a :class:`sweepjax.tasks.base.Task` taking the task's
config, with the data methods: ``train_batch``, ``examples``, ``test_set``, ``floors``, ``info``, and a
classmethod ``check(cfg)`` for its limits), or a prefix rule in :func:`source_class`.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from sweepjax import corpus
from sweepjax.config import Config, ConfigError, TaskConfig, axis
from sweepjax.losses import cross_entropy
from sweepjax.tasks.base import Task
from sweepjax.tasks.dataset import permute
from sweepjax.tasks.markov import TEST_FOLD, DenseChain

WINDOW_FOLD = 2**31 - 5    # fold_in index of the window permutation's key (beyond any step and dataset.py's folds)
TEST_SEED = 0              # seed of the test set (the corpus's test windows; the bigram chain's test sequences)


def windows(data: bytes, length: int) -> np.ndarray:
    """``data`` cut into its ``len(data) // length`` non-overlapping windows of ``length`` bytes, in order:
    (n, length) uint8 (the tail that fills no window is dropped)."""
    n = len(data) // length
    return np.frombuffer(data, np.uint8)[: n * length].reshape(n, length)


def window_counts(context: int) -> tuple[int, int]:
    """(train, test) windows of ``context + 1`` bytes that the corpus's split holds."""
    train, test = corpus.split()
    return len(train) // (context + 1), len(test) // (context + 1)


def bigram_chain(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """(P, pi) of the bigram chain of ``data`` read cyclically (module docstring): P (256, 256), pi (256,)
    float64, pi P = pi up to rounding."""
    s = corpus.encode(data).astype(np.int64)
    counts = np.bincount(s * corpus.VOCAB + np.roll(s, -1), minlength=corpus.VOCAB**2)
    c = counts.reshape(corpus.VOCAB, corpus.VOCAB).astype(np.float64)
    n = c.sum(axis=1)
    seen = n > 0
    p = np.where(seen[:, None], c / np.where(seen, n, 1.0)[:, None], np.eye(corpus.VOCAB))
    return p, n / n.sum()


# ---- sources ---------------------------------------------------------------------------------------

class CorpusSource(Task):
    """``source = "corpus"``: windows of the text itself (module docstring)."""

    def __init__(self, cfg: TaskConfig):
        super().__init__(cfg)
        train, test = corpus.split()
        length = int(cfg.context) + 1
        self._train = windows(train, length)
        held = windows(test, length)
        self._test_windows = held[np.random.default_rng(TEST_SEED).permutation(len(held))[: cfg.test_size]]

    @classmethod
    def check(cls, cfg: Config) -> None:
        """Refuse a sweep whose longest fresh-data member needs more train windows (one epoch) than the split
        holds, or a test set larger than the test split's windows."""
        steps = max(axis(cfg, "train.steps"))
        fresh = 0 in axis(cfg, "task.dataset_size")
        for context, batch, test_size in itertools.product(
                *(axis(cfg, f"task.{k}") for k in ("context", "batch_size", "test_size"))):
            n_train, n_test = window_counts(context)
            if fresh and steps * batch > n_train:
                raise ConfigError(
                    f"train.steps = {steps} with task.batch_size = {batch} and task.source = 'corpus': one epoch "
                    f"of the corpus's train split holds {n_train} windows of task.context + 1 = {context + 1} "
                    f"bytes, the longest member would read {steps * batch}; use at most "
                    f"{n_train // batch} steps (or a smaller batch or context)")
            if test_size > n_test:
                raise ConfigError(
                    f"task.test_size = {test_size} with task.source = 'corpus' and task.context = {context}: the "
                    f"test split holds {n_test} windows of {context + 1} bytes; use at most {n_test}")

    @property
    def n_windows(self) -> int:
        """Windows of the train split (one epoch)."""
        return len(self._train)

    def window_index(self, data_key: jax.Array, step: jax.Array) -> jax.Array:
        """The train windows of ``step``, (B,) int32: ``permute(fold_in(data_key, WINDOW_FOLD), step B + b, n)``.
        Positions past the epoch (only at a member's final, evaluation-only step) wrap around."""
        b = self.cfg.batch_size
        position = jnp.mod(step * b + jnp.arange(b, dtype=jnp.int32), self.n_windows)
        return permute(jax.random.fold_in(data_key, WINDOW_FOLD), position, self.n_windows)

    def _pairs(self, seq: jax.Array) -> tuple[jax.Array, jax.Array]:
        seq = seq.astype(jnp.int32)
        return seq[:, :-1], seq[:, 1:]

    def train_batch(self, data_key: jax.Array, step: jax.Array, m: dict, dtype) -> tuple[jax.Array, jax.Array]:
        return self._pairs(jnp.asarray(self._train)[self.window_index(data_key, step)])

    def examples(self, keys: jax.Array, m: dict, dtype) -> tuple[jax.Array, jax.Array]:
        """One uniformly random train window per key."""
        index = jax.vmap(lambda k: jax.random.randint(k, (), 0, self.n_windows))(keys)
        return self._pairs(jnp.asarray(self._train)[index])

    def test_set(self, dtype) -> tuple[jax.Array, jax.Array]:
        return self._pairs(jnp.asarray(self._test_windows))

    def info(self) -> dict[str, str | int | float]:
        """:func:`sweepjax.corpus.corpus_info`, and the windows of ``context + 1`` bytes each split holds."""
        n_test = window_counts(int(self.cfg.context))[1]
        return {**corpus.corpus_info(), "corpus_train_windows": self.n_windows, "corpus_test_windows": n_test}


class BigramSource(DenseChain):
    """``source = "bigram"``: the bigram chain of the corpus's train split (module docstring)."""

    def __init__(self, cfg: TaskConfig):
        super().__init__(cfg)
        self.set_chain(*bigram_chain(corpus.split()[0]))

    def test_key(self) -> jax.Array:
        return jax.random.fold_in(jax.random.key(TEST_SEED), TEST_FOLD)

    def info(self) -> dict[str, str | int | float]:
        return corpus.corpus_info()


SOURCES: dict[str, type[Task]] = {"corpus": CorpusSource, "bigram": BigramSource}


def source_class(source: str) -> type[Task]:
    """The class of ``task.source`` (ConfigError naming the valid ones)."""
    if source in SOURCES:
        return SOURCES[source]
    raise ConfigError(f"task.source = {source!r}: allowed: {', '.join(map(repr, SOURCES))}")


# ---- the task --------------------------------------------------------------------------------------

@dataclass
class Keys(TaskConfig):
    """Config keys of ``text`` (batch_size and test_size count sequences)."""
    batch_size: int = 16             # sequences per step: one epoch of the corpus is ~23k windows at context 64
    source: str = "corpus"           # "corpus" (the text, held-out documents) or "bigram" (its bigram chain)
    context: int = 64                # tokens the model sees per sequence (each sequence has context + 1 tokens)


class Text(Task):
    """Next-token prediction on the stdlib-docstring corpus or a source made from it (module docstring): the
    config rules, shapes and loss; the data is its source's (``self.source``)."""
    Keys = Keys
    FAMILIES = ("transformer",)
    LOSS_UNIT = "nats"
    MINIMUM = {"task.context": (1, True)}
    MAXIMUM = {"task.context": 2**16}
    PREDICTIONS = "probabilities"   # next-token distributions (test_size, context, 256)
    STUDY = "sweepjax.analysis.language"

    def __init__(self, cfg: Keys):
        super().__init__(cfg)
        self.source = source_class(cfg.source)(cfg)

    @classmethod
    def check(cls, cfg: Config) -> None:
        for source in dict.fromkeys(source_class(s) for s in axis(cfg, "task.source")):
            source.check(cfg)

    @classmethod
    def model_io(cls, keys: Keys) -> dict[str, int]:
        return {"vocab": corpus.VOCAB, "context": keys.context}

    @classmethod
    def tokens_per_example(cls, keys: Keys) -> int:
        return keys.context

    def init_input(self, dtype) -> jax.Array:
        """An input for model init: int32 zeros (1, context)."""
        return jnp.zeros((1, int(self.cfg.context)), jnp.int32)

    def train_batch(self, data_key: jax.Array, step: jax.Array, m: dict, dtype) -> tuple[jax.Array, jax.Array]:
        return self.source.train_batch(data_key, step, m, dtype)

    def examples(self, keys: jax.Array, m: dict, dtype) -> tuple[jax.Array, jax.Array]:
        return self.source.examples(keys, m, dtype)

    def test_set(self, dtype) -> tuple[jax.Array, jax.Array]:
        return self.source.test_set(dtype)

    def floors(self) -> dict[str, float]:
        return self.source.floors()

    def info(self) -> dict[str, str | int | float]:
        return self.source.info()

    def losses(self, outputs: jax.Array, y: jax.Array, m: dict) -> jax.Array:
        """Cross-entropy in nats per sequence, the mean over its context positions; ``outputs`` (B, T, 256) logits."""
        return cross_entropy(outputs, y)
