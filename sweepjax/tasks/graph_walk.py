"""Task ``graph-walk``: next-token prediction on random walks on a graph; the vocabulary is the nodes.

The graph (host, numpy; deterministic in ``task.graph_seed``)
    One generator, ``numpy.random.default_rng(graph_seed)``, draws the graph and then the neighbour ranks
    (below), so every member of a sweep, and every run with the same keys, sees the same graph. Graphs are
    simple and undirected (no self-loops, no repeated edges). Each is built once per process and key set
    (:func:`build_graph`, and with the bias :func:`build_walk`, both cached).

    * ``erdos-renyi``: G(n, M), n = ``task.nodes``, M = ``task.edges``: M distinct pairs {i, j}, i != j,
      uniformly among all n(n - 1)/2 (the first M distinct values of an i.i.d. uniform stream of pair indices;
      when M > n(n - 1)/4 the n(n - 1)/2 - M absent pairs are drawn that way instead). Then only the giant
      component is kept (the largest connected component; on a tie in size, the one holding the smallest
      node), its nodes relabelled 0..V-1 in their original order. The vocabulary V <= n and the edge count
      E <= M are the component's (:attr:`GraphWalk.vocab`, :attr:`GraphWalk.n_edges`); the model's
      vocabulary follows V. Far above the critical point M = n/2 the component is nearly everything (1000
      nodes and 5000 edges: V = 1000 for graph_seed 0); near or below it, much is lost (1000 nodes and 600
      edges: V = 354). M >= 1 always leaves V >= 2.
    * ``barabasi-albert``: preferential attachment, with the edge count matched: E = M exactly, V = n (the
      graph is connected). The attachment count m is the largest integer with E(m) = m n - m(m + 1)/2 <= M,
      E(m) being the edges of the standard model (a clique on nodes 0..m, then each of the n - m - 1 added
      nodes attaches m edges); the r = M - E(m) edges left over (0 <= r <= n - m - 1) go one each to r of the
      added nodes, spread evenly: the k-th added node (node m + 1 + k, k = 0..n-m-2) attaches m_k = m + 1
      edges when floor((k + 1) r / (n - m - 1)) > floor(k r / (n - m - 1)), else m. Added node t joins
      m_k distinct earlier nodes, each drawn with probability proportional to its current degree (uniform
      draws from the list of edge endpoints so far; a draw repeating an already chosen node is dropped).
      Needs M >= n - 1 (m >= 1: a tree); M <= n(n - 1)/2 gives m <= n - 1 (m = n - 1: the complete graph).
      At the same n and M its degrees are far more spread than Erdos-Renyi's (a power-law tail, ~d^-3).

The walk
    The bias kappa = ``task.bias`` >= 0 gives each node power-law (Zipf) transition weights over its
    neighbours: node i, of degree d_i, orders its neighbours by a uniformly random permutation (ranks
    r = 1..d_i, drawn from the generator right after the graph), and

        P(j | i) = r_ij^-kappa / Z_{d_i},    Z_d = sum_{r=1..d} r^-kappa.

    kappa = 0 is the unbiased walk, P(j | i) = 1 / d_i; the larger kappa, the more a node's first-ranked
    neighbours dominate (kappa = 1: weights 1, 1/2, 1/3, ...). The bias is structural: each value is its own
    compiled program (it changes the transition table and the floors). kappa <= 50 and n <= 2^20 keep every
    weight a normal float64 (>= 2^-1000), so the chain on the connected component stays irreducible.

    The stationary distribution pi: for kappa = 0 the walk is reversible and pi_i = d_i / 2E exactly; for
    kappa > 0 it is not, and pi is computed in float64 by power iteration of the lazy chain (P + I)/2 (the
    same pi, convergent on bipartite graphs too) from d / 2E until ||pi P - pi||_1 < 1e-13, or, when
    5000 iterations do not get there (a slowly mixing graph), by a sparse direct solve (scipy's SuperLU).
    The entropy rate H = sum_i pi_i H(P(. | i)), in nats per token, with
    H(P(. | i)) = ln Z_d + kappa sum_{r<=d} r^-kappa ln r / Z_d (d = d_i; ln d for kappa = 0, so that
    H = sum_i (d_i / 2E) ln d_i for the unbiased walk), is the task's ``irreducible_loss``. The fixed test
    set's own floor, ``test_bayes_loss``, is the true walk's loss on those very sequences (as for
    ``markov``); ``test_loss - test_bayes_loss`` is the reducible part of the reported test loss.

The data
    As for ``markov`` (:class:`sweepjax.tasks.markov.ChainTask`): a sequence has ``context + 1`` nodes,
    x_0 ~ pi (so the walk is stationary: every position has law pi), then x_{t+1} ~ P(. | x_t). Models see
    ``x = seq[:, :-1]`` and predict ``y = seq[:, 1:]`` (both (batch, context) int32), and the loss is the mean
    cross-entropy in nats over those ``context`` positions: x_0 has no context and is never predicted, so the
    loss is measured from the second position on. Walks are sampled on the device, with no V x V array: the
    graph as CSR (``offsets`` (V + 1,), ``neighbours`` (2E,) int32 in rank order within each node's row, and
    per entry the float32 cumulative weight Z_r / Z_d, exactly 1.0 at the end of each row); x_0 by inverse
    CDF over the float32 cumulative pi (exactly 1.0 at its end), then each step one uniform and a binary
    search within the current node's CSR row (ceil(log2 max degree) gathers), a ``lax.scan`` over the
    context with the batch vectorised. Transitions too rare to move a float32 cumulative sum (a mass below
    ~6e-8 per row, only at large kappa) are never drawn. Training batches are pure functions of (data key,
    step); the test set is ``test_size`` sequences drawn once from ``fold_in(key(graph_seed), 2**31 - 1)``,
    the same for every member.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property, lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.sparse.linalg import spsolve

from sweepjax.config import ConfigError, TaskConfig, axis
from sweepjax.tasks.markov import ChainTask, _cdf_rows, _search, _sequences

GRAPHS = ("erdos-renyi", "barabasi-albert")
PI_TOLERANCE = 1e-13       # ||pi P - pi||_1 at which the power iteration stops
PI_ITERATIONS = 5000       # power iterations before the sparse direct solve takes over


# ---- graphs (host) --------------------------------------------------------------------------------

def _distinct(draw, count: int) -> np.ndarray:
    """The first ``count`` distinct values of the i.i.d. stream ``draw(size)`` (int64 arrays), in order of
    first appearance: drawn in batches, dropping repeats, as one draw after another would."""
    got = np.empty(0, np.int64)
    while len(got) < count:
        need = count - len(got)
        stream = np.concatenate([got, draw(need + need // 8 + 8)])
        _, first = np.unique(stream, return_index=True)
        got = stream[np.sort(first)][:count]
    return got


def erdos_renyi(n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """G(n, M): ``m`` distinct undirected edges uniformly among the n(n-1)/2 pairs of n nodes, no self-loops;
    (M, 2) int64 rows (i, j) with i < j, sorted."""
    total = n * (n - 1) // 2
    draw = lambda size: rng.integers(0, total, size=size)
    if m <= total // 2:
        pairs = np.sort(_distinct(draw, m))
    else:   # dense: draw the absent pairs
        pairs = np.setdiff1d(np.arange(total, dtype=np.int64), _distinct(draw, total - m), assume_unique=True)
    starts = np.arange(n, dtype=np.int64)
    starts = starts * (2 * n - starts - 1) // 2            # index of pair (i, i + 1): pairs (a, b) with a < i
    i = np.searchsorted(starts, pairs, side="right") - 1
    return np.stack([i, pairs - starts[i] + i + 1], axis=1)


def attachment(n: int, edges: int) -> tuple[int, int]:
    """Barabasi-Albert's attachment count for ``edges`` edges on ``n`` nodes: (m, r), m the largest integer with
    E(m) = m n - m(m + 1)/2 <= edges and r = edges - E(m) the added nodes that attach m + 1 edges.
    ValueError when m would be < 1 (edges < n - 1)."""
    ms = np.arange(1, n, dtype=np.int64)
    m = int(np.searchsorted(ms * n - ms * (ms + 1) // 2, edges, side="right"))
    if m < 1:
        raise ValueError(f"{edges} edges on {n} nodes: Barabasi-Albert needs at least n - 1 = {n - 1}")
    return m, edges - (m * n - m * (m + 1) // 2)


def barabasi_albert(n: int, edges: int, rng: np.random.Generator) -> np.ndarray:
    """Preferential attachment with exactly ``edges`` edges (see the module docstring and :func:`attachment`):
    (edges, 2) int64 rows (i, j) with i < j, sorted."""
    m, r = attachment(n, edges)
    added = n - m - 1
    k = np.arange(added)
    per = m + ((k + 1) * r // max(added, 1) - k * r // max(added, 1))   # edges of each added node
    clique = np.stack(np.triu_indices(m + 1, 1), axis=1).astype(np.int64)
    ends = np.empty(2 * edges, np.int64)                    # endpoints so far: node i appears deg_i times
    ends[: clique.size] = clique.ravel()
    fill = clique.size
    out = [clique]
    for t, want in zip(range(m + 1, n), per):
        chosen = _distinct(lambda size: ends[rng.integers(0, fill, size=size)], int(want))
        ends[fill: fill + 2 * want] = np.concatenate([chosen, np.full(want, t)])
        fill += 2 * want
        out.append(np.stack([chosen, np.full(want, t)], axis=1))
    pairs = np.concatenate(out)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def giant_component(n: int, edges: np.ndarray) -> tuple[int, np.ndarray]:
    """(V, its edges): the largest connected component of the graph on ``n`` nodes (on a tie, the one with the
    smallest node), its nodes relabelled 0..V-1 in their original order."""
    adj = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    count, labels = connected_components(adj, directed=False)
    first = np.full(count, n)
    np.minimum.at(first, labels, np.arange(n))
    big = np.lexsort((first, -np.bincount(labels)))[0]
    keep = labels == big
    new = np.cumsum(keep) - 1
    return int(keep.sum()), new[edges[keep[edges[:, 0]]]]


@dataclass(frozen=True, eq=False)
class Graph:
    """A connected simple undirected graph as CSR, each node's neighbours in rank order (rank 1 first)."""
    edges: np.ndarray          # (E, 2) int64: undirected edges (i, j), i < j, sorted
    offsets: np.ndarray        # (V + 1,) int64: node i's neighbours are neighbours[offsets[i]:offsets[i + 1]]
    neighbours: np.ndarray     # (2E,) int32

    @property
    def nodes(self) -> int:
        """V, the number of nodes."""
        return len(self.offsets) - 1

    @property
    def n_edges(self) -> int:
        """E, the number of undirected edges."""
        return len(self.edges)

    @property
    def degrees(self) -> np.ndarray:
        """(V,) int64 node degrees."""
        return np.diff(self.offsets)

    @cached_property
    def _lookup(self) -> tuple[np.ndarray, np.ndarray]:
        rows = np.repeat(np.arange(self.nodes, dtype=np.int64), self.degrees)
        keys = rows * self.nodes + self.neighbours
        order = np.argsort(keys)
        return keys[order], order

    def entry(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """CSR index of the edge x -> y elementwise (int64), -1 where y is not a neighbour of x."""
        keys, order = self._lookup
        q = np.asarray(x, np.int64) * self.nodes + np.asarray(y, np.int64)
        at = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
        return np.where(keys[at] == q, order[at], -1)


@lru_cache(maxsize=8)
def build_graph(graph: str, nodes: int, edges: int, graph_seed: int) -> Graph:
    """The graph of the keys (module docstring), cached: its edges, then its CSR with ranks drawn from the same
    generator (a uniformly random order of each node's neighbours)."""
    rng = np.random.default_rng(graph_seed)
    if graph == "erdos-renyi":
        v, pairs = giant_component(nodes, erdos_renyi(nodes, edges, rng))
    elif graph == "barabasi-albert":
        v, pairs = nodes, barabasi_albert(nodes, edges, rng)
    else:
        raise ValueError(f"unknown graph {graph!r}; allowed: {', '.join(GRAPHS)}")
    src = np.concatenate([pairs[:, 0], pairs[:, 1]])
    dst = np.concatenate([pairs[:, 1], pairs[:, 0]])
    order = np.lexsort((rng.permutation(len(src)), src))      # by node, then in random rank order
    offsets = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=v))])
    return Graph(pairs, offsets, dst[order].astype(np.int32))


# ---- the walk (host, float64) -------------------------------------------------------------------

def _stationary(offsets: np.ndarray, neighbours: np.ndarray, p: np.ndarray, start: np.ndarray) -> np.ndarray:
    """pi with pi P = pi, sum 1, for P given as CSR probabilities ``p`` (module docstring: lazy power iteration
    from ``start``, then a sparse direct solve if it has not converged)."""
    v = len(offsets) - 1
    pt = sp.csr_matrix((p, neighbours, offsets), shape=(v, v)).T.tocsr()    # pi P = P^T pi
    pi = start
    for _ in range(PI_ITERATIONS):
        step = pt @ pi
        if np.abs(step - pi).sum() < PI_TOLERANCE:
            return pi
        pi = 0.5 * (pi + step)
        pi = pi / pi.sum()
    # (P^T - I) pi = 0 has rank V - 1 on a connected graph: replace its last (redundant) row by sum(pi) = 1.
    a = sp.vstack([(pt - sp.identity(v, format="csr"))[:-1], sp.csr_matrix(np.ones((1, v)))]).tocsc()
    b = np.zeros(v)
    b[-1] = 1.0
    pi = np.clip(spsolve(a, b), 0.0, None)
    pi = pi / pi.sum()
    if not np.abs(pt @ pi - pi).sum() < 1e-10:
        raise RuntimeError(f"stationary distribution of a {v}-node walk did not converge")
    return pi


@dataclass(frozen=True, eq=False)
class Walk:
    """The biased walk on a :class:`Graph`: per CSR entry its log-probability and float32 cumulative weight,
    the stationary distribution and the entropy rate."""
    graph: Graph
    bias: float
    log_p: np.ndarray          # (2E,) float64: ln P(neighbours[e] | the node whose row holds e)
    cdf: np.ndarray            # (2E,) float32: cumulative P within each row, exactly 1.0 at its end
    pi: np.ndarray             # (V,) float64 stationary distribution
    cdf0: np.ndarray           # (V,) float32 cumulative pi, exactly 1.0 at its end
    entropy_rate: float        # nats per token


@lru_cache(maxsize=8)
def build_walk(graph: str, nodes: int, edges: int, graph_seed: int, bias: float) -> Walk:
    """The walk of the keys on :func:`build_graph`'s graph with Zipf weights of exponent ``bias`` (cached)."""
    g = build_graph(graph, nodes, edges, graph_seed)
    deg = g.degrees
    log_w = -bias * np.log(np.arange(1, deg.max() + 1, dtype=np.float64))     # ln r^-kappa, r = 1..max degree
    w = np.exp(log_w)
    z = np.cumsum(w)                                                           # Z_d, d = 1..max degree
    row_entropy = np.log(z) - np.cumsum(w * log_w) / z                         # H(P(. | i)) by degree
    rows = np.repeat(np.arange(g.nodes), deg)
    rank = np.arange(len(g.neighbours)) - g.offsets[rows]                      # r - 1
    d = deg[rows]
    log_p = log_w[rank] - np.log(z[d - 1])
    cdf = (z[rank] / z[d - 1]).astype(np.float32)                              # Z_d / Z_d = 1 exactly at the end
    pi = deg / deg.sum()
    if bias > 0:
        pi = _stationary(g.offsets, g.neighbours, np.exp(log_p), pi)
    return Walk(g, bias, log_p, cdf, pi, _cdf_rows(pi), float(np.dot(pi, row_entropy[deg - 1])))


@partial(jax.jit, static_argnums=(5, 6, 7))
def _sample_walks(offsets: jax.Array, neighbours: jax.Array, cdf: jax.Array, cdf0: jax.Array, key: jax.Array,
                  n: int, t: int, max_degree: int) -> jax.Array:
    """n walks of t + 1 nodes, (n, t + 1) int32: x_0 from ``cdf0``, each step a binary search in the current
    node's CSR row of ``cdf``. Jitted so that eager calls compile once per shape; inlined under an outer jit."""
    def next_node(x, u):
        return neighbours[_search(lambda j: cdf[j], u, max_degree, offsets[x], offsets[x + 1] - 1)]

    return _sequences(cdf0, next_node, key, n, t)


# ---- the task -------------------------------------------------------------------------------------

@dataclass
class Keys(TaskConfig):
    """Config keys of ``graph-walk`` (batch_size and test_size count sequences)."""
    graph: str = "erdos-renyi"       # "erdos-renyi" (its giant component) or "barabasi-albert"
    nodes: int = 1000                # n: nodes drawn (the vocabulary is the giant component's, <= n)
    edges: int = 5000                # M: undirected edges drawn (Barabasi-Albert: exactly M)
    graph_seed: int = 0              # seed of the graph and the neighbour ranks (the same for every member)
    bias: float = 0.0                # kappa: P(j | i) proportional to rank_ij^-kappa; 0 = unbiased walk
    context: int = 100               # tokens the model sees per sequence (each sequence has context + 1 tokens)


class GraphWalk(ChainTask):
    """Next-token prediction on random walks on a graph (see the module docstring)."""
    Keys = Keys
    SEED_KEY = "graph_seed"
    STUDY = "sweepjax.analysis.language"
    CHOICES = {"task.graph": GRAPHS}
    MINIMUM = {"task.nodes": (2, True), "task.edges": (1, True), "task.graph_seed": (0, True),
               "task.bias": (0, True), "task.context": (1, True)}
    MAXIMUM = {"task.nodes": 2**20, "task.edges": 10**7, "task.bias": 50.0, "task.context": 2**16}

    @classmethod
    def check(cls, cfg) -> None:
        for graph, n, m in itertools.product(*(axis(cfg, f"task.{k}") for k in ("graph", "nodes", "edges"))):
            if m > n * (n - 1) // 2:
                raise ConfigError(f"task.edges = {m} with task.nodes = {n}: a graph without self-loops or repeated "
                                  f"edges has at most n(n - 1)/2 = {n * (n - 1) // 2}")
            if graph == "barabasi-albert" and m < n - 1:
                raise ConfigError(f"task.edges = {m} with task.graph = 'barabasi-albert' and task.nodes = {n}: the "
                                  f"attachment count would be < 1; Barabasi-Albert needs task.edges >= n - 1 = {n - 1}")

    def __init__(self, cfg: Keys):
        super().__init__(cfg)
        self._walk = build_walk(cfg.graph, int(cfg.nodes), int(cfg.edges), int(cfg.graph_seed), float(cfg.bias))
        self._test = None

    # ---- the graph and the walk (host) --------------------------------------------------------
    @property
    def graph(self) -> Graph:
        """The graph (shared with every task object of the same graph keys: do not modify its arrays)."""
        return self._walk.graph

    @property
    def vocab(self) -> int:
        """V: the graph's nodes (Erdos-Renyi: its giant component's, <= task.nodes)."""
        return self.graph.nodes

    @property
    def n_edges(self) -> int:
        """E: the graph's undirected edges (Erdos-Renyi: its giant component's, <= task.edges)."""
        return self.graph.n_edges

    def transition_matrix(self) -> sp.csr_matrix:
        """P as a sparse (V, V) float64 CSR matrix: P[i, j] = Pr(x_{t+1} = j | x_t = i); rows sum to 1."""
        g = self.graph
        return sp.csr_matrix((np.exp(self._walk.log_p), g.neighbours, g.offsets), shape=(g.nodes, g.nodes))

    def stationary(self) -> np.ndarray:
        """pi, (V,) float64: the stationary distribution, also the law of every x_t (a copy)."""
        return self._walk.pi.copy()

    def entropy_rate(self) -> float:
        """sum_i pi_i H(P(. | i)) in nats per token: the irreducible (Bayes-optimal) test loss."""
        return self._walk.entropy_rate

    def log_prob(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """ln P(y | x) elementwise (host, float64; -inf where y is not a neighbour of x)."""
        e = self.graph.entry(x, y)
        return np.where(e >= 0, self._walk.log_p[np.maximum(e, 0)], -np.inf)

    # ---- sampling (device) --------------------------------------------------------------------
    def sample(self, key: jax.Array, n: int) -> jax.Array:
        """n stationary walks, (n, context + 1) int32: x_0 ~ pi, x_{t+1} ~ P(. | x_t); jit/vmap-safe."""
        g, w = self.graph, self._walk
        return _sample_walks(jnp.asarray(g.offsets, jnp.int32), jnp.asarray(g.neighbours), jnp.asarray(w.cdf),
                             jnp.asarray(w.cdf0), key, n, self.context, int(g.degrees.max()))

    @classmethod
    def model_io(cls, keys: Keys) -> dict[str, int]:
        """The vocabulary is the graph's nodes (built, or taken from the cache, to know it)."""
        return {"vocab": build_graph(keys.graph, int(keys.nodes), int(keys.edges), int(keys.graph_seed)).nodes,
                "context": keys.context}
