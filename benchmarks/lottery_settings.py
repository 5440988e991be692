"""Which training settings show the lottery-ticket scaling exponents (Liu & Tegmark 2023)?

Trains y = x^2 on [-2, 2] with one-hidden-layer nets (torch init, SiLU and ReLU) over a sweep
of widths x seeds, once per training setting, all through the sweepjax engine, and prints for
every setting the median-over-seeds final test loss per width, the fitted exponent alpha
(log-log least-squares slope of median loss vs width) over several width windows, the local
slopes between neighbouring widths, and a convergence check: the ratio of the median test loss
at the last step to the one at half the steps (1.0 = flat, i.e. converged or stuck; << 1 = still
falling).

    python benchmarks/lottery_settings.py --quick          # the quickstart candidate, ~2 min on 2 CPU cores
    python benchmarks/lottery_settings.py                  # every setting of the table (one after the other)
    python benchmarks/lottery_settings.py --only adam-const-1e-3-10k --only lbfgs-f64-1k
    python benchmarks/lottery_settings.py --list

Results and the conclusions drawn from them: benchmarks/LOTTERY_SETTINGS.md.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from sweepjax.config import build_config
from sweepjax.run import run_sweep

# name -> (what it tests, activations, overrides of the base config below)
SETTINGS: dict[str, tuple[str, list[str], dict]] = {
    "adam-const-1e-3-10k": (
        "Adam, constant lr 1e-3 (the PyTorch default), 10k full-batch steps on the grid, float32",
        ["silu", "relu"], {"train": {"lr": 1e-3, "schedule": "constant", "steps": 10000}}),
    "adam-const-3e-3-4k": (
        "Adam, constant lr 3e-3, 4k full-batch steps (same lr*steps = 12 as above, 2.5x cheaper)",
        ["silu", "relu"], {"train": {"lr": 3e-3, "schedule": "constant", "steps": 4000}}),
    "adam-cos-3e-3-8k": (
        "Adam, lr 3e-3 cosine to 3e-6, 8k full-batch steps (quickstart candidate)",
        ["silu", "relu"], {"train": {"lr": 3e-3, "schedule": "cosine", "final_lr_fraction": 1e-3, "steps": 8000}}),
    "adam-cos-1e-2-5k": (
        "Adam, lr 1e-2 cosine to 1e-5, 5k full-batch steps",
        ["silu", "relu"], {"train": {"lr": 1e-2, "schedule": "cosine", "final_lr_fraction": 1e-3, "steps": 5000}}),
    "adam-cos-1e-2-20k": (
        "Adam, lr 1e-2 cosine to 1e-6, 20k full-batch steps (trained longer and annealed)",
        ["silu", "relu"], {"train": {"lr": 1e-2, "schedule": "cosine", "final_lr_fraction": 1e-4, "steps": 20000}}),
    "adam-const-1e-3-10k-fresh": (
        "as adam-const-1e-3-10k but a fresh U[-2,2] minibatch of 256 every step",
        ["silu", "relu"], {"task": {"train_data": "fresh", "batch_size": 256},
                           "train": {"lr": 1e-3, "schedule": "constant", "steps": 10000}}),
    "adam-const-1e-3-10k-f64": (
        "as adam-const-1e-3-10k in float64",
        ["silu"], {"train": {"lr": 1e-3, "schedule": "constant", "steps": 10000, "precision": "float64"}}),
    "lbfgs-f64-1k": (
        "full-batch L-BFGS, float64, 1000 steps (SiLU only, widths <= 128; the .md's numbers used optax's zoom line "
        "search, which could hang; the engine now uses a bounded backtracking search)",
        ["silu"], {"train": {"optimizer": "lbfgs", "precision": "float64", "steps": 1000}}),
}
# Settings that are run only up to this width (L-BFGS in float64 hung on a 2..256 sweep; see the .md).
MAX_WIDTH = {"lbfgs-f64-1k": 128}
DEFAULT_ORDER = list(SETTINGS)
QUICK = "adam-cos-3e-3-8k"

BASE = {
    "task": {"function": "power", "power": 2.0, "low": -2.0, "high": 2.0,
             "train_data": "grid", "grid_size": 201, "test_size": 1000},
    "model": {"family": "mlp", "depth": 1, "init": "torch"},
    "train": {"optimizer": "adam", "lr": 1e-3, "schedule": "constant", "final_lr_fraction": 0.0,
              "steps": 10000, "chunk_steps": 2000, "precision": "float32"},
    "eval": {"points": 30},
}

# (label, lowest width, highest width) of the fit windows reported
WINDOWS = [("all", 0, 10**9), ("4-16", 4, 16), ("8-64", 8, 64), ("8-128", 8, 128), ("16-256", 16, 256),
           ("64-256", 64, 256), ("256-4096", 256, 4096)]


def config(name: str, widths: list[int], seeds: int, grid: int | None):
    """The engine config of one setting."""
    _, acts, over = SETTINGS[name]
    raw = {k: dict(v) for k, v in BASE.items()}
    for section, values in over.items():
        raw[section] = {**raw[section], **values}
    if grid:
        raw["task"]["grid_size"] = grid
        raw["task"]["test_size"] = grid - 1  # midpoints that never lie on the training grid
    if raw["task"]["train_data"] == "fresh":  # no training grid (the key would be refused)
        del raw["task"]["grid_size"]
    if raw["train"]["optimizer"] == "lbfgs":  # line search: no lr or schedule (refused)
        for key in ("lr", "schedule", "final_lr_fraction"):
            raw["train"].pop(key, None)
    raw["sweep"] = {"seed": {"range": [0, seeds]}, "model.width": list(widths), "model.activation": list(acts)}
    return build_config(raw, name=name)


def slope(w: np.ndarray, loss: np.ndarray) -> float:
    """alpha = -(least-squares slope of log loss vs log width); NaN if fewer than 2 usable points."""
    ok = np.isfinite(loss) & (loss > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(-np.polyfit(np.log(w[ok]), np.log(loss[ok]), 1)[0])


def summarize(ds) -> dict:
    """Per activation: widths, medians, alphas per window, local slopes, tail ratio, diverged count."""
    out = {}
    widths = ds.width.values.astype(float)
    steps = ds.eval_step.values
    half = int(np.searchsorted(steps, steps[-1] // 2))
    for act in ds.activation.values:
        sub = ds.sel(activation=act)
        med = sub.final_test_loss.median("seed").values
        curve = sub.test_loss.median("seed")
        tail = (curve.isel(eval_step=-1) / curve.isel(eval_step=half)).values
        alphas = {}
        for label, lo, hi in WINDOWS:
            sel = (widths >= lo) & (widths <= hi)
            if sel.sum() >= 3 or (label == "all" and sel.sum() >= 2):
                alphas[label] = slope(widths[sel], med[sel])
        out[str(act)] = {
            "widths": widths.astype(int).tolist(),
            "median_final_test_loss": med.tolist(),
            "alpha": alphas,
            "local_alpha": [slope(widths[i:i + 2], med[i:i + 2]) for i in range(len(widths) - 1)],
            "tail_ratio": tail.tolist(),
            "diverged": int(sub.diverged.sum()),
            "half_step": int(steps[half]),
        }
    return out


def print_summary(name: str, summary: dict, wall: float, file=sys.stdout) -> None:
    desc = SETTINGS[name][0]
    print(f"\n### {name}: {desc}  (wall {wall:.0f} s)", file=file)
    for act, s in summary.items():
        w = s["widths"]
        print(f"  {act:5s} width      " + " ".join(f"{x:>8d}" for x in w), file=file)
        print(f"  {act:5s} median     " + " ".join(f"{x:8.1e}" for x in s["median_final_test_loss"]), file=file)
        print(f"  {act:5s} local a      " + "    " + " ".join(f"{x:8.2f}" for x in s["local_alpha"]), file=file)
        print(f"  {act:5s} L(T)/L(T/2)" + " ".join(f"{x:8.2f}" for x in s["tail_ratio"]), file=file)
        print(f"  {act:5s} alpha: " + ", ".join(f"{k} {v:.2f}" for k, v in s["alpha"].items())
              + f"; diverged members {s['diverged']}", file=file)
    file.flush()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"only {QUICK} at widths 4..256 and 16 seeds (the quickstart candidate)")
    p.add_argument("--only", action="append", default=[], help="run only this setting (repeatable)")
    p.add_argument("--widths", type=str, default="", help="comma-separated widths (default 2..256, quick 4..128)")
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--grid", type=int, default=0, help="training grid points (default 201)")
    p.add_argument("--json", type=str, default="", help="write all summaries to this JSON file")
    p.add_argument("--list", action="store_true", help="list the settings and exit")
    p.add_argument("--verbose", action="store_true", help="engine progress lines on stderr")
    args = p.parse_args(argv)
    if args.list:
        for k, (d, a, _) in SETTINGS.items():
            print(f"{k:28s} {'/'.join(a):10s} {d}")
        return 0
    names = args.only or ([QUICK] if args.quick else DEFAULT_ORDER)
    for n in names:
        if n not in SETTINGS:
            p.error(f"unknown setting {n!r}; --list shows them")
    if args.widths:
        widths = [int(x) for x in args.widths.split(",")]
    else:
        widths = [4, 8, 16, 32, 64, 128, 256] if args.quick else [2, 4, 8, 16, 32, 64, 128, 256]
    print(f"lottery settings: widths {widths}, {args.seeds} seeds, grid {args.grid or BASE['task']['grid_size']}, "
          f"test grid {BASE['task']['test_size']}, torch init; alpha = -slope of log(median final test loss) "
          f"vs log(width)")
    results = {}
    t_all = time.perf_counter()
    for n in names:
        ws = [w for w in widths if w <= MAX_WIDTH.get(n, 10**9)]
        cfg = config(n, ws, args.seeds, args.grid or None)
        t0 = time.perf_counter()
        ds, manifest = run_sweep(cfg, log=sys.stderr if args.verbose else None)
        wall = time.perf_counter() - t0
        summary = summarize(ds)
        results[n] = {"summary": summary, "wall_s": wall, "description": SETTINGS[n][0]}
        print_summary(n, summary, wall)
    print(f"\ntotal wall {time.perf_counter() - t_all:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"widths": widths, "seeds": args.seeds, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
