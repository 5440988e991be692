"""Trained members as generators (issue 15): reloading a saved member bitwise (sweepjax.members) and sampling
sequences from it on the device (sweepjax.generate), checked against the generator's own probabilities."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import sweepjax
from sweepjax.config import build_config
from sweepjax.generate import generator_io, sample
from sweepjax.members import Member, load_member, member_model, parse_member
from sweepjax.models import dtypes, make_model
from sweepjax.tasks import make_task
from sweepjax.tasks.markov import _cdf_rows, _search

V, T = 8, 8


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny generator sweep (depth 1 and 2) saved with its parameters: (results directory, in-memory Dataset)."""
    out = tmp_path_factory.mktemp("generators")
    ds = sweepjax.run({
        "task": {"name": "markov", "vocab": V, "context": T, "batch_size": 32, "test_size": 64, "sparsity": 0.5},
        "model": {"family": "transformer", "width": 16, "heads": 2},
        "train": {"steps": 100, "chunk_steps": 100, "lr": 1e-2},
        "eval": {"save_params": True, "points": 2},
        "sweep": {"model.depth": [1, 2]},
    }, out=out, progress=False)
    return out, ds


def _probabilities(m, tokens: jax.Array, temperature: float = 1.0) -> np.ndarray:
    """The generator's next-token distributions on sampled tokens by ONE teacher-forced forward pass, (n, T, V)."""
    logits = m.apply(m.params, tokens[:, :-1]).astype(jnp.float32)
    return np.asarray(jax.nn.softmax(logits / temperature, axis=-1), np.float64)


def _grouped_chi2(tokens: np.ndarray, p: np.ndarray) -> tuple[float, int]:
    """Chi-square of the drawn next tokens against their probabilities ``p`` (n, T, V), the draws grouped by the
    previous token: per group, the counts minus the summed probabilities, in the metric of their covariance
    sum(diag(p) - p p^T) (the last token dropped: the counts sum to the group size). (statistic, dof)."""
    prev, nxt = tokens[:, :-1].ravel(), tokens[:, 1:].ravel()
    p = p.reshape(-1, p.shape[-1])
    stat, dof = 0.0, 0
    for g in np.unique(prev):
        pg, xg = p[prev == g], nxt[prev == g]
        d = (np.bincount(xg, minlength=p.shape[1]) - pg.sum(0))[:-1]
        cov = (np.diag(pg.sum(0)) - pg.T @ pg)[:-1, :-1]
        stat += float(d @ np.linalg.solve(cov, d))
        dof += len(d)
    return stat, dof


def test_a_saved_member_reloads_bitwise_and_reproduces_its_test_loss(trained):
    out, ds = trained
    disk = sweepjax.load(out)
    losses = {}
    for depth in (1, 2):
        m = load_member(out, depth=depth)
        assert m.coords == {"depth": depth} and m.sizes["depth"] == depth and m.padded["depth"] == 2
        flat = jax.tree_util.tree_flatten_with_path(m.params)[0]
        assert len(flat) == sum(1 for v in ds.data_vars if v.startswith("param.") and not v.startswith("param.init."))
        for path, leaf in flat:
            name = "param." + jax.tree_util.keystr(path, simple=True, separator=".")
            trained_value = ds[name].sel(depth=depth).values          # as the engine returned it, never on disk
            assert np.asarray(leaf).dtype == trained_value.dtype
            assert np.array_equal(np.asarray(leaf), trained_value), name
            assert np.array_equal(np.asarray(leaf), disk[name].sel(depth=depth).values), name
        task = make_task(m.config.task)
        x, y = task.test_set(jnp.float32)
        losses[depth] = float(jnp.mean(task.losses(m.apply(m.params, x), y, {})))
        np.testing.assert_allclose(losses[depth], float(ds.final_test_loss.sel(depth=depth)), rtol=1e-5)
    # the two generators differ by far more than the tolerance: a member mix-up would fail above
    assert abs(losses[1] - losses[2]) > 1e-3, losses
    # a saved generator samples exactly as the one in memory
    a = sample(load_member(out, **parse_member("depth=2")), jax.random.key(3), 16, T)
    b = sample(member_model(ds, depth=2), jax.random.key(3), 16, T)
    for u, v in zip(a, b):
        assert np.array_equal(np.asarray(u), np.asarray(v))


def test_sampled_tokens_follow_the_generators_probabilities(trained):
    out, _ = trained
    m = load_member(out, depth=2)
    key = jax.random.key(0)
    tokens, entropy, log_prob = sample(m, key, 2000, T)
    assert tokens.shape == (2000, T + 1) and tokens.dtype == jnp.int32
    assert entropy.shape == log_prob.shape == (2000, T) and entropy.dtype == log_prob.dtype == jnp.float32
    tokens = np.asarray(tokens)
    assert tokens.min() >= 0 and tokens.max() < V
    # step-by-step sampling saw the same distributions as one teacher-forced pass over the finished sequences
    p = _probabilities(m, jnp.asarray(tokens))
    drawn = np.take_along_axis(p, tokens[:, 1:, None], axis=2)[..., 0]
    np.testing.assert_allclose(np.asarray(log_prob), np.log(drawn), atol=2e-5)
    np.testing.assert_allclose(np.asarray(entropy), -np.sum(p * np.log(p), axis=-1), atol=2e-5)
    # every position, grouped by the previous token: the draws follow p (and not p at temperature 1 when hot)
    stat, dof = _grouped_chi2(tokens, p)
    assert stats.chi2.sf(stat, dof) > 1e-3, (stat, dof)
    hot = np.asarray(sample(m, key, 2000, T, temperature=2.0)[0])
    stat, dof = _grouped_chi2(hot, _probabilities(m, jnp.asarray(hot)))
    assert stats.chi2.sf(stat, dof) < 1e-6, (stat, dof)
    stat, dof = _grouped_chi2(hot, _probabilities(m, jnp.asarray(hot), temperature=2.0))
    assert stats.chi2.sf(stat, dof) > 1e-3, (stat, dof)
    # a fixed prefix: x_0 = i from a one-hot start, x_1 counted against the softmax at that prefix (Pearson)
    for i in (0, 5):
        start = np.eye(V)[i]
        cold, hot = (np.asarray(sample(m, jax.random.key(i + 1), 4000, 1, temperature=t, start=start)[0])
                     for t in (1.0, 2.0))
        assert np.all(cold[:, 0] == i)
        q = np.asarray(jax.nn.softmax(m.apply(m.params, jnp.full((1, 1), i, jnp.int32))[0, 0]), np.float64)
        q = q / q.sum()
        assert stats.chisquare(np.bincount(cold[:, 1], minlength=V), 4000 * q).pvalue > 1e-3
        assert stats.chisquare(np.bincount(hot[:, 1], minlength=V), 4000 * q).pvalue < 1e-6


def test_mean_surprisal_matches_mean_entropy_and_sampling_is_reproducible(trained):
    out, _ = trained
    m = load_member(out, depth=1)
    key = jax.random.key(7)
    for temperature in (1.0, 0.5):
        _, entropy, log_prob = (np.asarray(a, np.float64) for a in sample(m, key, 3000, T, temperature))
        per_sequence = np.mean(-log_prob - entropy, axis=1)              # independent across sequences
        se = per_sequence.std(ddof=1) / np.sqrt(len(per_sequence))
        assert abs(per_sequence.mean()) < 4 * se, (temperature, per_sequence.mean(), se)
    # the floor estimate lies between 0 and ln V, and a colder generator has less entropy
    floor = float(np.mean(sample(m, key, 3000, T)[1]))
    assert 0 < float(np.mean(entropy)) < floor < np.log(V)
    # sequence i depends on (key, i) alone: not on n nor on the chunking
    full = sample(m, key, 30, T)
    chunked = sample(m, key, 30, T, chunk=7)
    first = sample(m, key, 10, T)
    for a, b, c in zip(full, chunked, first):
        assert np.array_equal(np.asarray(a), np.asarray(b)) and np.array_equal(np.asarray(a)[:10], np.asarray(c))
    assert not np.array_equal(np.asarray(full[0]), np.asarray(sample(m, jax.random.key(8), 30, T)[0]))


def test_bad_selectors_and_requests_are_refused(trained):
    out, ds = trained
    assert parse_member("depth=2, seed = 0") == {"depth": "2", "seed": "0"} and parse_member(" ") == {}
    with pytest.raises(ValueError, match="expected dim=value"):
        parse_member("depth2")
    with pytest.raises(ValueError, match="given twice"):
        parse_member("depth=1,depth=2")
    with pytest.raises(ValueError, match=r"ambiguous.*depth: \[1, 2\]"):
        load_member(out)
    with pytest.raises(ValueError, match=r"not a coordinate.*\[1, 2\]"):
        load_member(out, depth=3)
    with pytest.raises(ValueError, match=r"not sweep dims.*depth: \[1, 2\]"):
        load_member(out, depth=1, width=16)
    with pytest.raises(ValueError, match="save_params"):
        load_member(ds.drop_vars([v for v in ds.data_vars if v.startswith("param.")]), depth=1)
    with pytest.raises(FileNotFoundError):
        load_member(out / "nothing", depth=1)
    m = load_member(out, **parse_member("depth=1"))
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=f"trained on {T} positions"):
        sample(m, key, 4, T + 1)
    with pytest.raises(ValueError, match="trained on"):
        sample(m, key, 4, 0)
    with pytest.raises(ValueError, match="temperature"):
        sample(m, key, 4, T, temperature=0.0)
    with pytest.raises(ValueError, match="start"):
        sample(m, key, 4, T, start=np.ones(V + 1))
    with pytest.raises(ValueError, match="start"):
        sample(m, key, 4, T, start=np.zeros(V))
    # a shorter context is allowed: the generator sees only positions it was trained on
    tokens, entropy, _ = sample(m, key, 4, 3)
    assert tokens.shape == (4, 4) and entropy.shape == (4, 3)


# ---- the key/value cache --------------------------------------------------------------------------------------

SMALL = {"width": 8, "depth": 1, "heads": 2, "head_dim": 4, "mlp_hidden": 16}
PADDED = {"width": 16, "depth": 3, "heads": 4, "head_dim": 8, "mlp_hidden": 48}


def _initialised(model: dict, sizes: dict = SMALL, padded: dict = PADDED, precision: str = "float32") -> Member:
    """A member at initialisation (as the engine draws it): ``sizes`` inside a module padded to ``padded``."""
    cfg = build_config({"task": {"name": "markov", "vocab": V, "context": T},
                        "model": {"family": "transformer", "width": sizes["width"], "heads": sizes["heads"],
                                  "depth": sizes["depth"], "mlp_ratio": sizes["mlp_hidden"] // sizes["width"], **model},
                        "train": {"precision": precision}, "sweep": {}})
    module = make_model(cfg, padded)
    s = {k: jnp.int32(v) for k, v in sizes.items()}
    params = module.init({"params": jax.random.key(1)}, jnp.zeros((1, T), jnp.int32), s)["params"]
    return Member({}, cfg, sizes, padded, module, params)


def _decoded(m: Member, tokens: jax.Array) -> jax.Array:
    """Logits (B, T, V) of ``tokens`` decoded one position at a time through the cache (no sampling)."""
    step = jax.jit(lambda x, cache, t: m.apply(m.params, x[:, None], cache=cache, position=t))
    cache, out = m.model.empty_cache(tokens.shape[0], tokens.shape[1]), []
    for t in range(tokens.shape[1]):
        logits, cache = step(tokens[:, t], cache, t)
        out.append(logits[:, 0])
    return jnp.stack(out, 1)


CACHED = {   # id -> (model keys, precision, tolerance): every feature the module has, padded in width, heads,
    # head dim, MLP and depth (1 of 3 layers), muP at width 8 = 2 x base_width (factors 2, 1/2)
    "learned-none-sp": ({}, "float32", 1e-5),
    "learned-layernorm-mup-gelu": ({"norm": "layernorm", "parameterization": "mup", "base_width": 4,
                                    "activation": "gelu"}, "float32", 1e-5),
    "rotary-rmsnorm-mup-tied-inv-sqrt": ({"norm": "rmsnorm", "positions": "rotary", "tie_embeddings": True,
                                          "parameterization": "mup", "base_width": 4, "depth_scaling": "inv_sqrt"},
                                         "float32", 1e-5),
    "rotary-none-sp-tied": ({"positions": "rotary", "tie_embeddings": True}, "float32", 1e-5),
    "rotary-layernorm-bf16": ({"norm": "layernorm", "positions": "rotary"}, "bf16", 5e-3),
    "learned-rmsnorm-float64": ({"norm": "rmsnorm", "parameterization": "mup", "base_width": 4}, "float64", 1e-12),
}


@pytest.mark.parametrize("case", CACHED.values(), ids=CACHED.keys())
def test_cached_decoding_equals_the_full_forward(case):
    """Decoding one position at a time through the cache gives the full forward's logits at every position,
    for a member padded in every size (depth too), both position kinds, every norm, sp and muP, tied embeddings."""
    model, precision, tol = case
    with jax.enable_x64(precision == "float64"):
        for sizes in (SMALL, {"width": 8, "depth": 2, "heads": 1, "head_dim": 8, "mlp_hidden": 8}):
            m = _initialised(model, sizes, precision=precision)
            tokens = jax.random.randint(jax.random.key(2), (5, T), 0, V)
            full, cached = m.apply(m.params, tokens), _decoded(m, tokens)
            assert cached.dtype == full.dtype == dtypes(m.config)[0]
            assert float(jnp.std(full)) > 0.1                                   # logits that are not trivially equal
            np.testing.assert_allclose(np.asarray(cached), np.asarray(full), rtol=tol, atol=tol)
            if sizes is SMALL and precision == "float32":   # a member alone equals itself padded, through the cache too
                alone = _decoded(_initialised(model, sizes, sizes), tokens)
                np.testing.assert_allclose(np.asarray(alone), np.asarray(cached), rtol=1e-5, atol=1e-5)


def _sample_without_cache(member: Member, key: jax.Array, n: int, context: int, temperature: float = 1.0):
    """The sampler as it was before the cache (the reference; benchmarks/sampling.py times it too): the full
    forward pass on the (n, context) token buffer at every position, read at t. x_0 uniform."""
    v = generator_io(member)["vocab"]

    @jax.jit
    def generate(params, index):
        cdf0 = jnp.asarray(_cdf_rows(np.ones(v) / v))
        u = jax.vmap(lambda i: jax.random.uniform(jax.random.fold_in(key, i), (context + 1,), jnp.float32))(index)
        x0 = _search(lambda j: cdf0[j], u[:, 0], v)
        tokens = jnp.zeros((index.shape[0], context + 1), jnp.int32).at[:, 0].set(x0)

        def step(tokens, tu):
            t, ut = tu
            logits = member.apply(params, tokens[:, :context])
            lp = jax.nn.log_softmax(jnp.take(logits, t, axis=1).astype(jnp.float32) / temperature, axis=-1)
            p = jnp.exp(lp)
            cdf = _cdf_rows(p)
            nxt = _search(lambda j: jnp.take_along_axis(cdf, j[:, None], axis=1)[:, 0], ut, v)
            entropy = -jnp.sum(jnp.where(p > 0, p * lp, 0.0), axis=-1)
            log_prob = jnp.take_along_axis(lp, nxt[:, None], axis=1)[:, 0]
            return tokens.at[:, t + 1].set(nxt), (entropy, log_prob)

        tokens, (entropy, log_prob) = jax.lax.scan(step, tokens, (jnp.arange(context), u[:, 1:].T))
        return tokens, entropy.T, log_prob.T

    return tuple(np.asarray(a) for a in generate(member.params, jnp.arange(n)))


def test_cached_sampler_draws_what_the_full_forward_sampler_draws(trained):
    """The cached sampler against the full-forward one it replaced, on the trained generators (depth 1 padded to
    depth 2, and depth 2), a rotary one and a shorter context: the same tokens but where a uniform falls within
    rounding of a CDF boundary, and where the prefixes agree the same entropies and log-probabilities."""
    out, _ = trained
    members = [(load_member(out, depth=d), T, 1.0) for d in (1, 2)] + [(load_member(out, depth=2), 5, 0.7)]
    members.append((_initialised({"positions": "rotary", "norm": "rmsnorm"}), T, 1.0))
    key = jax.random.key(11)
    for m, context, temperature in members:
        n = 400
        tokens, entropy, log_prob = (np.asarray(a) for a in sample(m, key, n, context, temperature))
        ref_tokens, ref_entropy, ref_log_prob = _sample_without_cache(m, key, n, context, temperature)
        assert tokens.shape == ref_tokens.shape == (n, context + 1)
        assert np.mean(tokens == ref_tokens) >= 0.999, np.mean(tokens == ref_tokens)
        same = np.cumprod(tokens == ref_tokens, axis=1).astype(bool)     # the prefix x_0..x_t agrees
        assert same[:, -1].mean() >= 0.99
        np.testing.assert_allclose(entropy[same[:, :-1]], ref_entropy[same[:, :-1]], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(log_prob[same[:, 1:]], ref_log_prob[same[:, 1:]], rtol=1e-5, atol=1e-5)



def test_a_cache_refuses_what_it_would_otherwise_clamp():
    """Positions past the cache or past learned positions, and probes, are refused instead of being clamped by
    XLA (which would reuse the last slot or position embedding silently)."""
    learned, rotary = _initialised({}), _initialised({"positions": "rotary"})
    x = jnp.zeros((2, 1), jnp.int32)
    with pytest.raises(ValueError, match="learned positions only go to 8"):
        learned.apply(learned.params, x, cache=learned.model.empty_cache(2, T + 4), position=0)
    for position, tokens in ((4, x), (0, jnp.zeros((2, 5), jnp.int32))):
        with pytest.raises(ValueError, match="do not fit a cache of 4 positions"):
            rotary.apply(rotary.params, tokens, cache=rotary.model.empty_cache(2, 4), position=position)
    with pytest.raises(ValueError, match="probes"):
        rotary.apply(rotary.params, x, cache=rotary.model.empty_cache(2, 4), position=0, probes=True)
    logits, _ = rotary.apply(rotary.params, x, cache=rotary.model.empty_cache(2, 4), position=3)   # the last slot
    assert logits.shape == (2, 1, V)
