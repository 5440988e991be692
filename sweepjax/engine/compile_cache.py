"""JAX's persistent compilation cache, kept for sweepjax's programs (``run.compile_cache``).

A sweep's programs depend on its structure (family, padded sizes, member count, steps per chunk, task), not on
the numbers inside them (lr, seeds, per-member steps and exponents are traced): a sweep run again with other
values, resumed, or rerun after an interruption compiles exactly the programs it compiled before. XLA writes
each compiled executable to :func:`compile_cache_dir` and reads it back when the same program (same HLO, compile
options, backend and versions: JAX's own key) is compiled again, so those runs skip compilation. The executable
read back is the one compiled before, so results do not change (tested bitwise).

Programs that compile in under :data:`MIN_COMPILE_SECONDS` are not written (JAX's own small eager programs).
JAX skips an entry it cannot read (a file cut short by a killed process) with a warning and compiles again.
The cache grows with the distinct programs run; delete the directory to reclaim it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sweepjax.files import cache_dir

MIN_COMPILE_SECONDS = 0.1


def compile_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/sweepjax/xla`` (``~/.cache/sweepjax/xla`` by default)."""
    return cache_dir() / "xla"


@contextlib.contextmanager
def compile_cache(enabled: bool) -> Iterator[str | None]:
    """Within the block, JAX's persistent compilation cache is on, in :func:`compile_cache_dir`; yields the
    directory in use. A directory the user gave JAX already (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``)
    is kept; ``enabled = False`` adds none (JAX's own settings stay). JAX's settings are restored after the
    block, so a notebook's own programs are not written to sweepjax's cache and a later run with the cache
    off writes nothing. Takes effect for the next compilation even if this process compiled before."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache as jax_cache

    kept = jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs
    if not enabled or kept[0]:
        yield kept[0]
        return
    path = str(compile_cache_dir())
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    jax_cache.reset_cache()   # JAX decides once per process whether to use the cache: decide again
    try:
        yield path
    finally:
        jax.config.update("jax_compilation_cache_dir", kept[0])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", kept[1])
        jax_cache.reset_cache()
