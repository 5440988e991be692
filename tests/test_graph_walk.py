"""The graph-walk task: graph construction, the device sampler against P and pi, the entropy rate, a sweep."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.sparse.csgraph import connected_components
import scipy.sparse as sp

from sweepjax.config import ConfigError, build_config
from sweepjax.run import run_sweep
from sweepjax.tasks.graph_walk import (GraphWalk, Keys, attachment, barabasi_albert, build_graph, build_walk,
                                       erdos_renyi)


def task(**kw) -> GraphWalk:
    base = {"name": "graph-walk", "nodes": 200, "edges": 1000, "context": 32, "batch_size": 16, "test_size": 32}
    return GraphWalk(Keys(**{**base, **kw}))


def simple(edges: np.ndarray, n: int) -> None:
    """Asserts: (i, j) rows with 0 <= i < j < n, no repeats."""
    assert edges.ndim == 2 and edges.shape[1] == 2
    assert np.all(edges[:, 0] < edges[:, 1]) and edges.min() >= 0 and edges.max() < n
    assert len(np.unique(edges[:, 0] * n + edges[:, 1])) == len(edges)


def connected(g) -> bool:
    adj = sp.csr_matrix((np.ones(len(g.neighbours)), g.neighbours, g.offsets), shape=(g.nodes, g.nodes))
    return connected_components(adj, directed=False)[0] == 1


# ---- graphs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("n,m", [(200, 1000), (12, 60), (12, 66), (2, 1)])   # sparse, dense (absent pairs drawn), complete
def test_erdos_renyi_edges_exact_and_simple(n, m):
    edges = erdos_renyi(n, m, np.random.default_rng(0))
    assert len(edges) == m
    simple(edges, n)


def test_erdos_renyi_is_uniform_over_pairs():
    # 5 nodes, 10 pairs: each pair is an edge with probability M / 10, in the sparse and the dense branch.
    for m in (3, 8):
        rng = np.random.default_rng(1)
        counts = np.zeros(10)
        for _ in range(1000):
            e = erdos_renyi(5, m, rng)
            i, j = e[:, 0], e[:, 1]
            np.add.at(counts, i * (9 - i) // 2 + j - i - 1, 1)
        assert stats.chisquare(counts, np.full(10, 1000 * m / 10)).pvalue > 1e-3


def test_erdos_renyi_keeps_the_giant_component():
    g = build_graph("erdos-renyi", 1000, 600, 0)                 # below-average degree: many components
    simple(g.edges, g.nodes)
    assert connected(g) and 2 <= g.nodes < 1000 and g.n_edges < 600
    # The largest component of the very graph drawn, with its edges.
    edges = erdos_renyi(1000, 600, np.random.default_rng(0))
    _, labels = connected_components(sp.coo_matrix((np.ones(600), edges.T), shape=(1000, 1000)), directed=False)
    sizes = np.bincount(labels)
    assert g.nodes == sizes.max() and g.n_edges == np.sum(labels[edges[:, 0]] == np.argmax(sizes))
    np.testing.assert_array_equal(np.bincount(g.edges.ravel(), minlength=g.nodes), g.degrees)
    # Far above the threshold nothing is lost; the vocabulary follows the component.
    dense = task(nodes=1000, edges=5000)
    assert dense.vocab == 1000 and dense.n_edges == 5000
    small = task(nodes=1000, edges=600)
    assert small.vocab == g.nodes and GraphWalk.model_io(small.cfg) == {"vocab": g.nodes, "context": 32}


@pytest.mark.parametrize("n,m", [(1000, 5000), (50, 49), (30, 435), (12, 20), (200, 1000)])
def test_barabasi_albert_edge_count(n, m):
    k, r = attachment(n, m)
    assert k * n - k * (k + 1) // 2 + r == m and 0 <= r <= n - k - 1 and 1 <= k <= n - 1
    g = build_graph("barabasi-albert", n, m, 0)
    assert g.nodes == n and g.n_edges == m and connected(g)
    simple(g.edges, n)
    assert g.degrees.min() >= k                                  # every added node attached at least m edges
    edges = barabasi_albert(n, m, np.random.default_rng(0))
    np.testing.assert_array_equal(edges, g.edges)
    assert attachment(1000, 5000) == (5, 15) and attachment(50, 49) == (1, 0) and attachment(30, 435) == (29, 0)
    with pytest.raises(ValueError):
        attachment(50, 48)


def test_barabasi_albert_heavier_tailed_than_erdos_renyi():
    er, ba = (build_graph(kind, 2000, 10000, 3) for kind in ("erdos-renyi", "barabasi-albert"))
    assert er.n_edges == ba.n_edges == 10000 and er.nodes == ba.nodes == 2000
    d_er, d_ba = er.degrees, ba.degrees
    assert d_ba.max() > 4 * d_er.max()
    assert d_ba.var() > 5 * d_er.var()
    assert np.mean(d_ba >= 30) > 0.02 > np.mean(d_er >= 30)


@pytest.mark.parametrize("kind", ["erdos-renyi", "barabasi-albert"])
def test_graph_is_determined_by_its_keys(kind):
    g = build_graph(kind, 300, 1200, 5)
    build_graph.cache_clear()                                   # really rebuilt
    again = build_graph(kind, 300, 1200, 5)
    assert again is not g
    for name in ("edges", "offsets", "neighbours"):
        np.testing.assert_array_equal(getattr(again, name), getattr(g, name))
    other = build_graph(kind, 300, 1200, 6)
    assert not np.array_equal(other.edges, g.edges)
    # Neighbours are in a random rank order, not sorted.
    rows = np.split(g.neighbours, g.offsets[1:-1])
    assert np.mean([np.all(np.diff(r) > 0) for r in rows if len(r) > 3]) < 0.1
    a, b = task(graph=kind, nodes=300, edges=1200, graph_seed=5, bias=1.0), task(graph=kind, nodes=300, edges=1200,
                                                                                   graph_seed=5, bias=1.0, context=7)
    assert a.entropy_rate() == b.entropy_rate()
    np.testing.assert_array_equal(a.stationary(), b.stationary())


# ---- the walk -----------------------------------------------------------------------------------

def dense_stationary(p: np.ndarray) -> np.ndarray:
    """pi P = pi, sum 1, by a dense LU solve with the last (redundant) equation replaced by the sum."""
    a = p.T - np.eye(len(p))
    a[-1] = 1.0
    b = np.zeros(len(p))
    b[-1] = 1.0
    return np.linalg.solve(a, b)


def dense_entropy_rate(p: np.ndarray, pi: np.ndarray) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(pi @ -np.sum(np.where(p > 0, p * np.log(p), 0.0), axis=1))


@pytest.mark.parametrize("kind,n,m", [("erdos-renyi", 200, 1000), ("barabasi-albert", 200, 1000),
                                      ("erdos-renyi", 1000, 600)])   # a slowly mixing tree-like component
@pytest.mark.parametrize("bias", [0.0, 1.0, 2.5])
def test_transitions_stationary_and_entropy_rate(kind, n, m, bias):
    t = task(graph=kind, nodes=n, edges=m, bias=bias)
    g, p = t.graph, t.transition_matrix()
    assert sp.issparse(p) and p.shape == (t.vocab, t.vocab)
    p = p.toarray()
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-12)
    # Zipf weights over each node's neighbours, in rank order; nonzero exactly on the edges.
    assert np.array_equal(p > 0, p.T > 0) and (p > 0).sum() == 2 * g.n_edges and np.all(np.diag(p) == 0)
    for i in range(0, t.vocab, 17):
        row = p[i, g.neighbours[g.offsets[i]:g.offsets[i + 1]]]
        w = np.arange(1, len(row) + 1, dtype=float) ** -bias
        np.testing.assert_allclose(row, w / w.sum(), rtol=1e-12)
    pi = t.stationary()
    assert np.all(pi > 0) and abs(pi.sum() - 1) < 1e-12
    np.testing.assert_allclose(pi @ p, pi, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(pi, dense_stationary(p), rtol=1e-8)  # 1000-600 at kappa 2.5: condition number 4e7
    assert t.entropy_rate() == pytest.approx(dense_entropy_rate(p, pi), rel=1e-12)
    if bias == 0:   # the unbiased walk: pi = deg / 2E and H = sum_i (deg_i / 2E) ln deg_i
        deg = g.degrees
        np.testing.assert_allclose(dense_stationary(p), deg / (2 * g.n_edges), rtol=1e-9)
        assert t.entropy_rate() == pytest.approx(np.sum(deg / (2 * g.n_edges) * np.log(deg)), rel=1e-12)
    # The host log-probability agrees with P, on edges and off them.
    x, y = np.nonzero(p)
    np.testing.assert_allclose(t.log_prob(x, y), np.log(p[x, y]), rtol=1e-12)
    assert np.all(t.log_prob(np.arange(t.vocab), np.arange(t.vocab)) == -np.inf)


def test_bias_lowers_the_entropy_rate():
    rates = [task(nodes=500, edges=3000, bias=k).entropy_rate() for k in (0.0, 0.5, 1.0, 2.0, 8.0)]
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert rates[-1] < 0.05 < 1.0 < rates[0]


def min_bonferroni_p(seqs: np.ndarray, t: GraphWalk, rows: np.ndarray) -> float:
    """Smallest Bonferroni-corrected chi-square p-value over the transitions out of ``rows`` and the law of x_0."""
    g, p = t.graph, t.transition_matrix()
    x, y = seqs[:, :-1].ravel(), seqs[:, 1:].ravel()
    assert np.all(t.graph.entry(x, y) >= 0), "a non-edge was walked"
    pvals = []
    for i in rows:
        nbrs = g.neighbours[g.offsets[i]:g.offsets[i + 1]]
        counts = np.bincount(np.searchsorted(np.sort(nbrs), y[x == i]), minlength=len(nbrs))
        expected = p[i, np.sort(nbrs)].toarray().ravel() * counts.sum()
        pvals.append(stats.chisquare(counts, expected).pvalue)
    pi = t.stationary()
    pvals.append(stats.chisquare(np.bincount(seqs[:, 0], minlength=t.vocab), pi * len(seqs)).pvalue)
    return min(pvals) * len(pvals)


@pytest.mark.parametrize("kind,bias", [("erdos-renyi", 0.0), ("erdos-renyi", 1.0), ("barabasi-albert", 1.0)])
def test_sampler_matches_transitions_and_pi_chi_square(kind, bias):
    t = task(graph=kind, nodes=100, edges=400, bias=bias, context=40)
    seqs = np.asarray(jax.jit(lambda k: t.sample(k, 10000))(jax.random.key(3)))
    assert seqs.shape == (10000, 41) and seqs.dtype == np.int32
    rows = np.argsort(-t.stationary())[:6]                            # the most visited nodes
    assert min_bonferroni_p(seqs, t, rows) > 1e-3
    # The test has power: the same walks checked against another bias are rejected.
    with pytest.raises(AssertionError):
        assert min_bonferroni_p(seqs, task(graph=kind, nodes=100, edges=400, bias=0.5), rows) > 1e-3


@pytest.mark.parametrize("kind,bias", [("erdos-renyi", 1.0), ("barabasi-albert", 0.0)])
def test_entropy_rate_monte_carlo_on_20k_nodes(kind, bias):
    t = task(graph=kind, nodes=20000, edges=100000, bias=bias, context=64)
    seqs = np.asarray(t.sample(jax.random.key(11), 2000))
    nll = -t.log_prob(seqs[:, :-1], seqs[:, 1:]).mean(axis=1)         # per walk; walks are independent
    se = nll.std(ddof=1) / np.sqrt(len(nll))
    assert abs(nll.mean() - t.entropy_rate()) < 4 * se
    # First nodes follow pi (grouped by degree: 20k nodes are too many for one cell each).
    deg, pi = t.graph.degrees, t.stationary()
    bins = np.unique(np.quantile(deg, np.linspace(0, 1, 9)[1:-1]))
    groups = np.unique(np.searchsorted(bins, deg, side="right"), return_inverse=True)[1]
    observed = np.bincount(groups[seqs[:, 0]], minlength=groups.max() + 1)
    assert stats.chisquare(observed, np.bincount(groups, weights=pi) * len(seqs)).pvalue > 1e-3


def test_50k_nodes_2m_edges_build_and_sample():
    """The largest rung of PAPERS.md section 4 fits: CSR only (no V x V array), sampled on device."""
    w = build_walk("erdos-renyi", 50000, 2000000, 0, 1.0)
    g = w.graph
    assert g.nodes == 50000 and g.n_edges == 2000000 and w.cdf.shape == w.log_p.shape == (4000000,)
    t = task(nodes=50000, edges=2000000, bias=1.0, context=16)
    seqs = np.asarray(t.sample(jax.random.key(0), 64))
    assert np.all(np.isfinite(t.log_prob(seqs[:, :-1], seqs[:, 1:])))
    assert 3.0 < t.entropy_rate() < np.log(50000)


# ---- data, config and a sweep -------------------------------------------------------------------

def test_train_batch_and_test_set():
    t = task(context=10)
    x, y = t.train_batch(jax.random.key(4), jnp.asarray(7), {}, jnp.float32)
    assert x.shape == y.shape == (16, 10) and x.dtype == y.dtype == jnp.int32
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    assert not np.array_equal(x, t.train_batch(jax.random.key(4), jnp.asarray(8), {}, jnp.float32)[0])
    ex, ey = t.examples(jax.random.split(jax.random.key(4), 3), {}, jnp.float32)    # fixed training sets
    assert ex.shape == ey.shape == (3, 10) and np.array_equal(ex[:, 1:], ey[:, :-1])
    tx, ty = t.test_set(jnp.float32)
    assert tx.shape == (32, 10)
    # Fixed by graph_seed alone: a fresh task with another batch size draws the same.
    np.testing.assert_array_equal(task(context=10, batch_size=3).test_set(jnp.float32)[0], tx)
    assert not np.array_equal(task(context=10, graph_seed=1).test_set(jnp.float32)[0], tx)
    xs, ys = (np.asarray(a) for a in (tx, ty))
    assert t.test_bayes_loss() == pytest.approx(-np.mean(np.log(t.transition_matrix().toarray()[xs, ys])), rel=1e-12)
    assert t.floors() == {"irreducible_loss": t.entropy_rate(), "test_bayes_loss": t.test_bayes_loss()}


def graph_config(sweep: dict | None = None, **task_keys):
    raw = {"task": {"name": "graph-walk", "nodes": 40, "edges": 120, "context": 8, "batch_size": 16,
                    "test_size": 32, **task_keys},
           "model": {"family": "transformer", "width": 16, "heads": 2},
           "train": {"steps": 150, "chunk_steps": 150, "lr": 1e-2}, "eval": {"points": 2}, "sweep": sweep or {}}
    return build_config(raw)


@pytest.mark.parametrize("keys,message", [
    ({"edges": 781}, "task.edges = 781 with task.nodes = 40: a graph without self-loops or repeated edges has at "
                     "most n(n - 1)/2 = 780"),
    ({"graph": "barabasi-albert", "edges": 38}, "task.edges = 38 with task.graph = 'barabasi-albert' and task.nodes = 40:"
                                                " the attachment count would be < 1"),
    ({"nodes": 1, "edges": 1}, "task.nodes = 1"),
    ({"edges": 0}, "task.edges = 0"),
    ({"bias": -0.5}, "task.bias = -0.5"),
    ({"graph": "lattice"}, "task.graph = 'lattice'"),
])
def test_bad_keys_are_refused(keys, message):
    with pytest.raises(ConfigError) as err:
        graph_config(**keys)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_sweep_learns_the_walk_and_stores_its_floors():
    cfg = graph_config({"seed": [0, 1]}, bias=1.0)
    ds = run_sweep(cfg, log=None)[0]
    t = GraphWalk(cfg.task)
    assert float(ds["irreducible_loss"]) == t.entropy_rate() and float(ds["test_bayes_loss"]) == t.test_bayes_loss()
    final = ds["final_test_loss"].values
    assert final.shape == (2,) and final[0] != final[1]
    assert np.all(final >= t.test_bayes_loss() - 0.01)
    assert np.all(final < np.log(t.vocab) - 1.0)       # far below a uniform guess over the nodes
