"""Wall time of a study config's CPU-sized run (its [on_cpu] section), end to end through `sweepjax run`.

    python benchmarks/study_runtime.py configs/quanta_parity.toml configs/quanta_parity_data.toml

Each config runs in a fresh process (compile included) into a temporary directory; prints the wall
seconds, the device and the date. Run it on an otherwise idle machine: other work on the cores inflates it.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("configs", nargs="+")
    args = p.parse_args()
    print(f"# {datetime.date.today()}  {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    for config in args.configs:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "sweepjax.cli", "run", config, "--out", out, "--overwrite"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            print(f"{config}: {time.perf_counter() - t0:.0f} s wall")


if __name__ == "__main__":
    main()
