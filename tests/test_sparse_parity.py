"""Task sparse-parity (issue 13, parts 1-2): the generator, Zipf frequencies, the exact-frequency test
loss in bits, per-subtask records, and the per-member exponent inside one program."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_alone, small_config
from sweepjax.config import ConfigError, build_config
from sweepjax.grid import build_grid
from sweepjax.run import run_sweep
from sweepjax.tasks.sparse_parity import SparseParity, frequencies

TASK = {"name": "sparse-parity", "n_tasks": 4, "n_bits": 6, "test_size": 400}


def task(**kw) -> SparseParity:
    return SparseParity(build_config({"task": {**TASK, **kw}}).task)


def test_subsets_fixed_by_seed_and_labels_are_parities():
    a, b, c = task().subsets, task().subsets, task(subsets_seed=1).subsets
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c) and a.shape == (4, 3)
    assert all(len(set(row)) == 3 for row in a) and a.max() < 6
    t = task()
    x, y = t.examples(jax.random.split(jax.random.key(0), 500), {"zipf_exponent": jnp.float32(1.4)}, jnp.float32)
    x, y = np.asarray(x), np.asarray(y)
    assert x.shape == (500, 10) and set(np.unique(x)) <= {0.0, 1.0}
    ids = x[:, :4].argmax(1)
    assert (x[:, :4].sum(1) == 1).all()
    np.testing.assert_array_equal(y, x[:, 4:][np.arange(500)[:, None], a[ids]].sum(1) % 2)


@pytest.mark.parametrize("exponent", [0.0, 1.4])
def test_task_frequencies_follow_the_zipf_law(exponent):
    t = task(n_tasks=8)
    n = 100_000
    x, _ = jax.jit(lambda k: t.examples(jax.random.split(k, n), {"zipf_exponent": jnp.float32(exponent)},
                                        jnp.float32))(jax.random.key(1))
    p = np.arange(1, 9, dtype=float) ** -exponent
    p /= p.sum()
    np.testing.assert_allclose(np.asarray(frequencies(8, exponent)), p, rtol=1e-6)
    # The fresh-batch path draws a whole batch at once: the same law, and labels still parities.
    big = task(n_tasks=8, batch_size=n)
    xb, yb = big.train_batch(jax.random.key(2), jnp.int32(3), {"zipf_exponent": jnp.float32(exponent)}, jnp.float32)
    xb = np.asarray(xb)
    np.testing.assert_array_equal(np.asarray(yb), xb[:, 8:][np.arange(n)[:, None], big.subsets[xb[:, :8].argmax(1)]].sum(1) % 2)
    assert abs(xb[:, 8:].mean() - 0.5) < 0.01
    for sample in (x, xb):
        counts = np.bincount(np.asarray(sample[:, :8]).argmax(1), minlength=8)
        assert np.all(np.abs(counts - n * p) < 5 * np.sqrt(n * p * (1 - p))), (counts, n * p)


def test_test_set_holds_each_subtask_equally_in_order():
    x, y = task().test_set(jnp.float32)
    ids = np.asarray(x[:, :4]).argmax(1)
    np.testing.assert_array_equal(ids, np.repeat(np.arange(4), 100))
    x2, _ = task(batch_size=7).test_set(jnp.float32)          # fixed: independent of everything but the seed
    np.testing.assert_array_equal(x, x2)


def test_config_rules():
    for raw, message in [({"k": 7}, r"^task.k = 7 > task.n_bits = 6"),
                         ({"test_size": 401}, r"^task.test_size = 401 with task.n_tasks = 4: .* multiple of n_tasks$"),
                         ({"zipf_exponent": -1.0}, r"^task.zipf_exponent = -1.0: must be >= 0$"),
                         ({"alpha": 0.4}, r"^unknown key 'task.alpha' for task 'sparse-parity'")]:
        with pytest.raises(ConfigError, match=message):
            build_config({"task": {**TASK, **raw}})
    cfg = build_config({"task": TASK, "sweep": {"task.zipf_exponent": [1.2, 1.6]}})
    assert len(build_grid(cfg).groups) == 1          # an exponent sweep is one program


def _config(sweep, **train):
    model = {} if "model.width" in sweep else {"width": 64}
    return small_config(sweep, task={**TASK, "batch_size": 256}, model=model,
                        train={"steps": 1500, "chunk_steps": 500, "lr": 3e-3, **train}, eval={"points": 6},
                        run={"max_padding_waste": 0})


def test_frequent_subtasks_are_learned_first_and_the_test_loss_weights_them():
    """With p_i ~ i^-2 the most frequent subtask is learned first: after 1,500 steps the subtask losses rise
    with the subtask index, the first below 0.1 bit; the test loss (bits) is the p-weighted mean of them."""
    ds = run_sweep(_config({"task.zipf_exponent": [0.0, 2.0]}), log=None)[0]
    assert ds.test_loss.attrs["units"] == "bits"
    np.testing.assert_allclose(ds.test_loss.sel(eval_step=0), 1.0, atol=0.1)      # chance: 1 bit
    for e in (0.0, 2.0):
        p = np.asarray(frequencies(4, e))
        np.testing.assert_allclose((ds.subtask_loss.sel(zipf_exponent=e) * p).sum("subtask"),
                                   ds.test_loss.sel(zipf_exponent=e), rtol=1e-5)
    last = ds.subtask_loss.sel(zipf_exponent=2.0).isel(eval_step=-1).values
    assert last[0] < 0.1 and np.all(np.diff(last) > -0.05) and last[-1] > 0.5, last


def test_exponent_inside_one_program_equals_it_without_the_other():
    cfg = _config({"task.zipf_exponent": [1.2, 1.6], "model.width": [16, 64]}, steps=200)
    swept = run_sweep(cfg, log=None)[0]
    alone = run_alone(cfg, {"task.zipf_exponent": 1.6, "model.width": 16}, {"task.zipf_exponent": 1.6, "model.width": 64})
    m = swept.sel(zipf_exponent=1.6, width=16)
    np.testing.assert_array_equal(m.test_loss.values, alone.test_loss[0])
    np.testing.assert_array_equal(m.subtask_loss.values, alone.records["subtask_loss"][0])
    assert not np.array_equal(m.test_loss.values, swept.test_loss.sel(zipf_exponent=1.2, width=16).values)


def test_subsets_are_distinct_and_rare_subtasks_are_drawn_exactly():
    """Every subtask has its own subset (3 bits, k = 2: all C(3, 2) = 3 subsets; a 4th subtask is refused);
    with 500 subtasks at exponent 1.8 the rarest ones are drawn at their p_i (float32 tail sums, 46-bit u)."""
    assert sorted(map(tuple, task(n_tasks=3, n_bits=3, k=2, test_size=300).subsets)) == [(0, 1), (0, 2), (1, 2)]
    with pytest.raises(ConfigError, match=r"^task.n_tasks = 4 > C\(n_bits, k\) = 3"):
        build_config({"task": {**TASK, "n_tasks": 4, "n_bits": 3, "k": 2}})
    t = task(n_tasks=500, n_bits=100, test_size=500)
    n = 2_000_000
    ids, _ = jax.jit(lambda k: t._draw(k, (n,), jnp.float32(1.8)))(jax.random.key(0))
    counts = np.bincount(np.asarray(ids), minlength=500)
    p = np.arange(1, 501, dtype=float) ** -1.8
    p /= p.sum()
    rare = slice(400, 500)   # 100 rarest: together ~0.4% of draws
    assert abs(counts[rare].sum() - n * p[rare].sum()) < 4 * np.sqrt(n * p[rare].sum())
    assert np.abs((counts - n * p) / np.sqrt(n * p)).max() < 5


def test_float64_run_weights_the_test_loss_in_float64_and_subtask_loss_has_units():
    """In a float64 run the test loss is the float64 p-weighted mean of the subtask losses (float32 weights were
    off by ~1e-8 relative); subtask_loss is in bits like the test loss."""
    cfg = _config({"task.zipf_exponent": [1.3]}, steps=30, precision="float64")
    ds = run_sweep(cfg, log=None)[0]
    assert ds.subtask_loss.attrs["units"] == "bits" and ds.subtask_loss.dtype == np.float64
    p = 1.0 / np.arange(1, 5) ** 1.3
    p /= p.sum()
    np.testing.assert_allclose((ds.subtask_loss * p).sum("subtask"), ds.test_loss, rtol=1e-13)


def test_fixed_training_set_is_reused_across_epochs():
    """task.dataset_size = D: every epoch of ceil(D / B) steps shows the same D examples (in another order), and a
    member trained on D = 48 examples memorises them: its training loss falls far below its test loss, while a
    member on fresh samples generalises as it trains."""
    from sweepjax.tasks import dataset
    sp = task(n_tasks=4, n_bits=32, k=3, batch_size=16)   # 32 bits: 48 draws are distinct
    key, m = jax.random.key(5), {"zipf_exponent": jnp.float32(1.4)}

    def epoch(e):   # the examples of the 3 steps of epoch e (D = 48, B = 16)
        rows = []
        for step in range(3 * e, 3 * e + 3):
            idx, valid = dataset.minibatch(key, jnp.int32(step), 16, 48)
            x, y = sp.examples(dataset.sample_keys(key, idx), m, jnp.float32)
            rows += [tuple(np.asarray(x[i]).tolist()) + (int(y[i]),) for i in range(16) if valid[i]]
        return rows

    first, second = epoch(0), epoch(1)
    assert len(set(first)) == len(first) == 48 and sorted(first) == sorted(second) and first != second
    cfg = small_config({"task.dataset_size": [48, 0]}, task={**TASK, "n_bits": 8, "k": 3, "batch_size": 16},
                       model={"width": 64}, train={"steps": 400, "chunk_steps": 400, "lr": 1e-2},
                       eval={"points": 4}, run={"max_padding_waste": 0})
    ds = run_sweep(cfg, log=None)[0]
    fixed, fresh = ds.sel(dataset_size=48), ds.sel(dataset_size=0)
    assert float(fixed.train_loss.isel(eval_step=-1)) < 0.1 < float(fixed.final_test_loss) - 0.3
    assert float(fresh.final_test_loss) < float(fresh.train_loss.isel(eval_step=-1)) + 0.2
