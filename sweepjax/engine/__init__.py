"""The sweep engine: stacked init, vmapped train step, chunked loop, evaluation."""
from sweepjax.engine.sweep import run_sweep

__all__ = ["run_sweep"]
