"""Task ``regression-1d``: y = f(x) for scalar x uniform on [low, high], mean squared error.

Batches are pure functions of (data key, step), generated on the device: fresh U[low, high] draws
(``train_data = "fresh"``) or the full batch ``linspace(low, high, grid_size)`` (``"grid"``, the
points k (high - low) / (grid_size - 1) from low, k = 0 .. grid_size - 1).

The test set is the same fixed grid for every member: the midpoints of ``test_size`` equal cells,
x_i = low + (i + 1/2) (high - low) / test_size, i = 0 .. test_size - 1. Being midpoints, the test
points never coincide with the training grid unless the sizes line up: with a = grid_size - 1 and
T = test_size the grids share a point iff 2T / gcd(a, 2T) is odd (then "test" loss would partly be
training loss). Config validation refuses such a pair (:func:`sweepjax.config.grids_share_point`);
``test_size = grid_size - 1`` (test points halfway between training points) always works.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from sweepjax.config import TaskConfig


@dataclass(frozen=True)
class Regression1D:
    """y = f(x), x ~ U[low, high]; ``f`` and the sampling are named in :class:`TaskConfig`."""
    cfg: TaskConfig
    in_dim: int = 1
    out_dim: int = 1

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

    def train_batch(self, data_key: jax.Array, step: jax.Array, dtype) -> tuple[jax.Array, jax.Array]:
        """The training batch of ``step``: (x, y), each (batch, 1)."""
        c = self.cfg
        if c.train_data == "grid":
            x = self.grid(c.grid_size, dtype)
        else:
            key = jax.random.fold_in(data_key, step)
            x = jax.random.uniform(key, (c.batch_size, 1), dtype, c.low, c.high)
        return x, self.target(x)

    def init_input(self, dtype) -> jax.Array:
        """An input batch of the right shape for model init, (1, 1)."""
        return jnp.zeros((1, self.in_dim), dtype)

    def test_set(self, dtype) -> tuple[jax.Array, jax.Array]:
        """The fixed evaluation grid, cell midpoints (see the module docstring): (x, y), each (test_size, 1)."""
        x = self.midpoints(self.cfg.test_size, dtype)
        return x, self.target(x)

    @staticmethod
    def loss(pred: jax.Array, y: jax.Array) -> jax.Array:
        """Mean squared error over the batch."""
        return jnp.mean(jnp.square(pred - y))

