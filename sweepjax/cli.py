"""Command line: ``sweepjax run | coordcheck | fit | plot | bench | info``.

User mistakes (bad config, bad paths) print one ``error:`` line and exit with code 2.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path

from sweepjax.config import ConfigError

CHECKPOINT_DIR = "checkpoints"  # same name as sweepjax.engine.checkpoint.CHECKPOINT_DIR (kept import-light)

EXIT_USER_ERROR = 2


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output path {str(out)!r} exists and is not a directory; choose another --out")
    if overwrite:
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    elif (out / "results.nc").exists():
        raise ConfigError(f"{str(out)!r} already holds results; pass --overwrite or choose another --out")
    elif (out / CHECKPOINT_DIR).exists():
        raise ConfigError(f"{str(out)!r} holds an unfinished sweep; continue it with "
                          f"'sweepjax run --resume {out}' or pass --overwrite")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"cannot write to output directory {str(out)!r}: {e.strerror}") from None


def _resume_config(args: argparse.Namespace, on_cpu: bool):
    """The config of a resumed run: the saved one (plus --set), checked against CONFIG if given."""
    from sweepjax.config import RESUME_SAFE_KEYS, differences, load_config
    out = Path(args.resume)
    saved_path = out / "config.toml"
    if not saved_path.is_file():
        raise ConfigError(f"--resume {str(out)!r}: no sweep to resume there (no config.toml)")
    if (out / "results.nc").exists() and not (out / CHECKPOINT_DIR).exists():
        raise ConfigError(f"--resume {str(out)!r}: that sweep already finished")
    saved = load_config(saved_path)
    cfg = load_config(args.config, args.set, on_cpu=on_cpu) if args.config else load_config(saved_path, args.set)
    allowed = set(args.allow_change)
    for key in allowed - set(RESUME_SAFE_KEYS):
        raise ConfigError(f"--allow-change {key}: changing it would change results; only "
                          f"{', '.join(RESUME_SAFE_KEYS)} may change on resume")
    diff = {k: v for k, v in differences(saved, cfg).items() if k not in allowed}
    if diff:
        listed = "; ".join(f"{k} (saved {a!r}, now {b!r})" for k, a, b in ((k, *v) for k, v in diff.items()))
        raise ConfigError(f"--resume {str(out)!r}: config differs from the saved one in {listed}")
    cfg.name = saved.name if not args.config else cfg.name
    return cfg, out


def cmd_run(args: argparse.Namespace) -> int:
    """Run (or resume) a sweep, save results, fit the width exponent, make figures."""
    with contextlib.ExitStack() as held:  # holds the output directory's lock, taken in _run, to the end
        return _run(args, held)


def _run(args: argparse.Namespace, held: contextlib.ExitStack) -> int:
    import jax
    if args.distributed:
        start_distributed(args)
    main_process = jax.process_index() == 0

    from sweepjax import results
    from sweepjax.config import load_config
    from sweepjax.engine import run_sweep
    from sweepjax.engine.checkpoint import Interrupted, Store
    from sweepjax.engine.lock import OutputLock
    from sweepjax.engine.sweep import check_memory
    on_cpu = jax.default_backend() == "cpu"
    if args.resume:
        held.enter_context(OutputLock(args.resume, create=False, enabled=main_process))
        cfg, out = _resume_config(args, on_cpu)
    elif not args.config:
        raise ConfigError("sweepjax run needs a CONFIG file (or --resume DIR)")
    else:
        cfg = load_config(args.config, args.set, on_cpu=on_cpu)
        out = Path(args.out or cfg.run.out or Path("runs") / cfg.name)
        check_memory(cfg)
        held.enter_context(OutputLock(out, enabled=main_process))
        _check_out(out, args.overwrite)
        if on_cpu and "on_cpu" in Path(args.config).read_text(encoding="utf-8"):
            print("no accelerator found: using the config's [on_cpu] sizes (the full sweep needs a GPU)",
                  file=sys.stderr)
        if jax.process_count() > 1:  # every process checked the directory before any writes to it
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("sweepjax: output checked")
        if main_process:
            results.save_config(cfg, out)
    store = Store(out, keep=cfg.run.keep_checkpoints, every_steps=cfg.run.checkpoint_steps,
                  every_minutes=cfg.run.checkpoint_minutes)
    stop = _StopFlag()
    try:
        ds, manifest = run_sweep(cfg, store=store, should_stop=stop)
    except Interrupted as e:
        print(f"interrupted ({e}); checkpoint written. Resume with: sweepjax run --resume {out}", file=sys.stderr)
        return 130
    finally:
        stop.restore()
        store.close()
    if not main_process:  # multi-host: process 0 writes and analyses
        return 0
    manifest["command"] = " ".join(["sweepjax"] + sys.argv[1:])
    results.save(ds, cfg, out, manifest)
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
    print(f"results: {out}/ (results.nc, config.toml, manifest.json)")
    n_div = int(ds["diverged"].sum())
    if n_div:
        print(f"warning: {n_div} member(s) diverged and were frozen (see the 'diverged' variable)")
    analyse(out, ds, cfg.run)
    return 0


def start_distributed(args: argparse.Namespace) -> None:
    """Join a multi-process run (``jax.distributed.initialize``); the member axis then spans every
    process's devices. Without --coordinator etc. JAX detects the cluster (SLURM, TPU pods, ...)."""
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes need collectives
    jax.distributed.initialize(coordinator_address=args.coordinator, num_processes=args.num_processes,
                               process_id=args.process_id)


class _StopFlag:
    """SIGINT/SIGTERM set a flag: the run checkpoints after the current chunk and exits. A second
    Ctrl-C stops at once (the last checkpoint stays valid)."""

    def __init__(self):
        self.stop = False
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum, frame):
        if self.stop and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.stop = True
        print(f"\n{signal.Signals(signum).name}: finishing the current chunk, then checkpointing", file=sys.stderr)

    def __call__(self) -> bool:
        return self.stop

    def restore(self) -> None:
        for s, h in self.previous.items():
            signal.signal(s, h)


def analyse(out: Path, ds, run_cfg) -> None:
    """Width-scaling fit (printed, saved as fit.json) and figures, when the sweep has a width axis."""
    if "width" not in ds.dims or ds.sizes["width"] < 3:
        return
    from sweepjax.analysis.scaling import describe, width_scaling
    rows = width_scaling(ds, form=run_cfg.fit_form, n_boot=run_cfg.bootstrap)
    for row in rows:
        print(describe(row))
    (out / "fit.json").write_text(json.dumps(rows, indent=2))
    if run_cfg.figures:
        from sweepjax.plots import make_figures
        for path in make_figures(ds, rows, out / "figures"):
            print(f"figure: {path}")


def cmd_plot(args: argparse.Namespace) -> int:
    """Remake fit and figures of a results directory."""
    from sweepjax import results
    from sweepjax.config import load_config
    out = Path(args.dir)
    try:
        ds = results.load(out)
    except (FileNotFoundError, OSError) as e:
        raise ConfigError(f"cannot read results in {str(out)!r}: {e}") from None
    # only run.* is used: a config saved by an older version may hold keys refused since
    cfg = load_config(out / results.CONFIG_FILE, combinations=False)
    analyse(out, ds, cfg.run)
    return 0


def cmd_coordcheck(args: argparse.Namespace) -> int:
    """Train the config's widths for a few steps under SP and muP; table of activation spreads and a figure."""
    import jax

    from sweepjax import results
    from sweepjax.analysis.coordcheck import coordcheck_config, describe
    from sweepjax.config import load_config
    from sweepjax.engine import run_sweep
    from sweepjax.engine.lock import OutputLock
    from sweepjax.plots import plot_coordcheck
    cfg = coordcheck_config(load_config(args.config, args.set, on_cpu=jax.default_backend() == "cpu",
                                        combinations=False), args.steps)
    cfg.name = f"{cfg.name}-coordcheck"
    out = Path(args.out or Path("runs") / cfg.name)
    with OutputLock(out):
        _check_out(out, overwrite=True)
        ds, manifest = run_sweep(cfg)
        manifest["command"] = " ".join(["sweepjax"] + sys.argv[1:])
        results.save(ds, cfg, out, manifest)
        print(describe(ds))
        print(f"figure: {plot_coordcheck(ds, out / 'coordcheck.png')}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Devices and versions."""
    import jax

    from sweepjax.results import manifest
    info = manifest([], 0.0, [f"{d} ({d.device_kind})" for d in jax.devices()])
    for key in ("sweepjax", "jax", "jaxlib", "flax", "optax", "numpy", "scipy", "xarray", "python", "backend"):
        print(f"{key:10s} {info[key]}")
    for d in info["devices"]:
        print(f"device     {d}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Throughput of the engine against one-at-a-time JAX and PyTorch loops."""
    from sweepjax.bench import WORKLOADS, benchmark
    from sweepjax.config import parse_override
    names = list(WORKLOADS) if args.workload == "all" else [args.workload]
    for name in names:
        print(benchmark(name, args.small, overrides=[parse_override(o) for o in args.set]).text)
        print()
    return 0


def parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sweepjax`` command."""
    p = argparse.ArgumentParser(prog="sweepjax", description="Vectorized JAX sweeps and scaling-law fits.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a sweep from a TOML config, or resume one")
    r.add_argument("config", nargs="?")
    r.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    r.add_argument("--out", help="results directory (default: run.out or runs/<config name>)")
    r.add_argument("--overwrite", action="store_true", help="replace results already in the output directory")
    r.add_argument("--resume", metavar="DIR", help="continue the stopped sweep in DIR from its last checkpoint")
    r.add_argument("--allow-change", action="append", default=[], metavar="KEY",
                   help="on --resume, accept a change of this result-neutral key (e.g. run.bootstrap)")
    r.add_argument("--distributed", action="store_true", help="multi-host: call jax.distributed.initialize first")
    r.add_argument("--coordinator", help="with --distributed: coordinator address host:port (else auto-detected)")
    r.add_argument("--num-processes", type=int, help="with --distributed: number of processes")
    r.add_argument("--process-id", type=int, help="with --distributed: this process's index")
    r.set_defaults(func=cmd_run)
    pl = sub.add_parser("plot", help="remake the fit and figures of a results directory")
    pl.add_argument("dir")
    pl.set_defaults(func=cmd_plot)
    b = sub.add_parser("bench", help="throughput: engine vs one-at-a-time JAX vs PyTorch eager")
    b.add_argument("--workload", choices=["lottery", "residual-depth", "transformer", "all"], default="lottery")
    b.add_argument("--small", action="store_true", help="CPU-sized version of the workload")
    b.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    b.set_defaults(func=cmd_bench)
    c = sub.add_parser("coordcheck", help="activation sizes across widths after a few steps, SP vs muP")
    c.add_argument("config")
    c.add_argument("--steps", type=int, default=4, help="training steps (activations recorded after each)")
    c.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    c.add_argument("--out", help="results directory (default: runs/<config name>-coordcheck)")
    c.set_defaults(func=cmd_coordcheck)
    i = sub.add_parser("info", help="devices and versions")
    i.set_defaults(func=cmd_info)
    from sweepjax.fit.cli import add_fit_parser, run_fit
    add_fit_parser(sub)
    sub.choices["fit"].set_defaults(func=run_fit)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
