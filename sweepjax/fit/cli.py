"""The ``sweepjax fit`` subcommand: fit a scaling law to an engine results directory or a
CSV file and print parameters with bootstrap intervals, convergence, fit-window
sensitivity and (with --holdout) a ranking of forms by extrapolation error.

The data come from `sweepjax.fit.io.sweep_slices`, as for the width fit after a run: diverged
runs count as the worst loss and the loss floor the results carry is subtracted (--no-floor: not)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .compare import DEFAULT_FORMS, compare_forms
from .estimate import METHODS, FitResult, Options, fit
from .forms import FORMS
from .inputs import FitInputError
from .io import sweep_slices
from .plot import plot_fit
from .uncertainty import BootstrapResult, bootstrap, window_sensitivity


def add_fit_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``fit`` subcommand (and its options) to ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "fit", help="fit a scaling law to sweep results or a CSV file",
        description="Fit a scaling law (log-space Huber, multi-start L-BFGS by default) and "
                    "report parameters with bootstrap intervals, convergence and fit-window "
                    "sensitivity.")
    p.add_argument("path", metavar="PATH",
                   help="engine results directory (with results.nc), a .nc file or a .csv file")
    p.add_argument("--x", default="width",
                   help="size dimension or column; for joint forms a comma list in the form's "
                        "variable order, e.g. n_params,tokens (default: width)")
    p.add_argument("--y", default="final_test_loss", help="loss variable or column")
    p.add_argument("--no-floor", dest="floor", action="store_false",
                   help="fit y as stored: do not subtract the loss floor the results carry "
                        "(test_bayes_loss, else irreducible_loss)")
    p.add_argument("--form", default="power_law_offset", choices=sorted(FORMS))
    p.add_argument("--method", default=Options.method, choices=METHODS)
    p.add_argument("--delta", type=float, default=Options.delta,
                   help="Huber threshold in log-loss units (default 1e-3)")
    p.add_argument("--reduce", default="median", choices=("median", "mean"),
                   help="how runs (seeds) of one point are combined (NaN-aware)")
    p.add_argument("--over", default="seed",
                   help="run dimension(s)/column(s), comma list (default: seed, if present)")
    p.add_argument("--by", default=None,
                   help="column(s) that split a CSV into separate fits (xarray results: "
                        "every other swept dimension does)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="bootstrap resamples, over runs if there are several, else over "
                        "points (0: none; default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    p.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
    p.add_argument("--drop", type=int, default=2, metavar="K",
                   help="fit windows: drop up to K smallest and K largest sizes (default 2)")
    p.add_argument("--holdout", type=int, default=0, metavar="K",
                   help="rank the --compare forms by extrapolation error on the K largest sizes")
    p.add_argument("--compare", default=",".join(DEFAULT_FORMS),
                   help="forms ranked with --holdout (comma list)")
    p.add_argument("--plot", metavar="FILE", help="save a figure (one per slice) to FILE")
    p.add_argument("--json", metavar="FILE", help="write all results as JSON to FILE")
    p.set_defaults(func=run_fit)
    return p


def _format(res: FitResult, boot: BootstrapResult | None, n_runs: int, reduce: str,
            label: str) -> list[str]:
    runs = f", {n_runs} runs per point reduced by {reduce}" if n_runs > 1 else ""
    lines = [f"form {res.form}: {res.spec.formula}", f"  y: {label}",
             f"  method {res.method}, {res.n_points} points{runs}, objective {res.objective:.6g}"]
    ci_head = (f"{100 * boot.level:g}% CI (bootstrap over {boot.over}, {boot.n_resamples} "
               f"resamples)") if boot else "(no bootstrap)"
    lines.append(f"  {'param':<8} {'value':>14}   {ci_head}")
    for k, v in res.params.items():
        ci = "[{:.6g}, {:.6g}]".format(*boot.ci(k)) if boot else ""
        lines.append(f"  {k:<8} {v:>14.6g}   {ci}")
    spread = ", ".join(f"{k} {v:.2g}" for k, v in res.start_spread.items())
    lines.append(f"  convergence: best start {'converged' if res.converged else 'DID NOT CONVERGE'}"
                 f"; {res.n_converged}/{res.n_starts} starts converged; {res.n_near_best} "
                 f"reached the best objective (parameter spread among them: {spread})")
    if boot:
        lines.append(f"  bootstrap: {boot.n_valid}/{boot.n_resamples} resamples fitted, "
                     f"{int(boot.converged.sum())} converged")
    return lines


def _plot_path(path: str, key: object, many: bool) -> Path:
    p = Path(path)
    if not many:
        return p
    tag = "_".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
    return p.with_name(f"{p.stem}_{''.join(c if c.isalnum() or c in '.-' else '_' for c in tag)}{p.suffix}")


def _json_default(o: object) -> object:
    return o.item() if hasattr(o, "item") else str(o)


def run_fit(args: argparse.Namespace) -> int:
    """Run ``sweepjax fit`` with parsed ``args``; prints the report, returns the exit code
    (0 ok, 2 bad input with a one-line ``error:`` message on stderr)."""
    try:
        slices = sweep_slices(args.path, args.x, args.y, args.over, args.by, floor=args.floor,
                              log=sys.stderr)
        options = dict(method=args.method, delta=args.delta)
        report = []
        for key, part in slices.items():
            X, Y = part.x, part.y
            boot = None
            if args.bootstrap > 0:
                boot = bootstrap(X, Y, args.form, n_resamples=args.bootstrap, seed=args.seed,
                                 level=args.level, reduce=args.reduce, **options)
                res = boot.point
            else:
                res = fit(*part.reduced(args.reduce), args.form, **options)
            lines = [] if key is None else [f"== {key} =="]
            lines += _format(res, boot, len(Y), args.reduce, part.label)
            entry = {"key": None if key is None else str(key), "y": part.label, "form": res.form,
                     "method": res.method, "params": res.params, "objective": res.objective,
                     "converged": res.converged, "n_starts": res.n_starts,
                     "n_converged": res.n_converged, "start_spread": res.start_spread}
            if boot:
                entry["ci"] = {k: boot.ci(k) for k in res.params}
                entry["level"] = boot.level
            if args.drop > 0:
                windows = window_sensitivity(X, Y, args.form, range(args.drop + 1),
                                             range(args.drop + 1), reduce=args.reduce, **options)
                lines.append("  fit-window sensitivity (separate from the bootstrap error):")
                lines += ["    " + s for s in windows.to_string(index=False).splitlines()]
                for e in res.spec.exponents:
                    lines.append(f"    {e} over windows: [{np.nanmin(windows[e]):.6g}, "
                                 f"{np.nanmax(windows[e]):.6g}]")
                entry["windows"] = windows.to_dict(orient="records")
            if args.holdout > 0:
                ranking = compare_forms(X, Y, [f for f in args.compare.split(",") if f],
                                        holdout=args.holdout, reduce=args.reduce, **options)
                lines.append(f"  forms ranked by extrapolation to the {args.holdout} largest sizes:")
                lines += ["    " + s for s in ranking.to_string().splitlines()]
                entry["compare"] = ranking.reset_index().to_dict(orient="records")
            if args.plot:
                out = plot_fit(res, X, Y, _plot_path(args.plot, key, len(slices) > 1), boot=boot,
                               xlabel=part.names[0])
                lines.append(f"  plot: {out}")
                entry["plot"] = str(out)
            print("\n".join(lines))
            report.append(entry)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2, default=_json_default))
    except (ValueError, OSError) as err:  # FitInputError is a ValueError
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return 0
