"""Speed of the ensemble table (issue 16): ensemble loss vs K over a 1,000-member lottery sweep, on CPU.

    python benchmarks/ensemble_speed.py [RESULTS_DIR] [--repeats 5]

Without RESULTS_DIR it first runs ``configs/lottery_x2.toml`` at its [on_cpu] sizes with 64 seeds
(64 seeds x 8 widths x 2 activations = 1,024 members, predictions saved on its 1,000 test points) and
only 300 steps: the timing does not depend on how well the members are trained. Then it times
``sweepjax.ensemble.ensemble_table`` (K = 1, 2, 4, ..., 64 random members, 200 draws, every width and
activation, parameter-matched comparison): the first call (compiling the jitted kernel) and the median
of ``--repeats`` later calls. Prints a markdown row for benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="?")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    import numpy as np

    from sweepjax import ensemble, results
    from sweepjax.cli import main as cli
    with tempfile.TemporaryDirectory() as tmp:
        out = args.results
        if out is None:
            out = str(Path(tmp) / "lottery")
            code = cli(["run", str(ROOT / "configs" / "lottery_x2.toml"), "--out", out, "--set", "train.steps=300",
                        "--set", "sweep.seed={range=[0, 64]}", "--set", "run.figures=false", "--set", "run.bootstrap=0"])
            if code:
                sys.exit(code)
        ds = results.load(out)
        members = int(np.prod([n for d, n in ds["predictions"].sizes.items() if d != "x"]))
        t0 = time.perf_counter()
        rows = ensemble.ensemble_table(ds, draws=200)
        first = time.perf_counter() - t0
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ensemble.ensemble_table(ds, draws=200)
            times.append(time.perf_counter() - t0)
    print(f"# {datetime.date.today()}  {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print("| members | points | table rows | first call (compile) s | later calls s (median) |")
    print("|---|---|---|---|---|")
    print(f"| {members} | {ds.sizes['x']} | {len(rows)} | {first:.2f} | {np.median(times):.3f} |")


if __name__ == "__main__":
    main()
