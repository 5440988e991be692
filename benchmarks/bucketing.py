"""Size buckets by cost (issue 17): wall time of a sweep under each way of splitting it into programs.

    python benchmarks/bucketing.py [--sweep lottery residual] [--repeats 2]

Sweeps (CPU-sized):
  lottery   configs/lottery_x2.toml at its [on_cpu] sizes, SiLU only, 64 seeds, widths 2..256, 2,000 full-batch
            Adam steps on the 201-point grid (512 members, 1.0M member-steps);
  residual  a mixed depth x width residual MLP sweep (ReLU, RMSNorm, mlp_ratio 4, fresh batches of 128):
            depths 1..8 x widths 16..128, 2 seeds, 300 Adam steps, 256 test points (32 members).
Settings:
  first-fit 1.5 (before)  the default before issue 17: first-fit decreasing under max_padding_waste 1.5 (the old
                          rule, re-implemented here: :func:`first_fit`);
  waste 1.0               max_padding_waste = 1.0: one program per member kind (the same before and after);
  cost, <= 1.5            the cost model within max_padding_waste = 1.5 (the new default);
  cost                    the cost model alone (max_padding_waste = inf).
The cost model's numbers are measured first, in a process of their own (``sweepjax.engine.calibrate.measure``, what a
first run on a machine does once and caches), and given to the cost settings as ``run.program_seconds`` and
``run.flop_rate``. Each run is a fresh process (``sweepjax.run.run_sweep``: grid, every program, results
assembly), timed from the config to the results Dataset. Per run: programs, compile s (tracing and compiling
the training loops), loop s (the training loops), other s (the rest: init programs, evaluation outside the
loop, predictions, transfers, results), wall s, and the process's CPU s over the same span (less sensitive to
other processes on the machine than wall time). Runs are interleaved (setting by setting, then repeated); the
table shows the mean and, in brackets, the spread (max - min). Prints markdown for benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = {
    "lottery": (str(ROOT / "configs" / "lottery_x2.toml"),
                {"sweep.model.activation": ["silu"], "sweep.seed": {"range": [0, 64]}, "train.steps": 2000}),
    "residual": ({"model": {"residual": True, "activation": "relu", "norm": "rmsnorm", "mlp_ratio": 4},
                  "task": {"batch_size": 128, "test_size": 256},
                  "train": {"lr": 1e-3, "steps": 300, "chunk_steps": 300},
                  "eval": {"points": 10},
                  "sweep": {"seed": [0, 1], "model.depth": [1, 2, 4, 8], "model.width": [16, 32, 64, 128]}},
                 {}),
}
SETTINGS = {
    "first-fit 1.5 (before)": {"run.max_padding_waste": 1.5},   # with first_fit in place of grid.bucket
    "waste 1.0": {"run.max_padding_waste": 1.0},
    "cost, <= 1.5": {"run.max_padding_waste": 1.5},
    "cost": {"run.max_padding_waste": float("inf")},
}


def first_fit(group, max_waste: float):
    """The bucketing rule before issue 17: first-fit decreasing over member kinds, largest work first, into the
    first bucket whose padding waste stays <= ``max_waste``."""
    import numpy as np
    keys = list(group.sizes())
    kinds = [(int(n), *shape) for n, shape in zip(group.values["train.steps"], group.shapes())]
    work = lambda kind: group.cost(dict(zip(keys, kind[1:])), kind[0])
    buckets: list[list[int]] = []
    for kind in sorted(set(kinds), key=lambda k: (work(k), k), reverse=True):
        rows = [i for i in range(group.size) if kinds[i] == kind]
        for b in buckets:
            if group.subset(np.array(sorted(b + rows))).padding_waste() <= max_waste:
                b += rows
                break
        else:
            buckets.append(rows)
    return [group.subset(np.array(sorted(b))) for b in buckets]


def cpu_seconds() -> float:
    """CPU time (user + system) of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def one(sweep: str, setting: str, program_seconds: str, flop_rate: str, steps: str) -> dict:
    """Run ``sweep`` under ``setting`` in this process, the cost model's numbers given (nothing is measured during
    the run); returns its timings."""
    import jax

    from sweepjax import grid as grid_module
    from sweepjax.engine import train
    from sweepjax.run import resolve_config, run_sweep
    if setting == "first-fit 1.5 (before)":
        grid_module.bucket = lambda group, max_waste, calibration=None: first_fit(group, max_waste)
    outputs = []
    run_group = train.run_group

    def timed(*args, **kw):
        out = run_group(*args, **kw)
        outputs.append(out)
        return out
    train.run_group = timed
    config, overrides = SWEEPS[sweep]
    jax.jit(lambda x: x + 1)(1).block_until_ready()   # backend start-up: the same for every setting
    given = {"run.program_seconds": float(program_seconds), "run.flop_rate": float(flop_rate)}
    overrides = {**overrides, **({"train.steps": int(steps)} if int(steps) else {})}
    t0, c0 = time.perf_counter(), cpu_seconds()
    cfg = resolve_config(config, {**overrides, **SETTINGS[setting], **given}, on_cpu=jax.default_backend() == "cpu")
    ds, _ = run_sweep(cfg, log=None)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    compile_s, loop_s = sum(o.compile_s for o in outputs), sum(o.run_s for o in outputs)
    return {"programs": len(outputs), "compile": compile_s, "loop": loop_s, "other": wall - compile_s - loop_s,
            "wall": wall, "cpu": cpu, "members": int(ds.final_test_loss.size), "loss": float(ds.final_test_loss.median())}


def calibrate(sweep: str) -> dict:
    """Measure the cost model's numbers for ``sweep``'s family and precision; returns them and the seconds taken."""
    import jax

    from sweepjax.engine.calibrate import measure, reference
    from sweepjax.run import resolve_config
    config, overrides = SWEEPS[sweep]
    cfg = resolve_config(config, overrides, on_cpu=jax.default_backend() == "cpu")
    t0 = time.perf_counter()
    c = measure(reference(cfg), cfg.train.precision)
    return {"seconds": time.perf_counter() - t0, "program_seconds": c.program_seconds, "flop_rate": c.flop_rate}


def child(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, cwd=ROOT)
    if out.returncode:
        sys.exit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", nargs="+", choices=list(SWEEPS), default=list(SWEEPS))
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--steps", type=int, default=0, help="train.steps instead of the sweep's (0: the sweep's)")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        kind, *rest = args.child
        print(json.dumps(one(*rest) if kind == "run" else calibrate(*rest)))
        return
    import jax
    print(f"Bucketing benchmark, {datetime.date.today()}, {platform.machine()} {os.cpu_count()} cores, device "
          f"{jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}, Python "
          f"{platform.python_version()}; 1-minute load before the runs: {os.getloadavg()[0]:.1f}\n")
    for sweep in args.sweep:
        cal = child(["calibrate", sweep])
        runs = {s: [] for s in args.settings}
        for _ in range(args.repeats):
            for s in args.settings:
                runs[s].append(child(["run", sweep, s, str(cal["program_seconds"]), str(cal["flop_rate"]),
                                            str(args.steps)]))
        first = runs[args.settings[0]][0]
        print(f"### {sweep}: {first['members']} members; cost model measured: program_seconds "
              f"{cal['program_seconds']:.2f} s, flop_rate {cal['flop_rate']:.3g} FLOP/s (the measurement took "
              f"{cal['seconds']:.1f} s)\n")
        print("| setting | programs | compile s | loop s | other s | wall s | CPU s | median final test loss |")
        print("|---|---|---|---|---|---|---|---|")
        for s, rs in runs.items():
            cell = lambda k: (f"{sum(r[k] for r in rs) / len(rs):.1f}"
                              + (f" ({max(r[k] for r in rs) - min(r[k] for r in rs):.1f})" if len(rs) > 1 else ""))
            print(f"| {s} | {rs[0]['programs']} | {cell('compile')} | {cell('loop')} | {cell('other')} | "
                  f"{cell('wall')} | {cell('cpu')} | {rs[0]['loss']:.4g} |")
        print(f"\n(mean of {args.repeats} runs, spread max - min in brackets; 1-minute load after: "
              f"{os.getloadavg()[0]:.1f})\n")


if __name__ == "__main__":
    main()
