"""run.compile_cache: compiled programs kept on disk are read back by a later run, with the same results."""
from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache

import sweepjax
from sweepjax.engine.compile_cache import compile_cache_dir

SWEEP = {"task": {"batch_size": 64, "test_size": 101}, "train": {"steps": 30, "chunk_steps": 30},
         "eval": {"points": 3}, "sweep": {"seed": [0, 1], "model.width": [4, 32]},
         "run": {"max_padding_waste": 0, "figures": False}}


@pytest.fixture
def fresh_jax_cache(tmp_path, monkeypatch):
    """No compilation cache directory set, this test's own XDG cache; JAX's settings restored afterwards."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    kept = jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_compilation_cache_dir", None)
    compilation_cache.reset_cache()
    hits = []
    jax.monitoring.register_event_listener(lambda name, **kw: hits.append(name) if name.endswith("cache_hits") else None)
    yield hits
    jax.config.update("jax_compilation_cache_dir", kept[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", kept[1])
    compilation_cache.reset_cache()


def run(out, **run_keys):
    return sweepjax.run({**SWEEP, "run": {**SWEEP["run"], **run_keys}}, out=out, progress=False)


def test_a_second_run_reads_its_programs_back_with_the_same_results(fresh_jax_cache, tmp_path):
    first = run(tmp_path / "a")
    entries = list(compile_cache_dir().iterdir())
    assert entries and jax.config.jax_compilation_cache_dir is None   # JAX's settings restored after the run
    assert not fresh_jax_cache   # nothing to read back yet
    jax.clear_caches()           # as a new process: no program held in memory
    second = run(tmp_path / "b")
    assert len(fresh_jax_cache) >= 2, fresh_jax_cache   # init and training programs at least, from disk
    for name in ("test_loss", "train_loss", "final_test_loss"):
        np.testing.assert_array_equal(second[name].values, first[name].values)


def test_off_leaves_jax_without_a_cache(fresh_jax_cache, tmp_path):
    run(tmp_path / "a", compile_cache=False)
    assert jax.config.jax_compilation_cache_dir is None and not compile_cache_dir().exists()


def test_off_after_on_writes_nothing(fresh_jax_cache, tmp_path):
    """A run with the cache on does not leave it on for a later run with it off (or the caller's programs)."""
    run(tmp_path / "a")
    entries = sorted(compile_cache_dir().iterdir())
    jax.clear_caches()
    run(tmp_path / "b", compile_cache=False, max_padding_waste=1.0)   # other programs: they would be new entries
    assert sorted(compile_cache_dir().iterdir()) == entries and not fresh_jax_cache


def test_a_directory_the_user_gave_jax_is_kept(fresh_jax_cache, tmp_path):
    mine = tmp_path / "mine"
    jax.config.update("jax_compilation_cache_dir", str(mine))
    run(tmp_path / "a")
    assert jax.config.jax_compilation_cache_dir == str(mine) and not compile_cache_dir().exists()
