"""The task protocol: what a task module provides, with the defaults most tasks keep.

A task is one module with one class deriving from :class:`Task`, named in
:data:`sweepjax.tasks.TASKS` (``"name": "module:Class"``). The class declares

* ``Keys``: its config section, a dataclass deriving from :class:`sweepjax.config.TaskConfig` (the keys
  every task has: name, batch_size, test_size, data_seed, dataset_size) with its own keys and defaults.
  Keys of another task are refused (``unknown key 'task.x' for task 'y'; did you mean ...``);
  ``CHOICES``, ``MINIMUM``, ``MAXIMUM``, ``BELOW``, ``APPLIES``, ``WHY``: rules of its keys, as the
  tables of the same names in :mod:`sweepjax.config` (full ``task.<key>`` names), and :meth:`check`
  for rules across keys;
* ``MEMBER_KEYS``: its keys whose swept values are numbers inside one compiled program (a
  temperature, an exponent). The engine passes them to :meth:`train_batch`, :meth:`examples`,
  :meth:`losses` and :meth:`records` as ``m`` (bare name -> traced scalar); every other swept key of
  the task is structural (one program per value);
* ``FAMILIES``: the model families it trains, and :meth:`model_io`: the shapes the family needs
  (``in_dim``/``out_dim`` for the MLP family, ``vocab``/``context`` for the transformer), with
  :meth:`batch_rows` and :meth:`tokens_per_example` (class methods of the config section alone, so
  counting parameters and tokens never builds the task's data);
* ``LOSS_UNIT`` (one of :data:`sweepjax.losses.UNITS`; :meth:`loss_unit` where a key changes it) and
  :meth:`losses`: per-example losses;
* data on the device: :meth:`examples` (one example per key: used for fixed training sets of
  ``task.dataset_size`` samples and, by default, for fresh batches) or :meth:`train_batch`;
  ``SHARED_BATCH``: its fresh batches do not read ``m``, so members with the same data seed draw the same
  batch and the engine draws it once per step (a teacher network's forward pass, say);
* :meth:`test_set` (fixed, the same for every member), :meth:`test_loss` (how per-example test losses
  combine: the mean, or weights such as per-member task frequencies) and :meth:`floors` (irreducible
  losses when known);
* :meth:`info`: facts about the task's data that are no loss but that a reader of the results needs (the
  text corpus's sha256 and size), kept as attributes of the results;
* ``RECORDS`` / :meth:`records`: what else it measures at every evaluation (name -> dims); a record named
  ``*_loss`` is in the task's loss unit (its ``units`` attribute says so).
* ``PREDICTIONS`` (:meth:`predictions` where a key changes it): how members' predictions on the test set,
  kept by ``eval.save_predictions``, combine into an ensemble: ``"outputs"`` (squared-error outputs: the
  mean of the outputs; vector outputs get an ``output`` dim), ``"probabilities"`` (classifiers: the mean of
  the predicted probabilities, scored by the task's cross-entropy or KL; :meth:`distributions` gives what
  is kept), or None (nothing to keep); :meth:`samples` (False for a setting with its own fixed full batch,
  where ``dataset_size`` is ignored);
* ``STUDY``: the analysis module whose ``analyse(ds, out, run_cfg, width_rows, log, warn)`` writes the
  study's numbers and figures after a run (and ``sweepjax plot``).

Adding a task is one new module plus one line in ``TASKS``.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from sweepjax.config import Config, TaskConfig, axis


class Task:
    """Base class of tasks (see the module docstring). Subclasses set the class attributes and
    implement at least :meth:`model_io`, :meth:`init_input`, :meth:`examples` (or :meth:`train_batch`),
    :meth:`test_set` and :meth:`losses`."""
    Keys: type[TaskConfig] = TaskConfig
    FAMILIES: tuple[str, ...] = ()
    MEMBER_KEYS: tuple[str, ...] = ()      # full names, "task.<key>"
    CHOICES: dict[str, tuple] = {}
    MINIMUM: dict[str, tuple[float, bool]] = {}
    MAXIMUM: dict[str, float] = {}
    BELOW: dict[str, float] = {}
    APPLIES: dict[str, tuple] = {}
    WHY: dict[str, str] = {}
    LOSS_UNIT: str = "nats"
    RECORDS: dict[str, tuple[str, ...]] = {}    # extra per-evaluation results: name -> its own dims
    SHARED_BATCH: bool = False                 # train_batch ignores m: drawn once per step per distinct data seed
    PREDICTIONS: str | None = None             # how saved test-set predictions combine: "outputs" | "probabilities"
    COMBINE = ("outputs", "probabilities")
    STUDY: str = "sweepjax.analysis.lottery"   # module whose analyse(ds, out, run_cfg, width_rows, log, warn) runs after a sweep

    def __init__(self, cfg: TaskConfig):
        self.cfg = cfg

    # ---- config rules -------------------------------------------------------------------------
    @classmethod
    def check(cls, cfg: Config) -> None:
        """Refuse combinations of this task's keys that cannot work (raise ConfigError, one line)."""

    @classmethod
    def not_full_batch(cls, cfg: Config) -> tuple[str, str] | None:
        """None when every training step of every member sees the same full batch (what L-BFGS needs),
        else (the setting that prevents it as ``key = value``, how to fix it)."""
        sizes = axis(cfg, "task.dataset_size")
        if all(1 <= d <= cfg.task.batch_size for d in sizes):
            return None
        shown = sizes[0] if len(sizes) == 1 else sizes
        return f"task.dataset_size = {shown}", f"set 1 <= task.dataset_size <= task.batch_size = {cfg.task.batch_size}"

    @classmethod
    def loss_unit(cls, keys: TaskConfig) -> str:
        """The unit of the losses (``LOSS_UNIT`` unless a key of the task changes it)."""
        return cls.LOSS_UNIT

    @classmethod
    def predictions(cls, keys: TaskConfig) -> str | None:
        """How saved predictions combine (``PREDICTIONS`` unless a key of the task changes it)."""
        return cls.PREDICTIONS

    @classmethod
    def samples(cls, keys: TaskConfig) -> bool:
        """Whether training data is sampled (fresh, or a fixed set of ``dataset_size``): False for a task
        setting with its own fixed full batch (regression-1d's grid), where ``dataset_size`` has no effect."""
        return True

    # ---- shapes -------------------------------------------------------------------------------
    @classmethod
    def model_io(cls, keys: TaskConfig) -> dict[str, int]:
        """The sizes the model family takes from the task (e.g. ``{"in_dim": 1, "out_dim": 1}``)."""
        raise NotImplementedError

    def init_input(self, dtype) -> jax.Array:
        """An input batch of one example, for model init."""
        raise NotImplementedError

    @classmethod
    def batch_rows(cls, keys: TaskConfig) -> int:
        """Examples per training batch (for the memory plan and token counts)."""
        return keys.batch_size

    @classmethod
    def tokens_per_example(cls, keys: TaskConfig) -> int:
        """Tokens (positions the loss averages over) per example: 1, or the context of a sequence task."""
        return 1

    # ---- data ---------------------------------------------------------------------------------
    def examples(self, keys: jax.Array, m: dict, dtype) -> tuple[jax.Array, jax.Array]:
        """(x, y) with one example per key (``keys``: (B,) keys), a pure function of each key."""
        raise NotImplementedError

    def train_batch(self, data_key: jax.Array, step: jax.Array, m: dict, dtype) -> tuple[jax.Array, jax.Array]:
        """The fresh training batch of ``step``: by default ``examples`` of B keys split from (data key, step)."""
        keys = jax.random.split(jax.random.fold_in(data_key, step), self.cfg.batch_size)
        return self.examples(keys, m, dtype)

    def test_set(self, dtype) -> tuple[jax.Array, jax.Array]:
        """The fixed test set, (x, y), the same for every member."""
        raise NotImplementedError

    # ---- loss and measures --------------------------------------------------------------------
    def losses(self, outputs: jax.Array, y: jax.Array, m: dict) -> jax.Array:
        """Per-example losses (B,), in ``LOSS_UNIT``."""
        raise NotImplementedError

    def test_weights(self, m: dict) -> jax.Array:
        """Weights of the test examples in :meth:`test_loss`, summing to 1: uniform unless the task weights
        its test examples (kept with saved probabilities so that ensembles are scored as members are)."""
        return jnp.full(self.cfg.test_size, 1.0 / self.cfg.test_size)

    def distributions(self, outputs: jax.Array, y: jax.Array, m: dict) -> tuple[jax.Array, jax.Array]:
        """For ``PREDICTIONS = "probabilities"``: (the member's predicted log-probabilities on the test set,
        classes last; the target: integer labels shaped like them without the class axis, or a distribution
        shaped like them), such that :meth:`losses` is the cross-entropy (labels) or KL (distribution) of
        these, averaged over positions, in ``loss_unit``. Default: a softmax over the model's outputs."""
        return jax.nn.log_softmax(outputs.astype(jnp.float32)), y

    def floors(self) -> dict[str, float]:
        """Known loss floors in ``LOSS_UNIT``: ``irreducible_loss`` (the best expected test loss) and
        ``test_bayes_loss`` (the best loss on the fixed test set itself), when the task knows them."""
        return {}

    def info(self) -> dict[str, str | int | float]:
        """Facts about the task's data kept as attributes of the results (name -> a string or number; e.g. the
        corpus's ``corpus_sha256``), beside the config: what a reader needs to know what was trained on when
        the config alone does not pin it. Default: none."""
        return {}

    def record_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of each of ``RECORDS`` at one evaluation."""
        return {}

    def test_loss(self, losses: jax.Array, m: dict) -> jax.Array:
        """The test loss from the per-example losses on the test set (in its order): their mean, or a
        weighted mean where the task weights its test examples (e.g. by a per-member frequency)."""
        return jnp.mean(losses)

    def records(self, losses: jax.Array, predict: Callable[[jax.Array], jax.Array], m: dict) -> dict[str, jax.Array]:
        """The ``RECORDS`` values of one member at one evaluation, from its per-example test losses
        (test-set order) or from ``predict(x)``, which runs its model on any input."""
        return {}


def weighted_mean(losses: jax.Array, weights: jax.Array | None) -> jax.Array:
    """Mean of per-example losses, over the rows with weight 1 when ``weights`` is given."""
    if weights is None:
        return jnp.mean(losses)
    w = weights.astype(losses.dtype)
    return jnp.sum(losses * w) / jnp.maximum(jnp.sum(w), 1)


