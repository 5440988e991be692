"""Data size as a per-member axis: fixed training sets of D samples, epochs, early stopping (issue 11, part 4)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run, small_config
from sweepjax.config import ConfigError
from sweepjax.engine.train import run_group
from sweepjax.grid import build_grid
from sweepjax.run import run_sweep
from sweepjax.tasks import dataset


@pytest.mark.parametrize("size", [1, 2, 3, 63, 64, 65, 1000, 4097])
def test_each_sample_once_per_epoch(size):
    """Over the ceil(D/B) steps of an epoch the rows with weight 1 hold every index 0..D-1 exactly once;
    epochs are shuffled differently; D <= B trains on the whole set every step."""
    batch = 64
    per_epoch = -(-size // batch)
    fn = jax.jit(lambda t: dataset.minibatch(jax.random.key(3), t, batch, size))
    orders = []
    for epoch in range(3):
        rows = [fn(jnp.int32(epoch * per_epoch + j)) for j in range(per_epoch)]
        index = np.concatenate([np.asarray(i)[np.asarray(v)] for i, v in rows])
        assert sorted(index.tolist()) == list(range(size)), epoch
        weights = [int(np.asarray(v).sum()) for _, v in rows]
        assert weights == [batch] * (per_epoch - 1) + [size - (per_epoch - 1) * batch]
        orders.append(index)
    if per_epoch > 1:
        assert not np.array_equal(orders[0], orders[1])
    else:                   # the whole set every step, in one order
        assert orders[0].tolist() == orders[1].tolist() == list(range(size))
    # Another data key, another order (a big set).
    if size >= 1000:
        other = dataset.minibatch(jax.random.key(4), jnp.int32(0), batch, size)[0]
        assert not np.array_equal(np.asarray(other), orders[0][:batch])


@pytest.mark.parametrize("size, steps", [(1, 5), (10, 7), (64, 3), (65, 5), (1000, 40)])
def test_samples_seen_counts_the_weighted_rows(size, steps):
    batch = 64
    fn = jax.jit(lambda t: dataset.minibatch(jax.random.key(0), t, batch, size)[1])
    assert dataset.samples_seen(steps, size, batch) == sum(int(np.asarray(fn(jnp.int32(t))).sum()) for t in range(steps))


def test_permutation_is_a_bijection_for_traced_sizes():
    """One program over members with different D: each member's permutation is a bijection of its own range."""
    sizes = jnp.array([1, 5, 64, 100, 777], jnp.int32)
    i = jnp.arange(777)
    perm = jax.jit(jax.vmap(lambda n: dataset.permute(jax.random.key(0), jnp.where(i < n, i, 0), n)))(sizes)
    for n, p in zip(np.asarray(sizes), np.asarray(perm)):
        assert sorted(p[:n].tolist()) == list(range(n)), n


SWEEP = {"task.dataset_size": [0, 10, 1000], "model.width": [2, 6]}
SECTIONS = dict(train={"steps": 60, "chunk_steps": 25}, eval={"points": 6, "save_params": True},
                run={"max_padding_waste": 0})


@pytest.mark.parametrize("size", [10, 1000])
def test_member_with_a_fixed_set_equals_it_alone_bitwise(size):
    """A member with D = 10 (< batch: the whole set every step) or D = 1000 inside a sweep of D and widths (one
    program with fresh-data members) equals it in a program of its own data size only, bit for bit."""
    cfg = small_config(SWEEP, **SECTIONS)
    swept = run_sweep(cfg, log=None)[0]
    (g,) = build_grid(cfg).groups
    own = g.values["task.dataset_size"] == size
    row, wide = (int(np.flatnonzero(own & (g.values["model.width"] == w))[0]) for w in (2, 6))
    # Without the other data sizes (and without fresh-data members: a program of fixed sets only), padded as before.
    alone = run_group(g.config, g.subset(np.array([row, row, wide])), log=None)
    m = swept.sel(dataset_size=size, width=2)
    np.testing.assert_array_equal(m.train_loss.values, alone.train_loss[0])
    np.testing.assert_array_equal(m.test_loss.values, alone.test_loss[0])
    for k, v in alone.params.items():
        np.testing.assert_array_equal(m[f"param.{k}"].values, v[0], k)
    # The data sizes really differ, and D = 0 still draws fresh samples (the same stream as a sweep without D).
    finals = swept.final_test_loss.sel(width=2).values
    assert len(set(finals.tolist())) == 3
    fresh = run({"model.width": [2, 6]}, **SECTIONS)
    np.testing.assert_array_equal(swept.test_loss.sel(dataset_size=0).values, fresh.test_loss.values)
    # Tokens count the samples each member's steps hold: 60 steps of 64; 60 epochs of 10; for D = 1000, 3 epochs
    # of 16 steps (the last holding 40) and 12 steps of 64.
    assert swept.tokens.sel(width=2).values.tolist() == [60 * 64, 60 * 10, 3 * 1000 + 12 * 64]


def test_small_set_overfits_and_best_test_loss_finds_the_minimum():
    """With D = 4 samples the test loss falls then rises: best_test_loss is the minimum over the evaluations
    (dense with eval.every) at best_step, below the final loss."""
    ds = run({"task.dataset_size": [0, 4]}, task={"function": "sin", "power": 3.0}, model={"width": 64},
             train={"steps": 400, "chunk_steps": 200, "lr": 3e-2}, eval={"points": 4, "every": 20})
    assert set(range(0, 401, 20)) <= set(ds.eval_step.values.tolist())
    for d in (0, 4):
        curve = ds.test_loss.sel(dataset_size=d)
        assert float(ds.best_test_loss.sel(dataset_size=d)) == float(curve.min())
        assert int(ds.best_step.sel(dataset_size=d)) == int(curve.eval_step[int(curve.argmin("eval_step"))])
    small = ds.sel(dataset_size=4)
    assert float(small.train_loss.isel(eval_step=-1)) < 0.01 * float(small.test_loss.isel(eval_step=-1))
    assert float(small.best_test_loss) < float(small.final_test_loss)
    assert float(ds.best_test_loss.sel(dataset_size=0)) < float(small.best_test_loss)


def test_grid_members_ignore_the_data_size():
    """dataset_size acts in the fresh-data group of a train_data sweep; the grid group keeps its grid (and
    counts grid_size samples per step), whatever D it is crossed with."""
    sweep = {"task.train_data": ["fresh", "grid"], "task.dataset_size": [0, 3]}
    ds = run(sweep, task={"test_size": 100, "grid_size": 101}, train={"steps": 20})
    grid = ds.sel(train_data="grid")
    np.testing.assert_array_equal(grid.test_loss.sel(dataset_size=3).values, grid.test_loss.sel(dataset_size=0).values)
    assert grid.tokens.values.tolist() == [20 * 101, 20 * 101]
    fresh = ds.sel(train_data="fresh")
    assert not np.array_equal(fresh.test_loss.sel(dataset_size=3).values, fresh.test_loss.sel(dataset_size=0).values)


def test_diverged_member_has_no_best_loss():
    ds = run({"task.dataset_size": [0, 8], "train.lr": [1e-2, 1e3]}, train={"steps": 30})
    blown = ds.sel(lr=1e3)
    assert blown.diverged.all() and np.isnan(blown.best_test_loss).all() and (blown.best_step == -1).all()
    assert np.isfinite(ds.best_test_loss.sel(lr=1e-2)).all()


def test_lbfgs_on_a_fixed_set_within_one_batch():
    ds = run({"task.dataset_size": [8, 16]}, train={"optimizer": "lbfgs", "steps": 20}, task={"batch_size": 16})
    assert np.all(np.isfinite(ds.final_test_loss.values))
    with pytest.raises(ConfigError, match=r"^train.optimizer = 'lbfgs' with task.dataset_size = \[8, 32\]: L-BFGS "
                                          r"needs a fixed full batch; set 1 <= task.dataset_size <= task.batch_size = 16$"):
        small_config({"task.dataset_size": [8, 32]}, train={"optimizer": "lbfgs"}, task={"batch_size": 16})
    with pytest.raises(ConfigError, match=r"^task.dataset_size = 8: has no effect with task.train_data = 'grid'"):
        small_config({}, task={"train_data": "grid", "dataset_size": 8})
