"""Scaling-law fitting: forms, robust estimation, uncertainty, compute-optimal analysis and
model comparison.

    from sweepjax import fit as sf
    res = sf.fit(widths, losses, "power_law_offset")        # Huber in log space, many starts
    boot = sf.bootstrap(widths, losses_by_seed, n_resamples=1000)   # (seeds, widths) -> runs
    boot.ci("alpha")
    sf.window_sensitivity(widths, losses)                   # exponent per fit window
    sf.compare_forms(widths, losses, holdout=2)             # rank forms by extrapolation
    sf.fit_results("runs/my_sweep", x="width", y="final_test_loss")

Module map: forms (the registry), inputs (validation, `FitInputError`), lbfgs (batched
multi-start L-BFGS), estimate (`fit`), uncertainty (`bootstrap`, `window_sensitivity`),
compare (`compare_forms`), compute_optimal (approaches 1-3), io (results directories,
CSV, xarray, pandas: `sweep_slices`, the one path from results to fit data, also used by
the width fit after a run), plot (`plot_fit`), cli (``sweepjax fit``).
"""

from .compare import compare_forms, extrapolation_errors
from .compute_optimal import ComputeOptimal, envelope, from_joint_fit, isoflop, tokens_for
from .estimate import METHODS, FitResult, fit, predict
from .forms import FORMS, Form, Param, additive_form, broken_power_law, get_form, register_form
from .inputs import FitInputError
from .io import Slice, fit_results, read_sweep, sweep_slices
from .plot import plot_fit
from .uncertainty import BootstrapResult, bootstrap, bootstrap_many, window_sensitivity

__all__ = [
    "FORMS", "METHODS", "BootstrapResult", "ComputeOptimal", "FitInputError", "FitResult",
    "Form", "Param", "Slice", "additive_form", "bootstrap", "bootstrap_many",
    "broken_power_law", "compare_forms", "envelope", "extrapolation_errors", "fit",
    "fit_results", "from_joint_fit", "get_form", "isoflop", "plot_fit", "predict",
    "read_sweep", "register_form", "sweep_slices", "tokens_for", "window_sensitivity",
]
