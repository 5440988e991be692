"""QDG (quanta discovery from gradients): per-sample gradients, the clustering step, and an end-to-end run
on a trained multitask sparse-parity member."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

import sweepjax
from sweepjax.analysis import qdg as Q


# ---- per-sample gradients ---------------------------------------------------------------------
def _apply(p, x):
    return jnp.tanh(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def _loss(out, y):
    return -jnp.take_along_axis(jax.nn.log_softmax(out), y[:, None], axis=1)[:, 0]


def test_per_sample_gradients_equal_a_loop():
    k = jax.random.split(jax.random.key(1), 6)
    p = {"w1": jax.random.normal(k[0], (5, 7)), "b1": jax.random.normal(k[1], (7,)),
         "w2": jax.random.normal(k[2], (7, 3)), "b2": jax.random.normal(k[3], (3,))}
    x = jax.random.normal(k[4], (9, 5))
    y = jax.random.randint(k[5], (9,), 0, 3)
    got = np.asarray(Q.per_sample_gradients(_apply, p, x, y, _loss))
    n_params = 5 * 7 + 7 + 7 * 3 + 3
    assert got.shape == (9, n_params)
    for i in range(9):
        g = jax.grad(lambda q: _loss(_apply(q, x[i:i + 1]), y[i:i + 1])[0])(p)
        want = np.asarray(jax.flatten_util.ravel_pytree(g)[0])
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)
    # chunked calls give the same rows; the samples really differ (a broadcast bug would not)
    np.testing.assert_allclose(np.asarray(Q.per_sample_gradients(_apply, p, x, y, _loss, chunk=4)), got, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got[0], got[1])


# ---- the clustering step ------------------------------------------------------------------------
def test_clusters_of_noisy_orthogonal_directions():
    rng = np.random.default_rng(0)
    dirs = np.linalg.qr(rng.normal(size=(60, 3)))[0].T              # 3 orthonormal directions in R^60
    truth = np.repeat(np.arange(3), [70, 40, 20])
    grads = dirs[truth] * rng.uniform(0.5, 3.0, (len(truth), 1)) + 0.08 * rng.normal(size=(len(truth), 60))
    a = Q.gradient_affinity(grads)
    assert a.shape == (130, 130) and np.allclose(np.diag(a), 1.0) and np.all((a >= 0) & (a <= 1))
    np.testing.assert_allclose(a, a.T)
    labels = Q.spectral_clusters(a, 3, n_init=10)
    assert adjusted_rand_score(truth, labels) > 0.95
    assert abs(adjusted_rand_score(rng.permutation(truth), labels)) < 0.05
    sizes, slope = Q.rank_frequency(labels)
    assert sizes.tolist() == [70, 40, 20]
    assert slope == pytest.approx(np.polyfit(np.log([1, 2, 3]), np.log([70, 40, 20]), 1)[0])
    # exactly opposite gradients have affinity 0, orthogonal ones 1/2
    b = Q.gradient_affinity(np.array([[1.0, 0.0], [-2.0, 0.0], [0.0, 5.0]]))
    np.testing.assert_allclose(b, [[1, 0, 0.5], [0, 1, 0.5], [0.5, 0.5, 1]], atol=1e-7)
    with pytest.raises(ValueError, match="zero"):
        Q.gradient_affinity(np.zeros((2, 3)))


def test_rank_frequency_of_zipf_sizes():
    labels = np.repeat(np.arange(4), [120, 60, 40, 30])
    sizes, slope = Q.rank_frequency(np.random.default_rng(0).permutation(labels))
    assert sizes.tolist() == [120, 60, 40, 30] and slope == pytest.approx(-1.0, abs=1e-9)
    assert np.isnan(Q.rank_frequency(np.zeros(5, int))[1])


# ---- end to end on a trained sparse-parity sweep ------------------------------------------------
@pytest.fixture(scope="module")
def trained():
    return sweepjax.run({
        "task": {"name": "sparse-parity", "n_tasks": 4, "n_bits": 6, "test_size": 400, "batch_size": 256,
                 "zipf_exponent": 0.5},
        "train": {"steps": 1500, "lr": 1e-2},
        "eval": {"save_params": True, "points": 3},
        "sweep": {"model.width": [16, 64]},
    }, progress=False)


def test_member_model_rebuilds_the_trained_member(trained):
    ds = trained
    assert Q.default_member(ds) == {"width": 64}
    m = Q.member_model(ds, width=16)
    assert m.sizes["width"] == 16 and m.padded["width"] == 64 and m.params["w_in"].shape == (10, 64)
    np.testing.assert_array_equal(np.asarray(m.params["w_out"]), ds["param.w_out"].sel(width=16).values)
    assert m.config.model.width == 16 and m.config.task.zipf_exponent == 0.5
    # the rebuilt member reproduces its recorded per-subtask test loss
    from sweepjax.tasks import make_task
    task = make_task(m.config.task)
    x, y = task.test_set(jnp.float32)
    losses = task.losses(m.apply(m.params, x), y, {"zipf_exponent": jnp.float32(0.5)})
    np.testing.assert_allclose(np.asarray(task.subtask_losses(losses)),
                               ds["subtask_loss"].sel(width=16).isel(eval_step=-1).values, rtol=1e-4, atol=1e-6)
    # per-sample gradients of the real member equal a loop over samples
    lf = lambda out, yb: task.losses(out, yb, {"zipf_exponent": jnp.float32(0.5)})
    g = np.asarray(Q.per_sample_gradients(m.apply, m.params, x[:3], y[:3], lf))
    for i in range(3):
        want = jax.grad(lambda p: lf(m.apply(p, x[i:i + 1]), y[i:i + 1])[0])(m.params)
        np.testing.assert_allclose(g[i], np.asarray(jax.flatten_util.ravel_pytree(want)[0]), rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="save_params"):
        Q.member_model(ds.drop_vars([v for v in ds.data_vars if v.startswith("param.")]), width=64)
    with pytest.raises(ValueError, match="not a coordinate"):
        Q.member_model(ds, width=32)
    with pytest.raises(ValueError, match="not sweep dims"):
        Q.member_model(ds, width=64, depth=2)


def test_qdg_finds_the_learned_subtasks(trained, tmp_path):
    ds = trained
    final = ds["subtask_loss"].sel(width=64).isel(eval_step=-1).values
    learned = int(np.sum(final < 0.1))
    assert learned >= 2, f"the fixture's member learned only {learned} subtasks: {final}"
    res = Q.qdg(ds, n_samples=600, seed=0)
    s = res.summary()
    json.dumps(s)
    assert s["member"] == {"width": 64} and s["n_drawn"] == 600 and 0 < s["n_kept"] <= 600
    assert np.all(res.losses < 0.1) and len(res.labels) == len(res.subtasks) == res.n_kept
    assert sum(s["cluster_sizes"]) == res.n_kept and s["cluster_sizes"] == sorted(s["cluster_sizes"], reverse=True)
    assert res.clusters == s["subtasks_present"] >= 2
    assert np.asarray(s["contingency"]).sum() == res.n_kept
    shuffled = adjusted_rand_score(np.random.default_rng(0).permutation(res.subtasks), res.labels)
    assert abs(s["ari_null_mean"]) < 0.01 and 0 < s["ari_null_sd"] < 0.05   # the reported chance level
    assert -1 <= s["ari_inputs"] <= 1 and -1 <= s["ari_init_gradients"] <= 1   # baselines that learned nothing
    m0 = Q.member_model(ds, initial=True, width=64)
    np.testing.assert_array_equal(np.asarray(m0.params["w_in"]), ds["param.init.w_in"].sel(width=64).values)
    assert not np.array_equal(np.asarray(m0.params["w_in"]), ds["param.w_in"].sel(width=64).values)
    assert res.ari > s["ari_null_mean"] + 3 * s["ari_null_sd"]
    # The paper's affinity: clusters follow subtasks AND labels (opposite labels -> opposite gradients),
    # so the ARI against subtasks alone is modest, but clearly above a shuffled labelling.
    assert res.ari > 0.03 and res.ari > shuffled + 0.03, (res.ari, shuffled)
    aligned = Q.qdg(ds, n_samples=600, seed=0, align_labels=True)
    # aligned by label sign (the margin's gradient) the clusters follow the subtasks better (0.11-0.20 seen
    # over qdg seeds 0-3 against 0.07-0.11 unaligned); asserted loosely: training is not bitwise stable
    assert aligned.ari > 0.06 and aligned.ari > shuffled + 0.06, (aligned.ari, res.ari)

    ds.to_netcdf(tmp_path / "results.nc", engine="h5netcdf")
    out = Q.run_qdg_cli(tmp_path, member=Q.parse_members(["width=16"]), clusters=3, n_samples=300)
    saved = json.loads((tmp_path / "qdg.json").read_text())
    assert saved["member"] == {"width": 16} and saved["clusters"] == 3 == len(saved["cluster_sizes"])
    assert saved["adjusted_rand_index"] == pytest.approx(out.ari)
    assert (tmp_path / "figures" / "qdg_rank_frequency.png").stat().st_size > 1000
