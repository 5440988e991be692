"""Command line: ``sweepjax run | coordcheck | fit | plot | bench | info``.

User mistakes (bad config, bad paths) print one ``error:`` line and exit with code 2.
"""
from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from sweepjax.config import ConfigError

EXIT_USER_ERROR = 2


def cmd_run(args: argparse.Namespace) -> int:
    """Run (or resume) a sweep with :func:`sweepjax.run.run`: save results, fit the width exponent, make figures."""
    if args.distributed:
        start_distributed(args)
    if not args.config and not args.resume:
        raise ConfigError("sweepjax run needs a CONFIG file (or --resume DIR)")
    from sweepjax.engine.checkpoint import Interrupted
    from sweepjax.run import run
    stop = _StopFlag()
    try:
        run(args.config, args.set, out=Path(args.resume) if args.resume else (args.out or True), progress=True,
            overwrite=args.overwrite, resume=bool(args.resume), allow_change=args.allow_change, should_stop=stop,
            command=" ".join(["sweepjax"] + sys.argv[1:]))
    except Interrupted as e:
        print(f"interrupted ({e}); checkpoint written. Resume with: sweepjax run --resume {e.out}", file=sys.stderr)
        return 130
    finally:
        stop.restore()
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


def cmd_plot(args: argparse.Namespace) -> int:
    """Remake fit and figures of a results directory."""
    from sweepjax import results
    from sweepjax.config import build_config, read_toml
    from sweepjax.run import analyse
    out = Path(args.dir)
    try:
        ds = results.load(out)
    except (FileNotFoundError, OSError) as e:
        raise ConfigError(f"cannot read results in {str(out)!r}: {e}") from None
    # Only the [run] table is used: a config saved by an older version may hold keys since refused
    # or moved (task keys of other tasks, model.zero_readout).
    run_cfg = build_config({"run": read_toml(out / results.CONFIG_FILE).get("run", {})}, combinations=False).run
    analyse(out, ds, run_cfg, log=sys.stdout, warn=sys.stderr)
    return 0


def cmd_qdg(args: argparse.Namespace) -> int:
    """QDG on one member: cluster sizes, rank-frequency slope, ARI vs the true subtasks."""
    from sweepjax.analysis.qdg import run_qdg_cli
    from sweepjax.members import parse_members
    try:
        run_qdg_cli(args.dir, parse_members(args.member), args.clusters, args.json, args.plot,
                    n_samples=args.samples, threshold=args.threshold, align_labels=args.align_labels)
    except (ValueError, FileNotFoundError, OSError) as e:
        raise ConfigError(str(e)) from None
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    """Ensemble loss vs K for every point of a sweep with saved predictions: the table, and a figure."""
    from sweepjax import ensemble, results
    try:
        ds = results.load(args.dir)
        by = args.by or None if args.by is not None else next((d for d in ("width", "depth") if d in ds.dims), None)
        ks = [float(k) for k in args.k.split(",")] if args.k else None
        rows = ensemble.ensemble_table(ds, ks, by=by, over=tuple(args.over.split(",")), mode=args.mode,
                                       draws=args.draws)
        print(ensemble.describe(rows))
        if args.plot:
            print(f"wrote: {ensemble.plot_table(rows, args.plot, by)}")
    except (ValueError, FileNotFoundError, OSError) as e:
        raise ConfigError(str(e)) from None
    return 0


def cmd_coordcheck(args: argparse.Namespace) -> int:
    """Train the config's widths for a few steps under SP and muP; table of activation spreads and a figure."""
    import jax

    from sweepjax import results
    from sweepjax.analysis.coordcheck import coordcheck_config, describe
    from sweepjax.config import load_config
    from sweepjax.engine.lock import OutputLock
    from sweepjax.analysis.coordcheck import plot_coordcheck
    from sweepjax.run import check_out, run_sweep
    cfg = coordcheck_config(load_config(args.config, args.set, on_cpu=jax.default_backend() == "cpu",
                                        combinations=False), args.steps)
    cfg.name = f"{cfg.name}-coordcheck"
    out = Path(args.out or Path("runs") / cfg.name)
    with OutputLock(out):
        check_out(out, overwrite=True)
        ds, manifest = run_sweep(cfg, log=sys.stderr)
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
    """Throughput of the engine against one-at-a-time JAX and PyTorch loops and stacked PyTorch (eager, compiled)."""
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
    b = sub.add_parser("bench", help="throughput: engine vs one-at-a-time JAX and PyTorch, and stacked PyTorch")
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
    q = sub.add_parser("qdg", help="quanta discovery from gradients on one member of a sparse-parity sweep")
    q.add_argument("dir", metavar="RESULTS_DIR")
    q.add_argument("--member", action="append", default=[], metavar="KEY=VALUE",
                   help="the member's coordinate on a sweep dim (repeatable; default: widest member, first coords)")
    q.add_argument("--clusters", type=int, default=None, help="number of clusters (default: subtasks present)")
    q.add_argument("--samples", type=int, default=2000, help="samples drawn from the task")
    q.add_argument("--threshold", type=float, default=0.1, help="keep samples with loss below this (bits)")
    q.add_argument("--align-labels", action="store_true", help="multiply each gradient by its label's sign")
    q.add_argument("--json", help="summary path (default RESULTS_DIR/qdg.json)")
    q.add_argument("--plot", help="figure path (default RESULTS_DIR/figures/qdg_rank_frequency.png)")
    q.set_defaults(func=cmd_qdg)
    e = sub.add_parser("ensemble", help="loss of ensembles of K members vs K (results with saved predictions)")
    e.add_argument("dir", metavar="RESULTS_DIR")
    e.add_argument("--by", default=None, help="size dim to compare K members of size N with one of K x N "
                                               "parameters ('' for none; default: width, else depth, if swept)")
    e.add_argument("--over", default="seed", help="dim(s) whose members are combined, e.g. seed or seed,width "
                                                   "(ensembles across sizes; default seed)")
    e.add_argument("--k", help="ensemble sizes, e.g. 1,2,4,8 (default: powers of two)")
    e.add_argument("--mode", choices=("random", "best"), default="random",
                   help="random K members, or the K best by validation loss")
    e.add_argument("--draws", type=int, default=200, help="random draws per K")
    e.add_argument("--plot", help="write the figure here")
    e.set_defaults(func=cmd_ensemble)
    i = sub.add_parser("info", help="devices and versions")
    i.set_defaults(func=cmd_info)
    # The fit parser lives with the fitting library, which imports JAX: it is built only when
    # `sweepjax fit ...` runs. Here every argument after "fit" is passed on as it is (no prefix char).
    f = sub.add_parser("fit", help="fit a scaling law to sweep results or a CSV file", add_help=False,
                       prefix_chars="\0")
    f.add_argument("fit_args", nargs=argparse.REMAINDER)
    f.set_defaults(func=cmd_fit)
    return p


def cmd_fit(args: argparse.Namespace) -> int:
    """``sweepjax fit``: parse the arguments with the fitting library's own parser, then fit."""
    from sweepjax.fit.cli import add_fit_parser, run_fit
    p = argparse.ArgumentParser(prog="sweepjax")
    add_fit_parser(p.add_subparsers(dest="command", required=True))
    return run_fit(p.parse_args(["fit", *args.fit_args]))


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
