"""Sampling from a generator with the key/value cache (``sweepjax.generate.sample``) against the sampler without
it (the full forward pass on the whole token buffer at every position: the reference kept in
tests/test_generate.py).

    python benchmarks/sampling.py [--n 200] [--contexts 32 100]

A width-64, depth-4 transformer (4 heads, vocabulary 256: the CPU language generators' shape), at
initialisation, samples ``n`` sequences at each context. Each sampler is called three times; the first call's
extra time over the fastest later call is reported as compile time apart. Also prints the fraction of tokens the
two samplers draw alike (they differ only where a uniform falls within float rounding of a CDF boundary).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_generate import _sample_without_cache  # noqa: E402

from sweepjax.config import build_config  # noqa: E402
from sweepjax.generate import sample  # noqa: E402
from sweepjax.members import Member  # noqa: E402
from sweepjax.models import make_model  # noqa: E402


def generator(context: int) -> Member:
    cfg = build_config({"task": {"name": "markov", "vocab": 256, "context": context},
                        "model": {"family": "transformer", "width": 64, "depth": 4, "heads": 4}, "sweep": {}})
    sizes = {"width": 64, "depth": 4, "heads": 4, "head_dim": 16, "mlp_hidden": 256}
    model = make_model(cfg, sizes)
    s = {k: jnp.int32(v) for k, v in sizes.items()}
    params = model.init({"params": jax.random.key(0)}, jnp.zeros((1, context), jnp.int32), s)["params"]
    return Member({}, cfg, sizes, sizes, model, params)


def timed(f) -> tuple[float, float, object]:
    """(compile seconds apart, run seconds, result) over three calls."""
    times, out = [], None
    for _ in range(3):
        t = time.perf_counter()
        out = jax.block_until_ready(f())
        times.append(time.perf_counter() - t)
    run = min(times[1:])
    return times[0] - run, run, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--contexts", type=int, nargs="+", default=[32, 100])
    args = ap.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; width 64, depth 4, vocab 256, n = {args.n}")
    for context in args.contexts:
        m, key = generator(context), jax.random.key(1)
        start = np.ones(256)
        c_cache, t_cache, cached = timed(lambda: sample(m, key, args.n, context, 1.0, start))
        c_full, t_full, full = timed(lambda: _sample_without_cache(m, key, args.n, context))
        same = float(np.mean(np.asarray(cached[0]) == np.asarray(full[0])))
        print(f"context {context}: with cache {t_cache:.2f} s (+{c_cache:.1f} s compile), without {t_full:.2f} s "
              f"(+{c_full:.1f} s compile): {t_full / t_cache:.1f}x; tokens alike {same:.4f}", flush=True)


if __name__ == "__main__":
    main()
