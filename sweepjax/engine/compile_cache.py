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

from pathlib import Path

from sweepjax.files import cache_dir

MIN_COMPILE_SECONDS = 0.1


def compile_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/sweepjax/xla`` (``~/.cache/sweepjax/xla`` by default)."""
    return cache_dir() / "xla"


def use_compile_cache(enabled: bool) -> str | None:
    """Turn JAX's persistent compilation cache on for this process, in :func:`compile_cache_dir`, and return the
    directory in use; a directory the user gave JAX already (``JAX_COMPILATION_CACHE_DIR`` or
    ``jax.config``) is kept. ``enabled = False`` leaves JAX's settings as they are (off unless the user set a
    directory). Takes effect for the next compilation even if this process compiled before."""
    import jax
    from jax.experimental.compilation_cache import compilation_cache

    current = jax.config.jax_compilation_cache_dir
    if not enabled or current:
        return current
    path = str(compile_cache_dir())
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    compilation_cache.reset_cache()   # JAX decides once per process whether to use the cache: decide again
    return path
