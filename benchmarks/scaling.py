"""Throughput and compile time against ensemble size and model size (lottery workload, SiLU).

    python benchmarks/scaling.py                    # CPU-sized: members 1..1000, widths 16..1024
    python benchmarks/scaling.py --members 1 10 100 1000 10000 --steps 2000   # GPU

Writes benchmarks/scaling.md (table) and benchmarks/scaling.png (figure); record the run in
benchmarks/RESULTS.md with the command, device and date.
"""
from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sweepjax.config import build_config  # noqa: E402
from sweepjax.engine.train import run_group  # noqa: E402
from sweepjax.grid import build_grid  # noqa: E402


def measure(n_members: int, width: int, steps: int, batch: int) -> dict:
    """Compile seconds and member-steps/s of one program of ``n_members`` SiLU nets of ``width``."""
    cfg = build_config({"task": {"batch_size": batch}, "model": {"width": width},
                        "train": {"lr": 1e-2, "steps": steps, "chunk_steps": steps + 1}, "eval": {"points": 5},
                        "sweep": {"seed": {"range": [0, n_members]}}})
    group = build_grid(cfg).groups[0]
    out = run_group(cfg, group, log=None)
    return {"members": n_members, "width": width, "compile_s": out.compile_s,
            "member_steps_per_s": n_members * (steps + 1) / out.run_s}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--members", type=int, nargs="+", default=[1, 10, 100, 1000])
    p.add_argument("--widths", type=int, nargs="+", default=[16, 64, 256, 1024])
    p.add_argument("--fixed-width", type=int, default=64)
    p.add_argument("--fixed-members", type=int, default=100)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=256)
    args = p.parse_args()
    by_members = [measure(n, args.fixed_width, args.steps, args.batch) for n in args.members]
    by_width = [measure(args.fixed_members, w, args.steps, args.batch) for w in args.widths]
    device = f"{jax.devices()[0].device_kind} ({jax.default_backend()})"
    lines = [f"Scaling benchmark, {datetime.date.today()}, device {device}, jax {jax.__version__}, "
             f"{args.steps} Adam steps, batch {args.batch}", "",
             f"| members (width {args.fixed_width}) | compile s | member-steps/s |", "|---|---|---|"]
    lines += [f"| {r['members']} | {r['compile_s']:.2f} | {r['member_steps_per_s']:,.0f} |" for r in by_members]
    lines += ["", f"| width ({args.fixed_members} members) | compile s | member-steps/s |", "|---|---|---|"]
    lines += [f"| {r['width']} | {r['compile_s']:.2f} | {r['member_steps_per_s']:,.0f} |" for r in by_width]
    here = Path(__file__).parent
    (here / "scaling.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, rows, key, label in ((axes[0], by_members, "members", f"members (width {args.fixed_width})"),
                                 (axes[1], by_width, "width", f"width ({args.fixed_members} members)")):
        x = [r[key] for r in rows]
        ax.plot(x, [r["member_steps_per_s"] for r in rows], "o-", label="member-steps/s")
        ax.set(xscale="log", yscale="log", xlabel=label, ylabel="member-steps/s")
        tw = ax.twinx()
        tw.plot(x, [r["compile_s"] for r in rows], "s--", color="C1", label="compile s")
        tw.set(ylabel="compile s", ylim=(0, 1.2 * max(r["compile_s"] for r in rows + by_members + by_width)))
        ax.set_title(f"{device}")
    fig.tight_layout()
    fig.savefig(here / "scaling.png", dpi=110)


if __name__ == "__main__":
    main()
