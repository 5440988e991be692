"""Compiled programs kept on disk (``run.compile_cache``): the same sweep in a fresh process, cold and warm.

    python benchmarks/compile_cache.py [--sweep lottery residual]

Each sweep of benchmarks/bucketing.py (the issue's lottery sweep: SiLU, widths 2..256, 64 seeds, 2,000 steps;
a residual width x depth sweep) runs through ``sweepjax.run`` (default settings) in a new process three times
with one empty cache directory (``XDG_CACHE_HOME``): first with ``run.compile_cache = false`` (no cache), then
with the cache on twice (cold: programs compiled and written; warm: read back). Prints wall seconds per run,
the programs' compile seconds from the manifest, and whether the losses are identical. The bucketing
calibration is measured once beforehand (its own cache) so that no run pays for it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bucketing import ROOT, SWEEPS  # noqa: E402


def calibrate(sweep: str) -> None:
    """Measure and cache the bucketing calibration of ``sweep`` (what its first run would do)."""
    from sweepjax.engine.calibrate import calibrate as measure_or_read
    from sweepjax.run import resolve_config
    config, overrides = SWEEPS[sweep]
    measure_or_read(resolve_config(config, overrides, on_cpu=True))


def child(sweep: str, out: str, cache: bool) -> dict:
    """Run ``sweep`` in this process into ``out``; its wall time, compile time and median final loss."""
    import numpy as np

    import sweepjax
    config, overrides = SWEEPS[sweep]
    t0 = time.perf_counter()
    ds = sweepjax.run(config, set={**overrides, "run.compile_cache": cache, "run.figures": False}, out=out,
                      progress=False)
    wall = time.perf_counter() - t0
    manifest = json.loads((Path(out) / "manifest.json").read_text())
    compile_s = sum(manifest["compile_seconds_per_group"])
    return {"wall": wall, "compile": compile_s, "loss": np.asarray(ds.final_test_loss).tolist()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", nargs="+", choices=list(SWEEPS), default=list(SWEEPS))
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        if a.child[2] == "calibrate":
            calibrate(a.child[0])
            print("{}")
        else:
            print(json.dumps(child(a.child[0], a.child[1], a.child[2] == "on")))
        return
    import os
    for sweep in a.sweep:
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "XDG_CACHE_HOME": tmp}
            rows = []
            for i, cache in enumerate(("calibrate", "off", "on", "on")):
                out = subprocess.run([sys.executable, __file__, "--child", sweep, f"{tmp}/run{i}", cache], env=env,
                                     capture_output=True, text=True, cwd=ROOT)
                if out.returncode:
                    sys.exit(out.stderr)
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            rows = rows[1:]
        same = rows[0]["loss"] == rows[1]["loss"] == rows[2]["loss"]
        print(f"\n{sweep}: | run | wall s | compile s (manifest) |\n|---|---|---|")
        for name, r in zip(("no cache", "cache on, cold", "cache on, warm"), rows):
            print(f"| {name} | {r['wall']:.1f} | {r['compile']:.1f} |")
        print(f"identical final test losses in all three: {same}")


if __name__ == "__main__":
    main()
