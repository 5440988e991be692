"""Speed of the scaling-law fits (CPU).

Targets (issue): a 5-parameter joint fit L(N, D) = E + A/N^alpha + B/D^beta on ~250
points from a grid of 4,500 starts in under 10 s; a 1,000-resample bootstrap of it in
under 60 s (on 2 CPU cores).

    /work/venv/bin/python benchmarks/fit_speed.py [--repeats 3] [--resamples 1000]

Prints a markdown table (paste it into benchmarks/FIT_RESULTS.md) with wall-clock time
and the CPU time of this process (a guide when other processes share the cores).
Compilation is timed apart: the first call compiles (once per form, method and
point-count bucket), later calls reuse the compiled program.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import jax
import numpy as np

from sweepjax.fit import FORMS, bootstrap, fit, predict

TRUE = dict(A=406.4, alpha=0.34, B=410.7, beta=0.28, E=1.69)  # Hoffmann et al. (2022)


def data(seed: int = 0, noise: float = 0.01) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """16 x 16 = 256 (N, D) points of the Chinchilla law with log-normal noise."""
    n, d = (g.ravel() for g in np.meshgrid(np.geomspace(1e7, 1e10, 16),
                                           np.geomspace(1e9, 1e12, 16)))
    form = FORMS["joint_nd"]
    y = predict(form, form.from_natural(TRUE), {"N": n, "D": d})
    rng = np.random.default_rng(seed)
    return {"N": n, "D": d}, y * np.exp(noise * rng.standard_normal(y.size))


def timed(fn):
    """(result, wall seconds, CPU seconds of this process)."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--resamples", type=int, default=1000)
    args = ap.parse_args()
    x, y = data()

    first, t_first, c_first = timed(lambda: fit(x, y, "joint_nd"))
    fits = [timed(lambda: fit(x, y, "joint_nd")) for _ in range(args.repeats)]
    res, t_fit, c_fit = min(fits, key=lambda r: r[1])
    boots = [timed(lambda: bootstrap(x, y, "joint_nd", n_resamples=args.resamples, seed=s))
             for s in range(args.repeats)]
    boot, t_boot, c_boot = min(boots, key=lambda r: r[1])

    load = os.getloadavg()
    print(f"date: {datetime.datetime.now().isoformat(timespec='minutes')}")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
          f"jax {jax.__version__} ({jax.default_backend()}), load average {load[0]:.1f} "
          f"(other processes share the cores)")
    print()
    print("| what | starts | points | wall (s) | CPU (s) | notes |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| joint fit, first call (includes compilation) | {first.n_starts} | {first.n_points} "
          f"| {t_first:.2f} | {c_first:.2f} | |")
    print(f"| joint fit, compiled (best of {args.repeats}) | {res.n_starts} | {res.n_points} | "
          f"{t_fit:.2f} | {c_fit:.2f} | {res.n_converged} starts converged, {res.n_near_best} "
          f"reached the best; best converged: {res.converged} |")
    print(f"| bootstrap, {args.resamples} resamples (best of {args.repeats}) | point fit + 4 "
          f"per resample | {res.n_points} | {t_boot:.2f} | {c_boot:.2f} | "
          f"{int(boot.converged.sum())}/{boot.n_resamples} refits converged |")
    print()
    print("parameters (95% bootstrap CI): " + ", ".join(
        f"{k} = {v:.4g} [{boot.ci(k)[0]:.4g}, {boot.ci(k)[1]:.4g}]" for k, v in res.params.items()))
    print("true: " + ", ".join(f"{k} = {v:g}" for k, v in TRUE.items()))


if __name__ == "__main__":
    main()
