"""Task ``sparse-parity``: multitask sparse parity (Michaud et al. 2023, the quantization model).

There are ``n_tasks`` subtasks; subtask i is the parity of its own fixed k-subset of ``n_bits`` uniform
bits. The subsets are drawn on the host from ``numpy.random.default_rng(subsets_seed)`` (k distinct
bits each), the same for every member. An example is (x, y): task id t, bits b ~ U{0, 1}^n, input
x = [one_hot(t, n_tasks), b] (n_tasks + n floats), label y = sum(b[subset_t]) mod 2, two classes;
the loss is cross-entropy in BITS.

Task frequencies: t = i - 1 with probability p_i proportional to i^-zipf_exponent, i = 1 .. n_tasks
(normalised over the finite set; subtask 0 most frequent). ``zipf_exponent`` is the exponent ON i: the
paper's alpha = 0.4 is ``zipf_exponent = 1.4`` (alpha = zipf_exponent - 1; its predicted scaling
exponents are alpha_N = alpha and alpha_D = alpha_S = alpha / (alpha + 1)). It is a per-member
number: an exponent sweep is one program, and each member's data and test loss follow its own p.

Test set: ``test_size / n_tasks`` fixed examples of every subtask (in subtask order, bits from a key of
``subsets_seed`` alone), the same for every member. The test loss is the mean over subtasks of their
mean loss weighted by the member's exact frequencies p_i (the paper's test batch holds floor(p_i 1e6)
samples of subtask i; weighting equal-sized per-subtask sets by p_i is the same expectation without
the rounding), and ``subtask_loss`` (dims ``subtask``) records each subtask's mean test loss at every
evaluation. Labels are deterministic, so the loss floor is 0.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from sweepjax.config import Above, Config, ConfigError, TaskConfig
from sweepjax.losses import cross_entropy
from sweepjax.tasks.base import Task

TEST_FOLD = 2**31 - 1   # fold_in index of the test set's key (beyond every training step)


@dataclass
class Keys(TaskConfig):
    """Config keys of ``sparse-parity`` (batch_size, test_size and dataset_size count examples)."""
    n_tasks: int = 64                # subtasks
    n_bits: int = 32                 # uniform bits per example (the paper: 100)
    k: int = 3                       # bits per subtask's parity
    subsets_seed: int = 0            # seed of the subtasks' bit subsets (the same for every member)
    zipf_exponent: float = 1.4       # p_i ~ i^-zipf_exponent; the paper's alpha = zipf_exponent - 1 (per member)
    test_size: int = 25600           # test examples, test_size / n_tasks of each subtask


def frequencies(n_tasks: int, exponent: jax.Array | float, dtype=jnp.float32) -> jax.Array:
    """p_i proportional to i^-exponent, i = 1 .. n_tasks, normalised (``exponent`` may be traced); in ``dtype``
    (float32 for sampling; the test loss's weights take the run's precision, float64 in a float64 run)."""
    w = jnp.arange(1, n_tasks + 1, dtype=dtype) ** -jnp.asarray(exponent, dtype)
    return w / jnp.sum(w)


class SparseParity(Task):
    """Multitask sparse parity with Zipf-distributed subtasks (see the module docstring)."""
    Keys = Keys
    FAMILIES = ("mlp",)
    MEMBER_KEYS = ("task.zipf_exponent",)
    PREDICTIONS = "probabilities"
    MINIMUM = {"task.n_tasks": (1, True), "task.n_bits": (1, True), "task.k": (1, True),
               "task.subsets_seed": (0, True), "task.zipf_exponent": (0, True)}
    MAXIMUM = {"task.n_tasks": 10**5, "task.n_bits": 10**4}
    APPLIES = {"task.zipf_exponent": ({"task.n_tasks": Above(1)},)}
    WHY = {"task.zipf_exponent": "with one subtask every example is of subtask 0"}
    LOSS_UNIT = "bits"
    RECORDS = {"subtask_loss": ("subtask",)}
    STUDY = "sweepjax.analysis.quanta"

    def __init__(self, cfg: Keys):
        super().__init__(cfg)
        rng = np.random.default_rng(cfg.subsets_seed)
        subsets: dict[tuple, None] = {}      # distinct subsets, in the order drawn (redraw a repeat)
        while len(subsets) < cfg.n_tasks:
            subsets.setdefault(tuple(sorted(rng.choice(cfg.n_bits, cfg.k, replace=False).tolist())))
        self._subsets = np.array(list(subsets), np.int64)

    @classmethod
    def check(cls, cfg: Config) -> None:
        c = cfg.task
        if c.k > c.n_bits:
            raise ConfigError(f"task.k = {c.k} > task.n_bits = {c.n_bits}: a subset has k distinct bits")
        if c.n_tasks > math.comb(c.n_bits, c.k):
            raise ConfigError(f"task.n_tasks = {c.n_tasks} > C(n_bits, k) = {math.comb(c.n_bits, c.k)}: every subtask "
                              f"needs its own subset of k bits")
        if c.test_size % c.n_tasks:
            raise ConfigError(f"task.test_size = {c.test_size} with task.n_tasks = {c.n_tasks}: the test set "
                              f"holds test_size / n_tasks examples of each subtask; use a multiple of n_tasks")

    @classmethod
    def model_io(cls, keys: Keys) -> dict[str, int]:
        return {"in_dim": keys.n_tasks + keys.n_bits, "out_dim": 2}

    @property
    def subsets(self) -> np.ndarray:
        """The subtasks' bit subsets, (n_tasks, k) ints (a copy)."""
        return self._subsets.copy()

    def init_input(self, dtype) -> jax.Array:
        return jnp.zeros((1, self.cfg.n_tasks + self.cfg.n_bits), dtype)

    def _encode(self, task: jax.Array, bits: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
        """(x, y) of task ids (B,) and bits (B, n) in {0, 1}."""
        subsets = jnp.asarray(self._subsets)
        label = jnp.sum(jnp.take_along_axis(bits, subsets[task], axis=1), axis=1) % 2
        x = jnp.concatenate([jax.nn.one_hot(task, self.cfg.n_tasks, dtype=dtype), bits.astype(dtype)], axis=1)
        return x, label.astype(jnp.int32)

    def _draw(self, key: jax.Array, shape: tuple[int, ...], exponent: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Task ids (``shape``) and bits (``shape`` + (n_bits,), unpacked from 32-bit random words).

        The task id is drawn exactly in float32, also for rare subtasks: with tail sums S_i = sum_{j >= i} p_j
        (S_0 = 1, accurate to float32 relative rounding however small) and u uniform on [0, 1) with 46 random
        bits (two words, so u keeps relative precision near 0), task i is the one with S_{i+1} <= u < S_i."""
        kt, kb = jax.random.split(key)
        p = frequencies(self.cfg.n_tasks, exponent)
        tail = jnp.cumsum(p[::-1])[::-1]
        tail = tail / tail[0]
        words = jax.random.bits(kt, shape + (2,), jnp.uint32) >> 9          # two 23-bit integers
        u = words[..., 0].astype(jnp.float32) * 2.0**-23 + words[..., 1].astype(jnp.float32) * 2.0**-46
        task = jnp.clip(jnp.sum(tail > u[..., None], axis=-1) - 1, 0, self.cfg.n_tasks - 1)
        j = jnp.arange(self.cfg.n_bits)
        words = jax.random.bits(kb, shape + (-(-self.cfg.n_bits // 32),), jnp.uint32)
        bits = (words[..., j // 32] >> (j % 32).astype(jnp.uint32)) & 1
        return task, bits.astype(jnp.int32)

    def examples(self, keys: jax.Array, m: dict, dtype) -> tuple[jax.Array, jax.Array]:
        """One example per key (fixed training sets): the task id from the member's frequencies, then the bits."""
        task, bits = jax.vmap(lambda k: self._draw(k, (), m["zipf_exponent"]))(keys)
        return self._encode(task, bits, dtype)

    def train_batch(self, data_key: jax.Array, step: jax.Array, m: dict, dtype) -> tuple[jax.Array, jax.Array]:
        """A fresh batch of ``step``, drawn at once from (data key, step)."""
        task, bits = self._draw(jax.random.fold_in(data_key, step), (self.cfg.batch_size,), m["zipf_exponent"])
        return self._encode(task, bits, dtype)

    def test_set(self, dtype) -> tuple[jax.Array, jax.Array]:
        """test_size / n_tasks examples of each subtask, in subtask order, from a key of subsets_seed alone."""
        c = self.cfg
        per = c.test_size // c.n_tasks
        task = jnp.repeat(jnp.arange(c.n_tasks), per)
        key = jax.random.fold_in(jax.random.key(c.subsets_seed), TEST_FOLD)
        bits = jax.random.bernoulli(key, 0.5, (c.test_size, c.n_bits)).astype(jnp.int32)
        return self._encode(task, bits, dtype)

    def losses(self, outputs: jax.Array, y: jax.Array, m: dict) -> jax.Array:
        """Cross-entropy in bits per example (2 classes: parity 0 or 1)."""
        return cross_entropy(outputs, y, "bits")

    def subtask_losses(self, losses: jax.Array) -> jax.Array:
        """Mean test loss of each subtask, (n_tasks,), from the per-example test losses."""
        return jnp.mean(losses.reshape(self.cfg.n_tasks, -1), axis=1)

    def test_weights(self, m: dict) -> jax.Array:
        """Each test example of subtask i weighs p_i (the member's exact frequency) / its examples of subtask i."""
        p = frequencies(self.cfg.n_tasks, m["zipf_exponent"], jnp.result_type(float))   # float64 under x64
        return jnp.repeat(p, self.cfg.test_size // self.cfg.n_tasks) / (self.cfg.test_size // self.cfg.n_tasks)

    def test_loss(self, losses: jax.Array, m: dict) -> jax.Array:
        """Sum over subtasks of p_i (the member's exact frequencies) x the subtask's mean test loss."""
        return jnp.sum(self.test_weights(m).astype(losses.dtype) * losses)

    def record_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"subtask_loss": (self.cfg.n_tasks,)}

    def records(self, losses: jax.Array, predict, m: dict) -> dict[str, jax.Array]:
        return {"subtask_loss": self.subtask_losses(losses)}
