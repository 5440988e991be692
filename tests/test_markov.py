"""The Markov-chain task: the matrix, the device sampler against it, the entropy rate, the loss, batches."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from sweepjax.tasks.markov import Keys, Markov, _cdf_rows, _search


def task(**kw) -> Markov:
    base = {"name": "markov", "vocab": 8, "context": 64, "batch_size": 32, "test_size": 64}
    return Markov(Keys(**{**base, **kw}))


def reachable(p: np.ndarray, start: int) -> set:
    seen, todo = {start}, [start]
    while todo:
        i = todo.pop()
        for j in np.flatnonzero(p[i] > 0):
            if j not in seen:
                seen.add(int(j))
                todo.append(int(j))
    return seen


def min_bonferroni_p(seqs: np.ndarray, p: np.ndarray, pi: np.ndarray) -> float:
    """Smallest Bonferroni-corrected chi-square p-value over the rows of P and the law of x_0.

    Asserts on the way that no zero-probability transition occurs.
    """
    v = p.shape[0]
    counts = np.zeros((v, v), np.int64)
    np.add.at(counts, (seqs[:, :-1].ravel(), seqs[:, 1:].ravel()), 1)
    assert counts[p == 0].sum() == 0, "a zero-probability transition was sampled"
    pvals = []
    for i in range(v):
        kept = p[i] > 0
        n = counts[i].sum()
        if kept.sum() < 2 or n == 0:
            continue
        exp = p[i, kept] / p[i, kept].sum() * n
        pvals.append(stats.chisquare(counts[i, kept], exp).pvalue)
    first = np.bincount(seqs[:, 0], minlength=v)
    pvals.append(stats.chisquare(first, pi / pi.sum() * len(seqs)).pvalue)
    return min(pvals) * len(pvals)


@pytest.mark.parametrize("kw", [{}, {"sparsity": 0.5, "temperature": 0.7}])
def test_sampler_matches_matrix_chi_square(kw):
    m = task(**kw)
    p, pi = m.transition_matrix(), m.stationary()
    seqs = np.asarray(jax.jit(lambda k: m.sample(k, 2000))(jax.random.key(3)))
    assert seqs.shape == (2000, 65) and seqs.dtype == np.int32
    assert min_bonferroni_p(seqs, p, pi) > 1e-3
    # The test has power: the same counts checked against a different chain are rejected.
    other = task(chain_seed=1, **kw)
    with pytest.raises(AssertionError):
        assert min_bonferroni_p(seqs, other.transition_matrix(), other.stationary()) > 1e-3


def test_inverse_cdf_edges_never_hit_zero_entries():
    # Zero entries first, in the middle and last; float32 sums that miss 1 are forced to end at exactly 1.
    p = np.array([[0.0, 0.5, 0.0, 0.5, 0.0, 0.0],
                  [0.1, 0.2, 0.3, 0.1, 0.2, 0.1]])
    cdf = jnp.asarray(_cdf_rows(p))
    assert cdf.dtype == jnp.float32 and np.all(np.asarray(cdf)[0, 3:] == 1.0) and np.asarray(cdf)[1, -1] == 1.0
    below_one = np.nextafter(np.float32(1), np.float32(0))
    u = jnp.asarray([0.0, 0.25, np.nextafter(np.float32(0.5), np.float32(0)), 0.5, below_one], jnp.float32)
    row = jnp.zeros(5, jnp.int32)
    np.testing.assert_array_equal(_search(lambda j: cdf[row, j], u, 6), [1, 1, 1, 3, 3])
    np.testing.assert_array_equal(_search(lambda j: cdf[row + 1, j], u, 6), [0, 1, 2, 2, 5])


@pytest.mark.parametrize("vocab,sparsity", [(8, 0.0), (8, 0.5), (8, 0.95), (13, 0.3), (2, 0.0), (50, 0.9)])
def test_matrix(vocab, sparsity):
    m = task(vocab=vocab, sparsity=sparsity, temperature=0.8)
    p, pi = m.transition_matrix(), m.stationary()
    k = max(1, round((1 - sparsity) * vocab))
    assert p.shape == (vocab, vocab) and p.dtype == np.float64
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-12)
    assert np.all((p > 0).sum(1) == k) and m.kept_per_row == k
    assert pi.shape == (vocab,) and np.all(pi >= 0)
    np.testing.assert_allclose(pi.sum(), 1.0, atol=1e-12)
    np.testing.assert_allclose(pi @ p, pi, atol=1e-12)
    assert np.all(pi > 0)
    for start in range(vocab):
        assert reachable(p, start) == set(range(vocab))
    # Deterministic from chain_seed alone (other keys do not matter).
    same = task(vocab=vocab, sparsity=sparsity, temperature=0.8, batch_size=7, context=3)
    np.testing.assert_array_equal(same.transition_matrix(), p)
    np.testing.assert_array_equal(same.stationary(), pi)
    assert not np.array_equal(task(vocab=vocab, sparsity=sparsity, temperature=0.8, chain_seed=5).transition_matrix(), p)


def test_matrix_k1_is_one_cycle():
    m = task(vocab=9, sparsity=0.95)
    p = m.transition_matrix()
    assert np.array_equal(p, (p > 0).astype(float))       # a permutation matrix
    i, seen = 0, []
    for _ in range(9):
        seen.append(i)
        i = int(np.argmax(p[i]))
    assert sorted(seen) == list(range(9)) and i == 0       # a single cycle through all tokens
    np.testing.assert_allclose(m.stationary(), 1 / 9, atol=1e-12)
    assert m.entropy_rate() == 0.0


def test_entropy_rate_monte_carlo():
    m = task(sparsity=0.25, temperature=1.3)
    with np.errstate(divide="ignore"):
        logp = np.log(m.transition_matrix())               # -inf where P = 0 (never sampled)
    seqs = np.asarray(m.sample(jax.random.key(11), 2000))
    nll = -logp[seqs[:, :-1], seqs[:, 1:]].mean(axis=1)    # per sequence; sequences are independent
    se = nll.std(ddof=1) / np.sqrt(len(nll))
    assert abs(nll.mean() - m.entropy_rate()) < 4 * se
    # Not vacuous: the uniform-row entropy rate (log k) is far off.
    assert abs(np.log(m.kept_per_row) - m.entropy_rate()) > 10 * se


def test_entropy_rate_limits():
    rates = [task(temperature=t).entropy_rate() for t in (3.0, 1.0, 0.3, 0.1, 0.01)]
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert rates[0] > 1.0 and rates[-1] < 1e-3
    assert task(temperature=1e6).entropy_rate() == pytest.approx(np.log(8), rel=1e-4)
    assert task(sparsity=0.9).entropy_rate() == 0.0        # k = 1


def loss_of(m, logits, y):
    """The mean loss over sequences, as the engine takes it."""
    return jnp.mean(m.losses(logits, y, {}))


def test_loss_on_true_conditional_is_entropy_rate():
    m = task(sparsity=0.5, temperature=0.7, test_size=2000)
    x, y = m.test_set(jnp.float32)
    logp = jnp.log(jnp.asarray(m.transition_matrix(), jnp.float32))     # -inf where P = 0
    logits = logp[x]                                                    # (B, T, V): the true conditional
    loss = float(loss_of(m, logits, y))
    assert np.isfinite(loss)
    per_seq = np.asarray(jax.vmap(lambda a, b: loss_of(m, a[None], b[None]))(logits, y))   # independent sequences
    se = per_seq.std(ddof=1) / np.sqrt(len(per_seq))
    np.testing.assert_allclose(per_seq.mean(), loss, rtol=1e-5)
    assert abs(loss - m.entropy_rate()) < 4 * se
    # Uniform logits give log V exactly, whatever the targets.
    np.testing.assert_allclose(float(loss_of(m, jnp.zeros(x.shape + (8,)), y)), np.log(8), rtol=1e-6)


def test_loss_bf16_in_float32():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(4, 16, 32)) * 3, jnp.bfloat16)
    y = jnp.asarray(rng.integers(0, 32, size=(4, 16)), jnp.int32)
    out = loss_of(task(), logits, y)
    assert out.dtype == jnp.float32
    f = np.asarray(logits.astype(jnp.float32), np.float64)
    ref = np.mean(np.log(np.exp(f).sum(-1)) - np.take_along_axis(f, np.asarray(y)[..., None], -1)[..., 0])
    np.testing.assert_allclose(float(out), ref, rtol=1e-5)


def test_train_batch_and_test_set():
    m = task(batch_size=16, context=10)
    key = jax.random.key(4)
    x, y = m.train_batch(key, jnp.asarray(7), {}, jnp.float32)
    assert x.shape == y.shape == (16, 10) and x.dtype == y.dtype == jnp.int32
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])                 # y is x shifted by one token
    x2, y2 = m.train_batch(key, jnp.asarray(7), {}, jnp.bfloat16)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x3, _ = m.train_batch(key, jnp.asarray(8), {}, jnp.float32)
    assert not np.array_equal(x, x3)
    x4, _ = m.train_batch(jax.random.key(5), jnp.asarray(7), {}, jnp.float32)
    assert not np.array_equal(x, x4)
    tx, ty = m.test_set(jnp.float32)
    assert tx.shape == ty.shape == (64, 10) and tx.dtype == ty.dtype == jnp.int32
    np.testing.assert_array_equal(tx[:, 1:], ty[:, :-1])
    # Fixed: the same on a fresh task object, and under jit; independent of the data key and batch size.
    tx2, ty2 = task(batch_size=3, context=10).test_set(jnp.float64)
    np.testing.assert_array_equal(tx, tx2)
    np.testing.assert_array_equal(ty, ty2)
    fresh = task(batch_size=16, context=10)
    tx3, _ = jax.jit(lambda: fresh.test_set(jnp.float32))()
    np.testing.assert_array_equal(tx, tx3)
    # Different from the training stream, also the one seeded like the chain.
    xs, _ = m.train_batch(jax.random.key(0), jnp.asarray(0), {}, jnp.float32)
    assert not np.array_equal(tx[:16], xs)
    assert not np.array_equal(tx[:16], x)
    assert m.init_input(jnp.float32).shape == (1, 10) and m.init_input(jnp.float32).dtype == jnp.int32


def test_jit_vmap_over_members():
    m = task(batch_size=8, context=12)
    seeds = jnp.arange(3)
    step = jnp.asarray(5)
    batched = jax.jit(jax.vmap(lambda s: m.train_batch(jax.random.key(s), step, {}, jnp.float32)))(seeds)
    assert batched[0].shape == (3, 8, 12) and batched[0].dtype == jnp.int32
    for i in range(3):
        x, y = m.train_batch(jax.random.key(i), step, {}, jnp.float32)
        np.testing.assert_array_equal(batched[0][i], x)
        np.testing.assert_array_equal(batched[1][i], y)
    assert not np.array_equal(batched[0][0], batched[0][1])
    # The test set inside a vmapped, jitted function (as the engine evaluates it).
    tx = jax.jit(jax.vmap(lambda s: m.test_set(jnp.float32)[0] + 0 * s))(seeds)
    np.testing.assert_array_equal(tx[2], m.test_set(jnp.float32)[0])


def test_test_bayes_loss_is_the_true_chains_loss_on_the_test_set():
    m = task(sparsity=0.5, temperature=0.7, test_size=48, context=20)
    p = m.transition_matrix()
    tx, ty = (np.asarray(a) for a in m.test_set(jnp.float32))
    total = 0.0
    for i in range(tx.shape[0]):                       # brute force, one position at a time
        for t in range(tx.shape[1]):
            total -= np.log(p[tx[i, t], ty[i, t]])
    bayes = m.test_bayes_loss()
    assert isinstance(bayes, float)
    assert bayes == pytest.approx(total / tx.size, rel=1e-12)
    # The positions are weighted as the engine's loss weights them: the loss of the true conditional.
    logits = jnp.log(jnp.asarray(p, jnp.float32))[tx]
    np.testing.assert_allclose(float(loss_of(m, logits, ty)), bayes, rtol=1e-5)


def test_test_bayes_loss_differs_from_entropy_rate_by_the_sampling_offset():
    # configs/transformer_markov.toml's CPU sizes: the offset is ~0.017 nats, consistent with sampling noise.
    m = task(vocab=32, context=32, test_size=128, sparsity=0.5, temperature=1.0)
    tx, ty = (np.asarray(a) for a in m.test_set(jnp.float32))
    per_seq = -np.log(m.transition_matrix()[tx, ty]).mean(axis=1)
    se = per_seq.std(ddof=1) / np.sqrt(len(per_seq))
    offset = m.test_bayes_loss() - m.entropy_rate()
    assert 0.01 < abs(offset) < 4 * se
    # A larger test set has a smaller offset (same chain, more sequences).
    assert abs(task(vocab=32, context=32, test_size=4096, sparsity=0.5).test_bayes_loss() - m.entropy_rate()) < abs(offset) / 3
