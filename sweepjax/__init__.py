"""sweepjax: whole scaling-law sweeps as one compiled JAX program, and honest scaling-law fits.

The Python API (JAX is imported only when a run starts, or when results are loaded)::

    import sweepjax
    ds = sweepjax.run("configs/quickstart.toml", set={"train.steps": 200})   # in memory, an xarray Dataset
    ds = sweepjax.run({"sweep": {"seed": [0, 1]}}, out="runs/mine")           # also writes runs/mine/
    ds = sweepjax.load("runs/mine")                                           # a results directory

``sweepjax.run`` is the function :func:`sweepjax.run.run`; the module's other pieces (``run_sweep``,
``check_memory``, ...) are reached with ``from sweepjax.run import ...``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from sweepjax.run import run  # binds the name to the function (the submodule stays in sys.modules)

if TYPE_CHECKING:
    from sweepjax.results import load

__all__ = ["fit", "load", "run"]


def __getattr__(name: str):
    """``sweepjax.load`` and ``sweepjax.fit``, imported on first use (they import JAX)."""
    if name == "load":
        from sweepjax.results import load
        globals()["load"] = load
        return load
    if name == "fit":
        import importlib
        return importlib.import_module("sweepjax.fit")
    raise AttributeError(f"module 'sweepjax' has no attribute {name!r}")
