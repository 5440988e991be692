"""The stdlib-docstring corpus (sweepjax.corpus) and the ``text`` task's sources (issue 15)."""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from scipy import stats

import sweepjax
from sweepjax import corpus
from sweepjax.config import ConfigError, build_config
from sweepjax.generate import sample
from sweepjax.members import load_member
from sweepjax.run import run
from sweepjax.tasks.text import BigramSource, CorpusSource, SampledSource, Text, bigram_chain, window_counts


def text_task(**keys) -> Text:
    raw = {"task": {"name": "text", "context": 16, "batch_size": 8, "test_size": 64, **keys},
           "model": {"family": "transformer"}, "train": {"steps": 10}}
    return Text(build_config(raw).task)


def test_corpus_build_is_deterministic(tmp_path, monkeypatch):
    """Built from the stdlib into an empty cache, then read back from that cache: the same bytes as this
    process's corpus (cached in memory)."""
    data = corpus.build_corpus()
    first = hashlib.sha256(data).hexdigest()
    path = tmp_path / "corpus.bin"
    built = corpus.load_or_build(path)                  # parsed from the stdlib, then cached on disk
    assert hashlib.sha256(built).hexdigest() == first and path.is_file()
    assert hashlib.sha256(corpus.load_or_build(path)).hexdigest() == first     # read back from the disk cache
    info = corpus.corpus_info()
    assert info["corpus_sha256"] == first and info["corpus_bytes"] == len(data)
    assert 1_000_000 < len(data) < 3_000_000 and 5000 < info["corpus_documents"] < 12000
    assert info["corpus_documents"] == data.count(corpus.SEPARATOR) == len(corpus.documents())
    # The disk cache is under $XDG_CACHE_HOME, one file per interpreter.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert corpus.cache_path().parent == tmp_path / "sweepjax" and corpus.cache_path().name.startswith("corpus-")


def test_corrupted_cache_is_detected_and_rebuilt(tmp_path, monkeypatch):
    builds = []
    monkeypatch.setattr(corpus, "build", lambda: builds.append(1) or b"doc one\x00doc two\x00")
    path = tmp_path / "sub" / "corpus.bin"
    assert corpus.load_or_build(path) == b"doc one\x00doc two\x00" and len(builds) == 1
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 1                                       # one flipped bit in the cached corpus
    path.write_bytes(bytes(blob))
    assert corpus.load_or_build(path) == b"doc one\x00doc two\x00" and len(builds) == 2   # detected: rebuilt
    assert path.read_bytes() != bytes(blob)            # and rewritten
    assert corpus.load_or_build(path) == b"doc one\x00doc two\x00" and len(builds) == 2   # the intact file is used
    path.write_bytes(path.read_bytes()[:-4])            # truncated
    assert corpus.load_or_build(path) == b"doc one\x00doc two\x00" and len(builds) == 3
    path.write_bytes(b"garbage")                       # no header at all
    assert corpus.load_or_build(path) == b"doc one\x00doc two\x00" and len(builds) == 4


def test_documents_are_docstrings_parsed_not_imported():
    source = b'"""Module doc."""\nimport sys\nsys.exit(3)\nclass A:\n    """Class doc.\n\n    More."""\n' \
             b'    def f(self):\n        """  """\n    async def g(self):\n        """Async doc \\x00 here."""\n'
    assert corpus.docstrings(source) == ["Module doc.", "Class doc.\n\nMore.", "Async doc \x00 here."]
    assert corpus.document("Async doc \x00 here.") == b"Async doc \\x00 here."     # NUL stays the separator
    assert corpus.document("lone \udc80") == b"lone \\udc80"


def test_tokenizer_round_trips():
    raw = np.random.default_rng(0).integers(0, 256, 5000).astype(np.uint8).tobytes() + bytes(range(256))
    tokens = corpus.encode(raw)
    assert tokens.dtype == np.uint8 and len(tokens) == len(raw) and corpus.decode(tokens) == raw
    text = "naïve café — 漢字 🐍 \x00 end"
    assert corpus.decode(corpus.encode(text)).decode("utf-8") == text
    assert len(corpus.encode(text)) == len(text.encode("utf-8")) > len(text)     # bytes, not characters
    assert corpus.decode(corpus.encode(text).astype(np.int32)) == text.encode()  # any integer dtype
    with pytest.raises(ValueError):
        corpus.decode([0, 256])


def test_split_holds_out_whole_documents():
    docs = corpus.documents()
    train, test = corpus.split()
    train_docs, test_docs = corpus.documents(train), corpus.documents(test)
    assert not set(train_docs) & set(test_docs)
    assert Counter(train_docs) + Counter(test_docs) == Counter(docs)
    assert 0.05 < len(test_docs) / len(docs) < 0.11
    assert all(corpus.is_test(d) for d in test_docs) and not any(corpus.is_test(d) for d in train_docs[:500])


# ---- the bigram source -----------------------------------------------------------------------------

def test_bigram_chain_is_exactly_stationary_with_the_formula_entropy_rate():
    train = corpus.split()[0]
    p, pi = bigram_chain(train)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    assert np.abs(pi @ p - pi).max() < 1e-12
    # The entropy rate from pair counts taken another way: -(1/N) sum_ij C_ij ln(C_ij / n_i).
    pairs = Counter(zip(train, train[1:] + train[:1]))
    firsts = Counter(train)
    h = -sum(c * np.log(c / firsts[i]) for (i, _), c in pairs.items()) / len(train)
    t = text_task(source="bigram")
    assert t.source.entropy_rate() == pytest.approx(h, rel=1e-12)
    assert t.floors()["irreducible_loss"] == t.source.entropy_rate()
    np.testing.assert_array_equal(t.source.stationary(), pi)


def test_bigram_samples_match_the_chain():
    """Device samples: the mean -ln P over sampled transitions is the entropy rate (Monte Carlo, within 4 standard
    errors of independent sequences), and transition counts out of the most visited bytes follow P (chi-square)."""
    src = text_task(source="bigram", context=64).source
    seqs = np.asarray(jax.jit(lambda k: src.sample(k, 4000))(jax.random.key(5)))
    assert seqs.shape == (4000, 65) and seqs.dtype == np.int32
    x, y = seqs[:, :-1], seqs[:, 1:]
    nll = -src.log_prob(x, y).mean(axis=1)
    se = nll.std(ddof=1) / np.sqrt(len(nll))
    assert abs(nll.mean() - src.entropy_rate()) < 4 * se and se < 0.01
    p = src.transition_matrix()
    rows = np.argsort(-src.stationary())[:8]
    pvals = []
    for i in rows:
        counts = np.bincount(y[x == i], minlength=256)
        keep = p[i] * counts.sum() >= 5                  # cells with expected counts >= 5, the rest pooled
        observed = np.append(counts[keep], counts[~keep].sum())
        expected = np.append(p[i, keep], p[i, ~keep].sum()) * counts.sum()
        pvals.append(stats.chisquare(observed[expected > 0], expected[expected > 0]).pvalue)
    assert min(pvals) * len(pvals) > 1e-3
    # Power: the same counts against a chain with one row's two largest entries swapped are rejected.
    i = rows[0]
    j, k = np.argsort(-p[i])[:2]
    counts = np.bincount(y[x == i], minlength=256)
    swapped = p[i].copy()
    swapped[[j, k]] = swapped[[k, j]]
    assert stats.chisquare(counts[[j, k]], swapped[[j, k]] / swapped[[j, k]].sum() * counts[[j, k]].sum()).pvalue < 1e-6


def test_bigram_test_set_and_floor():
    t = text_task(source="bigram")
    x, y = (np.asarray(a) for a in t.test_set(jnp.float32))
    assert x.shape == y.shape == (64, 16) and np.array_equal(x[:, 1:], y[:, :-1])
    assert t.floors()["test_bayes_loss"] == pytest.approx(-np.mean(np.log(t.source.transition_matrix()[x, y])), rel=1e-12)
    np.testing.assert_array_equal(text_task(source="bigram", batch_size=3).test_set(jnp.float32)[0], x)
    assert isinstance(t.source, BigramSource)


# ---- the corpus source -----------------------------------------------------------------------------

def test_corpus_windows_one_epoch_within_the_split():
    t = text_task(context=64, batch_size=16)
    src = t.source
    assert isinstance(src, CorpusSource) and t.floors() == {}
    n = src.n_train
    assert n == window_counts(64)[0] == len(corpus.split()[0]) // 65
    steps = n // 16
    index = np.asarray(jax.jit(jax.vmap(lambda s: src.train_index(jax.random.key(3), s)))(jnp.arange(steps)))
    assert len(np.unique(index)) == steps * 16 and index.min() >= 0 and index.max() < n   # no window twice
    other = np.asarray(src.train_index(jax.random.key(4), 0))
    assert not np.array_equal(other, index[0])           # another data seed, another order
    x, y = (np.asarray(a) for a in t.train_batch(jax.random.key(3), jnp.asarray(2), {}, jnp.float32))
    assert x.shape == y.shape == (16, 64) and x.dtype == np.int32 and np.array_equal(x[:, 1:], y[:, :-1])
    train, test = corpus.split()
    for row, i in zip(np.concatenate([x, y[:, -1:]], axis=1), index[2]):
        assert corpus.decode(row) == train[i * 65:(i + 1) * 65]
    # Test windows are cut from the test split alone: every whole document in one is a test document, and
    # no train window holds one.
    tx, ty = (np.asarray(a) for a in t.test_set(jnp.float32))
    assert tx.shape == (64, 64)
    for row in np.concatenate([tx, ty[:, -1:]], axis=1):
        text = corpus.decode(row)
        assert text in test
        assert all(corpus.is_test(d) for d in text.split(corpus.SEPARATOR)[1:-1])
    whole = [d for row in src.train_sequences()[:2000] for d in corpus.decode(row).split(corpus.SEPARATOR)[1:-1]]
    assert whole and not any(corpus.is_test(d) for d in whole)
    ex, ey = t.examples(jax.random.split(jax.random.key(0), 5), {}, jnp.float32)
    assert ex.shape == (5, 64) and np.array_equal(ex[:, 1:], ey[:, :-1])


@pytest.mark.parametrize("keys,message", [
    ({"task.source": "poetry"}, "task.source = 'poetry': allowed: 'corpus', 'bigram'"),
    ({"train.steps": 20000}, "train.steps = 20000 with task.batch_size = 8 and task.source = 'corpus': one epoch"),
    ({"task.test_size": 10000}, "task.test_size = 10000 with task.source = 'corpus' and task.context = 16"),
])
def test_bad_keys_are_refused(keys, message):
    base = {"task.name": "text", "task.context": 16, "task.batch_size": 8, "model.family": "transformer"}
    with pytest.raises(ConfigError) as err:
        build_config({}, list({**base, **keys}.items()))
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    n = window_counts(16)[0]
    build_config({}, list({**base, "train.steps": n // 8}.items()))                # a whole epoch is allowed
    build_config({}, list({**base, "train.steps": 20000, "task.source": "bigram"}.items()))   # no limit to sample


# ---- a sweep ---------------------------------------------------------------------------------------

def test_sweep_over_sources_records_the_corpus(tmp_path):
    config = {"task": {"name": "text", "context": 16, "batch_size": 16, "test_size": 64},
              "model": {"family": "transformer", "depth": 2, "heads": 2},
              "train": {"steps": 40, "chunk_steps": 40, "lr": 1e-2}, "eval": {"points": 2},
              "run": {"bootstrap": 10, "figures": False},
              "sweep": {"task.source": ["corpus", "bigram"], "model.width": [8, 16]}}
    ds = run(config, out=tmp_path / "out", progress=False)
    saved = xr.open_dataset(tmp_path / "out" / "results.nc")
    for d in (ds, saved):
        assert d.attrs["corpus_sha256"] == hashlib.sha256(corpus.build_corpus()).hexdigest()
        assert d.attrs["corpus_bytes"] == len(corpus.build_corpus()) and d.attrs["tokenizer"].startswith("bytes")
        # a fact of one source only is keyed by its source, not shown as if it held for every source
        assert json.loads(d.attrs["corpus_train_windows"]) == {"source=corpus": window_counts(16)[0]}
    final = ds["final_test_loss"]
    assert np.all(np.isfinite(final.values)) and np.all(final.values < np.log(256))
    bayes = ds["test_bayes_loss"]
    assert np.isnan(bayes.sel(source="corpus")).all()           # no floor for the text itself
    assert np.all(final.sel(source="bigram") >= bayes.sel(source="bigram") - 0.01)
    assert (tmp_path / "out" / "language.json").is_file()


# ---- the sampled source ----------------------------------------------------------------------------

CTX = 8                 # the generators' context (and the sampled sweeps')


@pytest.fixture(scope="module")
def generators(tmp_path_factory):
    """Tiny generators of context 8 trained on the corpus (depth 1 and 2), saved with their parameters (a width
    axis of one value: the language study after the run reads a width dim)."""
    out = tmp_path_factory.mktemp("generators") / "gen"
    run({"task": {"name": "text", "context": CTX, "batch_size": 16, "test_size": 32},
         "model": {"family": "transformer", "heads": 2},
         "train": {"steps": 30, "chunk_steps": 30, "lr": 1e-2}, "eval": {"points": 2, "save_params": True},
         "run": {"figures": False, "bootstrap": 0}, "sweep": {"model.depth": [1, 2], "model.width": [16]}},
        out=out, progress=False)
    return out


def sampled_keys(generators, **keys) -> dict:
    """Dotted keys of a sampled sweep on the tiny generators (20 steps of 8 from a pool of 160)."""
    return {"task.name": "text", "task.source": "sampled:depth=1", "task.generator": str(generators),
            "task.pool_size": 160, "task.context": CTX, "task.batch_size": 8, "task.test_size": 32,
            "model.family": "transformer", "train.steps": 20, **keys}


def resampled(generators, depth: int, key: jax.Array, n: int):
    """Sequences of the generator of ``depth`` sampled independently of the task: (tokens, entropy, log_prob)."""
    start = np.bincount(np.frombuffer(corpus.split()[0], np.uint8), minlength=256)
    return (np.asarray(a) for a in sample(load_member(generators, depth=depth), key, n, CTX, 1.0, start))


def test_sampled_sweep_runs_and_its_floors_are_the_generators_own(generators, tmp_path):
    keys = sampled_keys(generators, **{"model.heads": 2, "train.chunk_steps": 20, "eval.points": 2,
                                       "run.figures": False, "run.bootstrap": 0})
    del keys["task.source"]
    axes = {"sweep.task.source": ["sampled:depth=1", "sampled:depth=2"], "sweep.model.width": [8, 16]}
    ds = run({}, set={**keys, **axes}, out=tmp_path / "out", progress=False)
    assert np.all(np.isfinite(ds["final_test_loss"].values))
    pool_key, test_key = jax.random.key(1), jax.random.fold_in(jax.random.key(0), 2**31 - 1)
    floors = {}
    for depth in (1, 2):
        source = f"sampled:depth={depth}"
        pool, entropy, _ = resampled(generators, depth, pool_key, 160)
        test, _, log_prob = resampled(generators, depth, test_key, 32)
        floors[depth] = float(ds["irreducible_loss"].sel(source=source)[0])
        np.testing.assert_allclose(ds["irreducible_loss"].sel(source=source), np.mean(entropy, dtype=np.float64),
                                   rtol=1e-6)
        np.testing.assert_allclose(ds["test_bayes_loss"].sel(source=source), -np.mean(log_prob, dtype=np.float64),
                                   rtol=1e-6)
        task = text_task(**{k[5:]: v for k, v in sampled_keys(generators, **{"task.source": source}).items()
                            if k.startswith("task.") and k != "task.name"})
        np.testing.assert_array_equal(task.source.train_sequences(), pool)          # the pool, as sampled
        np.testing.assert_array_equal(task.test_set(jnp.float32)[0], test[:, :-1])  # the test set, as sampled
    assert abs(floors[1] - floors[2]) > 1e-3, floors         # two generators, two sources
    info = json.loads(ds.attrs["generator_member"])
    assert sorted(info.values()) == ["depth=1", "depth=2"] and ds.attrs["generator_width"] == 16
    assert ds.attrs["generator_results"] == str(generators.resolve()) and ds.attrs["generator_context"] == CTX
    assert ds.attrs["corpus_sha256"] == hashlib.sha256(corpus.build_corpus()).hexdigest()


def test_sampled_pool_is_read_one_epoch_without_replacement(generators):
    keys = {k[5:]: v for k, v in sampled_keys(generators).items() if k.startswith("task.") and k != "task.name"}
    src = text_task(**keys).source
    assert isinstance(src, SampledSource) and src.n_train == 160
    pool = src.train_sequences()
    assert pool.shape == (160, CTX + 1) and pool.dtype == np.uint8
    index = np.asarray(jax.vmap(lambda s: src.train_index(jax.random.key(3), s))(jnp.arange(20)))
    assert sorted(index.ravel()) == list(range(160))           # 20 steps of 8: every pool sequence exactly once
    other = np.asarray(jax.vmap(lambda s: src.train_index(jax.random.key(4), s))(jnp.arange(20)))
    assert sorted(other.ravel()) == list(range(160)) and not np.array_equal(other, index)   # a data seed: an order
    x, y = (np.asarray(a) for a in src.train_batch(jax.random.key(3), jnp.asarray(5), {}, jnp.float32))
    np.testing.assert_array_equal(np.concatenate([x, y[:, -1:]], axis=1), pool[index[5]])
    # sampled once per process: another task object (another batch size) reads the very same pool
    assert text_task(**{**keys, "batch_size": 4}).source.train_sequences() is pool


@pytest.mark.parametrize("keys,message", [
    ({"train.steps": 21}, "train.steps = 21 with task.batch_size = 8 and task.source = 'sampled:depth=1': one epoch "
                          "of the generator's pool holds task.pool_size = 160 sequences, the longest member would "
                          "read 168; use at most 20 steps (or a task.pool_size of 168)"),
    ({"task.pool_size": 0}, "task.pool_size = 0 with task.source = 'sampled:depth=1': set the number"),
    ({"task.generator": ""}, "task.source = 'sampled:depth=1' needs task.generator: the results directory"),
    ({"task.generator": "nowhere"}, "task.generator = 'nowhere': no results at"),
    ({"task.source": "sampled:depth=3"}, "task.source = 'sampled:depth=3' with task.generator = "),
    ({"task.source": "sampled:depth"}, "task.source = 'sampled:depth': member selector 'depth': expected dim=value"),
    ({"task.source": "sampled:"}, "task.source = 'sampled:' with task.generator = "),
    ({"task.context": CTX + 1}, f"task.context = {CTX + 1} with task.source = 'sampled:depth=1': the generator "
                                f"{{'depth': 1, 'width': 16}} of "),
    ({"task.source": "corpus", "task.pool_size": 0}, "task.generator = "),
    ({"task.source": "corpus", "task.generator": ""}, "task.pool_size = 160: has no effect with task.source = "
                                                      "'corpus' (only with task.source = 'sampled:...'): only a "
                                                      "sampled source samples from a generator; remove it (default 0)"),
])
def test_bad_sampled_sources_are_refused(generators, keys, message):
    with pytest.raises(ConfigError) as err:
        build_config({}, list(sampled_keys(generators, **keys).items()))
    assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)
    build_config({}, list(sampled_keys(generators).items()))       # the base is valid


def test_generators_that_are_unsaved_or_not_trained_on_the_corpus_are_refused(generators, tmp_path):
    ds = sweepjax.load(generators)
    for name, bad, message in [
            ("unsaved", ds.drop_vars([v for v in ds.data_vars if v.startswith("param.")]), "save_params"),
            ("bigram", ds.assign_attrs(sweepjax_config=ds.attrs["sweepjax_config"].replace(
                'source = "corpus"', 'source = "bigram"')), "trained on task 'text' with source 'bigram'; a "
                                                            "sampled source needs a transformer trained on task "
                                                            "'text', source 'corpus'")]:
        (tmp_path / name).mkdir()
        bad.to_netcdf(tmp_path / name / "results.nc", engine="h5netcdf")
        with pytest.raises(ConfigError, match=re.escape(message)) as err:
            build_config({}, list(sampled_keys(tmp_path / name).items()))
        assert "\n" not in str(err.value)


def test_predictions_and_oversized_fixed_sets_are_refused():
    """No validation sample independent of training (examples are train sequences): no saved predictions; a fixed
    set larger than the corpus's train windows would repeat windows."""
    base = {"task": {"name": "text", "source": "corpus", "context": 8, "batch_size": 4},
            "model": {"family": "transformer", "width": 8, "head_size": 4}, "train": {"steps": 10}}
    with pytest.raises(ConfigError, match="save_predictions"):
        build_config({**base, "eval": {"save_predictions": True}})
    n_train = window_counts(8)[0]
    with pytest.raises(ConfigError, match=f"holds at most {n_train}"):
        build_config({**base, "task": {**base["task"], "dataset_size": n_train + 1}})
    build_config({**base, "task": {**base["task"], "dataset_size": n_train}})


def test_a_sampled_member_is_rebuilt_without_its_generator(generators, tmp_path, monkeypatch):
    """The generator is loaded only for data: a member of a sampled-source sweep (its generator named by a path
    relative to where it ran) rebuilds for its shapes from another directory."""
    monkeypatch.chdir(generators.parent)
    keys = sampled_keys(generators, **{"task.generator": generators.name, "model.heads": 2, "model.width": 8,
                                       "train.chunk_steps": 20, "eval.points": 2, "eval.save_params": True,
                                       "run.figures": False, "run.bootstrap": 0})
    run({}, set=keys, out=tmp_path / "student", progress=False)
    monkeypatch.chdir(tmp_path)   # the relative generator path now points nowhere
    member = load_member(tmp_path / "student")
    assert member.sizes["width"] == 8 and member.config.task.generator == generators.name


def test_resume_refuses_a_changed_generator(generators, tmp_path):
    """A sweep stopped, its generator retrained (here: one parameter changed by 1e-3), then resumed: refused,
    naming the generator's hash; with the generator as it was, the same resume goes on and finishes."""
    import shutil

    from sweepjax.engine.checkpoint import Interrupted
    gen = tmp_path / "gen"
    shutil.copytree(generators, gen)
    keys = sampled_keys(gen, **{"model.heads": 2, "model.width": 8, "train.chunk_steps": 10, "eval.points": 2,
                                "run.figures": False, "run.bootstrap": 0})
    out = tmp_path / "out"
    with pytest.raises(Interrupted):
        run({}, set=keys, out=out, progress=False, should_stop=lambda: True)
    saved = json.loads((out / "data.json").read_text())
    assert set(saved) == {"corpus_sha256", "generator_params_sha256"}
    original = (gen / "results.nc").read_bytes()
    ds = xr.load_dataset(gen / "results.nc")
    name = next(v for v in ds.data_vars if v.startswith("param.") and not v.startswith("param.init."))
    ds[name] = ds[name] + 1e-3
    ds.to_netcdf(gen / "results.nc", engine="h5netcdf")
    with pytest.raises(ConfigError, match=r"data changed since the sweep started: generator_params_sha256 \(saved "
                                          + repr(saved["generator_params_sha256"])):
        run(None, out=out, resume=True, progress=False)
    (gen / "results.nc").write_bytes(original)
    ds = run(None, out=out, resume=True, progress=False)
    assert np.all(np.isfinite(ds["final_test_loss"].values))


def test_resume_refuses_an_unreadable_data_file(tmp_path):
    from sweepjax.engine.checkpoint import Interrupted
    config = {"task": {"name": "text", "source": "bigram", "context": 8, "batch_size": 8, "test_size": 16},
              "model": {"family": "transformer", "width": 8, "heads": 2}, "train": {"steps": 20, "chunk_steps": 10},
              "eval": {"points": 2}, "run": {"figures": False, "bootstrap": 0}}
    with pytest.raises(Interrupted):
        run(config, out=tmp_path / "out", progress=False, should_stop=lambda: True)
    for text in ("{not json", "", "[]"):
        (tmp_path / "out" / "data.json").write_text(text)
        with pytest.raises(ConfigError, match="data.json is not the JSON object sweepjax wrote"):
            run(None, out=tmp_path / "out", resume=True, progress=False)


def test_a_changed_generator_of_several_is_named_by_its_group():
    from sweepjax.run import _changed
    saved = json.dumps({"source=sampled:depth=1": "aa", "source=sampled:depth=2": "bb"})
    now = json.dumps({"source=sampled:depth=1": "aa", "source=sampled:depth=2": "cc"})
    assert _changed(saved, now) == "source=sampled:depth=2: saved 'bb', now 'cc'"
    assert _changed("ab12", "cd34") == "saved 'ab12', now 'cd34'"
