"""Task ``regression-1d``: y = f(x) for scalar x uniform on [low, high], mean squared error.

Batches are pure functions of (data key, step), generated on the device: fresh U[low, high] draws
(``train_data = "fresh"``), a fixed set of ``dataset_size`` such draws per member (see
:mod:`sweepjax.tasks.dataset`), or the full batch ``linspace(low, high, grid_size)`` (``"grid"``, the
points k (high - low) / (grid_size - 1) from low, k = 0 .. grid_size - 1).

The test set is the same fixed grid for every member: the midpoints of ``test_size`` equal cells,
x_i = low + (i + 1/2) (high - low) / test_size, i = 0 .. test_size - 1. Being midpoints, the test
points never coincide with the training grid unless the sizes line up: with a = grid_size - 1 and
T = test_size the grids share a point iff 2T / gcd(a, 2T) is odd (then "test" loss would partly be
training loss). Config validation refuses such a pair (:func:`grids_share_point`);
``test_size = grid_size - 1`` (test points halfway between training points) always works.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from sweepjax.config import Config, ConfigError, TaskConfig, axis
from sweepjax.losses import squared_error
from sweepjax.tasks.base import Task


@dataclass
class Keys(TaskConfig):
    """Config keys of ``regression-1d``."""
    function: str = "power"          # f(x): "power" (x**power), "sin" (sin(power*x)), "abs" (|x|**power)
    power: float = 2.0
    low: float = -2.0                # x ~ U[low, high]
    high: float = 2.0
    train_data: str = "fresh"        # "fresh": new U[low, high] minibatch every step (or task.dataset_size
                                     # fixed samples); "grid": full batch on a fixed grid
    grid_size: int = 1000            # points of the fixed training grid for train_data = "grid" (1000: its
                                     # points never meet the test grid's cell midpoints, whatever test_size)


_SAMPLED = {"task.train_data": ("fresh",)}


def grids_share_point(grid_size: int, test_size: int) -> bool:
    """Whether the training grid ``linspace(low, high, grid_size)`` contains a point of the test grid
    (the midpoints of ``test_size`` equal cells of [low, high]).

    With a = grid_size - 1 and T = test_size, k/a = (2i + 1)/(2T) has a solution iff 2T / gcd(a, 2T)
    is odd (equivalently: 2 x the largest power of 2 dividing T divides a).
    """
    t = 2 * test_size
    return (t // math.gcd(grid_size - 1, t)) % 2 == 1


class Regression1D(Task):
    """y = f(x), x ~ U[low, high]; ``f`` and the sampling are named in :class:`Keys`."""
    Keys = Keys
    FAMILIES = ("mlp",)
    CHOICES = {"task.function": ("power", "sin", "abs"), "task.train_data": ("fresh", "grid")}
    MINIMUM = {"task.power": (0, False), "task.grid_size": (2, True)}
    MAXIMUM = {"task.grid_size": 10**8}
    APPLIES = {
        "task.grid_size": ({"task.train_data": ("grid",)},),
        "task.batch_size": (_SAMPLED,),
        "task.data_seed": (_SAMPLED,),
        "task.dataset_size": (_SAMPLED,),
    }
    WHY = {k: "the grid is one fixed full batch" for k in ("task.batch_size", "task.data_seed", "task.dataset_size")}
    LOSS_UNIT = "squared error"
    PREDICTIONS = "outputs"

    @classmethod
    def check(cls, cfg: Config) -> None:
        c = cfg.task
        if c.low >= c.high:
            raise ConfigError(f"task.low = {c.low} >= task.high = {c.high}: need low < high")
        if "grid" not in axis(cfg, "task.train_data"):
            return
        for g in axis(cfg, "task.grid_size"):
            for t in axis(cfg, "task.test_size"):
                if grids_share_point(g, t):
                    step = (g - 1) & -(g - 1)     # any multiple of the largest power of 2 dividing grid_size - 1 works
                    fix = max(step, round(t / step) * step)
                    raise ConfigError(f"task.test_size = {t} with task.grid_size = {g}: a test point lies on the "
                                      f"training grid, so the test loss would partly be training loss; use "
                                      f"task.test_size = {fix} (grid_size - 1 = {g - 1} always works)")

    @classmethod
    def not_full_batch(cls, cfg: Config) -> tuple[str, str] | None:
        if axis(cfg, "task.train_data") == ["grid"]:
            return None
        if axis(cfg, "task.dataset_size") == [0]:
            return ("task.train_data = 'fresh'", "set task.train_data = 'grid' (or 1 <= task.dataset_size <= "
                    "task.batch_size)")
        return super().not_full_batch(cfg)

    @classmethod
    def samples(cls, keys: TaskConfig) -> bool:
        return keys.train_data == "fresh"

    @classmethod
    def model_io(cls, keys: TaskConfig) -> dict[str, int]:
        return {"in_dim": 1, "out_dim": 1}

    @classmethod
    def batch_rows(cls, keys: TaskConfig) -> int:
        return keys.grid_size if keys.train_data == "grid" else keys.batch_size

    def target(self, x: jax.Array) -> jax.Array:
        """f(x), elementwise."""
        c = self.cfg
        if c.function == "power":
            return x ** c.power if float(c.power).is_integer() else jnp.abs(x) ** c.power * jnp.sign(x)
        if c.function == "abs":
            return jnp.abs(x) ** c.power
        return jnp.sin(c.power * x)

    def grid(self, n: int, dtype) -> jax.Array:
        """n evenly spaced points on [low, high], both ends included, shape (n, 1)."""
        return jnp.linspace(self.cfg.low, self.cfg.high, n, dtype=dtype)[:, None]

    def midpoints(self, n: int, dtype) -> jax.Array:
        """The midpoints of n equal cells of [low, high], shape (n, 1)."""
        c = self.cfg
        return (c.low + (jnp.arange(n, dtype=dtype) + 0.5) * ((c.high - c.low) / n))[:, None]

    def examples(self, keys: jax.Array, m: dict, dtype) -> tuple[jax.Array, jax.Array]:
        """One x ~ U[low, high] per key: (x, f(x)), each (B, 1)."""
        c = self.cfg
        x = jax.vmap(lambda k: jax.random.uniform(k, (1,), dtype, c.low, c.high))(keys)
        return x, self.target(x)

    def train_batch(self, data_key: jax.Array, step: jax.Array, m: dict, dtype) -> tuple[jax.Array, jax.Array]:
        """The training batch of ``step``: the grid, or B fresh draws from (data key, step); each (B, 1)."""
        c = self.cfg
        if c.train_data == "grid":
            x = self.grid(c.grid_size, dtype)
        else:
            key = jax.random.fold_in(data_key, step)
            x = jax.random.uniform(key, (c.batch_size, 1), dtype, c.low, c.high)
        return x, self.target(x)

    def init_input(self, dtype) -> jax.Array:
        """An input batch of the right shape for model init, (1, 1)."""
        return jnp.zeros((1, 1), dtype)

    def test_set(self, dtype) -> tuple[jax.Array, jax.Array]:
        """The fixed evaluation grid, cell midpoints (see the module docstring): (x, y), each (test_size, 1)."""
        x = self.midpoints(self.cfg.test_size, dtype)
        return x, self.target(x)

    def losses(self, outputs: jax.Array, y: jax.Array, m: dict) -> jax.Array:
        """Squared error per example."""
        return squared_error(outputs, y)
