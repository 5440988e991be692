"""Task ``text``: next-token prediction on a real text corpus, or on a source made from it (issue 15).

The corpus is the docstrings of Python's standard library, byte-level tokens (vocabulary 256), split into
train and test documents: :mod:`sweepjax.corpus`. Results carry which corpus it was (its sha256, bytes,
documents, split sizes, Python version: :meth:`Text.info`, attributes of the results). ``task.source``
(structural: one program per value) picks what the sequences are; every source gives sequences of
``context + 1`` tokens, models see ``x = seq[:, :-1]`` and predict ``y = seq[:, 1:]`` (both (batch, context)
int32), and the loss is the mean cross-entropy in nats over the ``context`` positions, as for ``markov``.

``corpus``: the text itself; floors unknown (fitted)
    The train split is cut into ``n = floor(len(train) / (context + 1))`` non-overlapping windows of
    ``context + 1`` bytes (window k = bytes k(context + 1) .. (k + 1)(context + 1) - 1; the tail is dropped),
    read for one epoch (:class:`OneEpoch`, below). The test set: ``test_size`` of the test split's
    non-overlapping windows, chosen by ``numpy.random.default_rng(0).permutation``, the same for every member;
    test windows hold only test documents. No floor is known: ``floors()`` is empty.

One epoch of a fixed array of train sequences (:class:`OneEpoch`: ``corpus``'s windows, ``sampled``'s pool)
    No sequence reused: step s of a member reads sequences ``permute(key, s B + b, n)``, b = 0..B-1 (n the
    sequences held, B = ``task.batch_size``; :func:`sweepjax.tasks.dataset.permute`, keyed by ``fold_in(data
    key, WINDOW_FOLD)``), so a member that trains S steps sees S B distinct sequences, and a sweep over
    ``train.steps`` is a sweep over one-epoch data budgets. A config whose longest member (with fresh data,
    ``task.dataset_size = 0``) needs more sequences than there are is refused, and so is a fixed training set
    (``task.dataset_size``) larger than them. ``examples`` (fixed training sets) maps each key to a uniformly
    random train sequence. There is no validation sample independent of training, so ``eval.save_predictions``
    (whose ensembles choose members on one) is refused for this task.

``bigram``: the corpus's bigram chain, a Markov source with an exact entropy rate
    The train split read as a cyclic byte sequence s_0 .. s_{N-1} (s_N = s_0): C[i, j] = #{t : s_t = i,
    s_{t+1} = j}. Cyclic, each row sum equals its column sum, the count n_i of byte i, so with
    ``P = C / n_i`` (row-normalised) ``pi_i = n_i / N`` is exactly stationary (sum_i pi_i P[i, j] =
    sum_i C[i, j] / N = pi_j), and the entropy rate ``H = sum_i pi_i H(P_i) = -(1/N) sum_ij C_ij ln(C_ij / n_i)``
    is the ``irreducible_loss``. Bytes that never occur (pi_i = 0, never reached) get a self-loop row.
    Sequences, the fixed test set (``test_size`` sequences from ``fold_in(key(0), 2**31 - 1)``) and its
    ``test_bayes_loss`` are :class:`sweepjax.tasks.markov.ChainTask`'s; sampling is markov's inverse-CDF
    sampler (:class:`sweepjax.tasks.markov.DenseChain`).

``sampled:<selector>``: sequences sampled from a transformer trained on the corpus; floors its own (issue 15's TnL)
    ``task.generator`` is the results directory (relative to the working directory) of a sweep of the ``text``
    task with source ``corpus``, run with ``eval.save_params = true`` (``configs/language_generators.toml``
    trains the 1-, 2- and 4-layer ones); ``<selector>`` picks its member as :func:`sweepjax.members.parse_member`
    reads it (``sampled:depth=2``, ``sampled:depth=4,width=64``; empty for a one-member sweep). Its context must
    be at least ``task.context``. Sequences are :func:`sweepjax.generate.sample` at temperature 1, x_0 drawn
    from the byte frequencies of the corpus's train split (the law of x_0 in the generator's training
    windows). The train data is a pool of ``task.pool_size`` sequences sampled with the fixed key
    ``key(POOL_SEED)``, read for one epoch as above: every member and every data seed reads the same pool
    (a data seed only changes the order), and ``task.pool_size`` must cover the longest fresh-data member's
    ``train.steps x task.batch_size`` sequences. The test set: ``test_size`` sequences sampled with
    ``fold_in(key(TEST_SEED), TEST_FOLD)``. Floors: ``irreducible_loss`` is the mean, over the pool's
    sequences and positions, of the entropy of the distribution each token was drawn from (the generator's own
    mean predictive entropy, an unbiased estimate of the source's entropy rate); ``test_bayes_loss`` is the
    mean of -ln p(token) over the test set (the generator's own loss on it). Pool and test set are sampled on
    the device when first needed (a task built only for its shapes samples nothing), once per process for each
    (generator, member, size, context), and kept on the host.

Adding a source is one class in :data:`SOURCES` (a :class:`sweepjax.tasks.base.Task` taking the task's
config, with the data methods: ``train_batch``, ``examples``, ``test_set``, ``floors``, ``info``, and a
classmethod ``check(cfg)`` for its limits), or a prefix rule in :func:`source_class`.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sweepjax import corpus
from sweepjax.config import Config, ConfigError, Prefix, TaskConfig, axis
from sweepjax.files import RESULTS_FILE
from sweepjax.generate import generator_io, sample
from sweepjax.losses import cross_entropy
from sweepjax.members import Member, member_model, params_sha256, parse_member
from sweepjax.tasks.base import Task
from sweepjax.tasks.dataset import permute
from sweepjax.tasks.markov import TEST_FOLD, DenseChain

WINDOW_FOLD = 2**31 - 5    # fold_in index of the window permutation's key (beyond any step and dataset.py's folds)
TEST_SEED = 0              # seed of the test set (the corpus's test windows; the bigram chain's and the sampled
                           # source's test sequences)
POOL_SEED = 1              # seed of the sampled source's pool of train sequences
SAMPLED = "sampled:"       # prefix of the sampled sources: "sampled:<member selector>"
SAMPLE_CHUNK = 2048        # sequences per compiled sampling call (bounds the device memory of the logits)


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

def refuse_past_epoch(cfg: Config, source: str, batch: int, n: int, held: str, fix: str) -> None:
    """Refuse a sweep whose longest fresh-data member (``task.dataset_size = 0``) reads more than the ``n``
    train sequences one epoch holds (``held``: what they are, ``fix``: what else helps), at ``batch``."""
    steps = max(axis(cfg, "train.steps"))
    if 0 in axis(cfg, "task.dataset_size") and steps * batch > n:
        raise ConfigError(
            f"train.steps = {steps} with task.batch_size = {batch} and task.source = {source!r}: one epoch of "
            f"{held}, the longest member would read {steps * batch}; use at most {n // batch} steps ({fix})")
    if max(axis(cfg, "task.dataset_size")) > n:   # a fixed set drawn from fewer sequences would repeat them
        raise ConfigError(
            f"task.dataset_size = {max(axis(cfg, 'task.dataset_size'))} with task.source = {source!r}: {held}; "
            f"a fixed training set of distinct sequences holds at most {n}")


class OneEpoch(Task):
    """A source whose train data is a fixed array of sequences, :meth:`train_sequences`, read for one epoch
    without replacement (module docstring)."""

    def train_sequences(self) -> np.ndarray:
        """The train sequences, (n, context + 1) uint8, host."""
        raise NotImplementedError

    @property
    def n_train(self) -> int:
        """Train sequences (one epoch)."""
        return len(self.train_sequences())

    def train_index(self, data_key: jax.Array, step: jax.Array) -> jax.Array:
        """The train sequences of ``step``, (B,) int32: ``permute(fold_in(data_key, WINDOW_FOLD), step B + b, n)``.
        Positions past the epoch (only at a member's final, evaluation-only step) wrap around."""
        b, n = self.cfg.batch_size, self.n_train
        position = jnp.mod(step * b + jnp.arange(b, dtype=jnp.int32), n)
        return permute(jax.random.fold_in(data_key, WINDOW_FOLD), position, n)

    @staticmethod
    def pairs(seq: jax.Array | np.ndarray) -> tuple[jax.Array, jax.Array]:
        """(x, y) = (seq[:, :-1], seq[:, 1:]) as int32."""
        seq = jnp.asarray(seq).astype(jnp.int32)
        return seq[:, :-1], seq[:, 1:]

    def train_batch(self, data_key: jax.Array, step: jax.Array, m: dict, dtype) -> tuple[jax.Array, jax.Array]:
        return self.pairs(jnp.asarray(self.train_sequences())[self.train_index(data_key, step)])

    def examples(self, keys: jax.Array, m: dict, dtype) -> tuple[jax.Array, jax.Array]:
        """One uniformly random train sequence per key."""
        index = jax.vmap(lambda k: jax.random.randint(k, (), 0, self.n_train))(keys)
        return self.pairs(jnp.asarray(self.train_sequences())[index])


class CorpusSource(OneEpoch):
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
        for context, batch, test_size in itertools.product(
                *(axis(cfg, f"task.{k}") for k in ("context", "batch_size", "test_size"))):
            n_train, n_test = window_counts(context)
            refuse_past_epoch(cfg, "corpus", batch, n_train, f"the corpus's train split holds {n_train} windows of "
                              f"task.context + 1 = {context + 1} bytes", "or a smaller batch or context")
            if test_size > n_test:
                raise ConfigError(
                    f"task.test_size = {test_size} with task.source = 'corpus' and task.context = {context}: the "
                    f"test split holds {n_test} windows of {context + 1} bytes; use at most {n_test}")

    def train_sequences(self) -> np.ndarray:
        return self._train

    def test_set(self, dtype) -> tuple[jax.Array, jax.Array]:
        return self.pairs(self._test_windows)

    def info(self) -> dict[str, str | int | float]:
        """:func:`sweepjax.corpus.corpus_info`, and the windows of ``context + 1`` bytes each split holds."""
        n_test = window_counts(int(self.cfg.context))[1]
        return {**corpus.corpus_info(), "corpus_train_windows": self.n_train, "corpus_test_windows": n_test}


class BigramSource(DenseChain):
    """``source = "bigram"``: the bigram chain of the corpus's train split (module docstring)."""

    def __init__(self, cfg: TaskConfig):
        super().__init__(cfg)
        self.set_chain(*bigram_chain(corpus.split()[0]))

    def test_key(self) -> jax.Array:
        return sample_key("test")

    def info(self) -> dict[str, str | int | float]:
        return corpus.corpus_info()


@dataclass(frozen=True, eq=False)   # hashed by identity (one object per cached load): a key of sampled_set's cache
class Generator:
    """A generator of the sampled source: one member of a saved ``text`` sweep (:func:`load_generator`)."""
    results: str                   # its results directory, absolute
    selector: str                  # its member selector, as written in the source
    member: Member
    test_loss: float               # its final test loss on the corpus (nats/byte; NaN if not recorded)

    @property
    def context(self) -> int:
        """The context it was trained on: it samples at most that many positions."""
        return generator_io(self.member)["context"]

    @functools.cached_property
    def params_sha256(self) -> str:
        """Its parameters' hash (:func:`sweepjax.members.params_sha256`): a resume refuses another generator."""
        return params_sha256(self.member.params)


def load_generator(results: str, selector: str) -> Generator:
    """The generator ``selector`` of the results directory ``results`` (ConfigError, one line, when it is
    missing, unsaved, not a single member, or not a transformer trained on the corpus); cached per process by
    (directory, its results file's modification time, selector)."""
    if not results:
        raise ConfigError(f"task.source = {SAMPLED + selector!r} needs task.generator: the results directory of a "
                          f"'text' sweep (source 'corpus') run with eval.save_params = true")
    path = Path(results).expanduser().resolve()
    file = path / RESULTS_FILE
    if not file.is_file():
        raise ConfigError(f"task.generator = {results!r}: no results at {str(file)!r}; train the generators "
                          f"first (configs/language_generators.toml)")
    return _load_generator(str(path), file.stat().st_mtime_ns, selector)


@functools.lru_cache(maxsize=8)
def _load_generator(path: str, stamp: int, selector: str) -> Generator:
    """:func:`load_generator` of a resolved directory (``stamp``: its results file's mtime, for the cache)."""
    from sweepjax import results as store
    ds = store.load(path)
    try:
        coords = parse_member(selector)
    except ValueError as e:
        raise ConfigError(f"task.source = {SAMPLED + selector!r}: {e}") from None
    try:
        member = member_model(ds, **coords)
    except ValueError as e:
        raise ConfigError(f"task.source = {SAMPLED + selector!r} with task.generator = {path!r}: {e}") from None
    task = member.config.task
    if task.name != "text" or task.source != "corpus" or member.config.model.family != "transformer":
        raise ConfigError(f"task.generator = {path!r}: member {member.coords} is a {member.config.model.family} "
                          f"trained on task {task.name!r}" + (f" with source {task.source!r}" if task.name == "text"
                          else "") + "; a sampled source needs a transformer trained on task 'text', source 'corpus'")
    loss = ds["final_test_loss"].sel(member.coords) if "final_test_loss" in ds else None
    return Generator(path, selector, member, float(loss) if loss is not None and loss.size == 1 else float("nan"))


@functools.cache
def unigram() -> np.ndarray:
    """Byte counts of the corpus's train split, (256,) float64: the start distribution of sampled sequences."""
    return np.bincount(corpus.encode(corpus.split()[0]), minlength=corpus.VOCAB).astype(np.float64)


class Sampled(NamedTuple):
    """Sequences sampled from a generator (:func:`sampled_set`)."""
    tokens: np.ndarray             # (n, context + 1) uint8
    entropy: float                 # mean entropy (nats) of the distributions the tokens were drawn from
    surprisal: float               # mean -ln p of the drawn tokens (nats)


def sample_key(which: str) -> jax.Array:
    """The fixed key of the sampled source's ``"pool"`` (``key(POOL_SEED)``) or of the sampled and bigram
    sources' ``"test"`` sets (``fold_in(key(TEST_SEED), TEST_FOLD)``)."""
    if which == "pool":
        return jax.random.key(POOL_SEED)
    return jax.random.fold_in(jax.random.key(TEST_SEED), TEST_FOLD)


@functools.lru_cache(maxsize=8)
def sampled_set(gen: Generator, which: str, n: int, context: int) -> Sampled:
    """``n`` sequences of ``context + 1`` bytes sampled from ``gen`` at temperature 1 with the key
    :func:`sample_key` of ``which``, x_0 from :func:`unigram`; both means are over every sequence and position.
    Drawn eagerly (also when called while tracing) and cached per process."""
    with jax.ensure_compile_time_eval():
        tokens, entropy, log_prob = sample(gen.member, sample_key(which), n, context, 1.0, unigram(), SAMPLE_CHUNK)
        return Sampled(np.asarray(tokens, np.uint8), float(np.mean(np.asarray(entropy, np.float64))),
                       float(-np.mean(np.asarray(log_prob, np.float64))))


class SampledSource(OneEpoch):
    """``source = "sampled:<selector>"``: sequences sampled from a trained generator (module docstring)."""

    @functools.cached_property
    def generator(self) -> Generator:
        """The generator, loaded when data is first needed (rebuilding a member of a sampled-source sweep for
        its shapes alone, :func:`sweepjax.members.member_model`, does not need the generator's directory)."""
        return load_generator(self.cfg.generator, self.cfg.source[len(SAMPLED):])

    @classmethod
    def check(cls, cfg: Config) -> None:
        """Refuse a sampled source without a usable generator (see :func:`load_generator`), with a generator of
        a shorter context than ``task.context``, or with a pool smaller than the longest fresh-data member reads."""
        sources = [s for s in axis(cfg, "task.source") if s.startswith(SAMPLED)]
        for source, results, context in itertools.product(
                sources, axis(cfg, "task.generator"), axis(cfg, "task.context")):
            gen = load_generator(results, source[len(SAMPLED):])
            if context > gen.context:
                raise ConfigError(
                    f"task.context = {context} with task.source = {source!r}: the generator {gen.member.coords} of "
                    f"{results!r} was trained on context {gen.context} and samples at most {gen.context} positions; "
                    f"use task.context <= {gen.context} or a generator trained on a longer context")
        for source, pool, batch in itertools.product(sources, axis(cfg, "task.pool_size"), axis(cfg, "task.batch_size")):
            if pool < 1:
                raise ConfigError(
                    f"task.pool_size = {pool} with task.source = {source!r}: set the number of train sequences "
                    f"sampled from the generator (one epoch of the longest member reads train.steps x "
                    f"task.batch_size = {max(axis(cfg, 'train.steps')) * batch})")
            refuse_past_epoch(cfg, source, batch, pool, f"the generator's pool holds task.pool_size = {pool} "
                              f"sequences", f"or a task.pool_size of {max(axis(cfg, 'train.steps')) * batch}")

    def sampled(self, which: str) -> Sampled:
        """The ``"pool"`` (``task.pool_size`` sequences) or the ``"test"`` set (``task.test_size``)."""
        n = self.cfg.pool_size if which == "pool" else self.cfg.test_size
        return sampled_set(self.generator, which, n, int(self.cfg.context))

    def train_sequences(self) -> np.ndarray:
        return self.sampled("pool").tokens

    def test_set(self, dtype) -> tuple[jax.Array, jax.Array]:
        return self.pairs(self.sampled("test").tokens)

    def floors(self) -> dict[str, float]:
        """The pool's mean predictive entropy and the test set's mean -log_prob (module docstring)."""
        return {"irreducible_loss": self.sampled("pool").entropy, "test_bayes_loss": self.sampled("test").surprisal}

    def info(self) -> dict[str, str | int | float]:
        """The corpus's info and the generator's: results directory, member, depth, width, context, final test
        loss on the corpus (nats/byte), the sampling temperature, its parameters' sha256."""
        g = self.generator
        return {**corpus.corpus_info(), "generator_results": g.results, "generator_member": g.selector,
                "generator_depth": g.member.sizes["depth"], "generator_width": g.member.sizes["width"],
                "generator_context": g.context, "generator_test_loss": g.test_loss, "generator_temperature": 1.0,
                "generator_params_sha256": g.params_sha256}


SOURCES: dict[str, type[Task]] = {"corpus": CorpusSource, "bigram": BigramSource}


def source_class(source: str) -> type[Task]:
    """The class of ``task.source`` (ConfigError naming the valid ones)."""
    if source in SOURCES:
        return SOURCES[source]
    if source.startswith(SAMPLED):
        return SampledSource
    raise ConfigError(f"task.source = {source!r}: allowed: {', '.join(map(repr, SOURCES))}, "
                      f"'{SAMPLED}<member selector>'")


# ---- the task --------------------------------------------------------------------------------------

@dataclass
class Keys(TaskConfig):
    """Config keys of ``text`` (batch_size and test_size count sequences)."""
    batch_size: int = 16             # sequences per step: one epoch of the corpus is ~23k windows at context 64
    source: str = "corpus"           # "corpus" (the text, held-out documents), "bigram" (its bigram chain) or
                                     # "sampled:<member selector>" (sequences sampled from a trained generator)
    context: int = 64                # tokens the model sees per sequence (each sequence has context + 1 tokens)
    generator: str = ""              # sampled sources: results directory of the generators (saved params)
    pool_size: int = 0               # sampled sources: train sequences sampled (>= train.steps x batch_size)


class Text(Task):
    """Next-token prediction on the stdlib-docstring corpus or a source made from it (module docstring): the
    config rules, shapes and loss; the data is its source's (``self.source``)."""
    Keys = Keys
    FAMILIES = ("transformer",)
    LOSS_UNIT = "nats"
    MINIMUM = {"task.context": (1, True), "task.pool_size": (0, True)}
    APPLIES = {k: ({"task.source": Prefix(SAMPLED)},) for k in ("task.generator", "task.pool_size")}
    WHY = {k: "only a sampled source samples from a generator" for k in APPLIES}
    MAXIMUM = {"task.context": 2**16}
    # No saved predictions: ensembles pick members on a validation sample independent of training, and the
    # corpus and sampled sources have none (their examples are train sequences; a held-out validation split
    # is not built). eval.save_predictions is refused for this task.
    PREDICTIONS = None
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
