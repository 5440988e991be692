"""sweepjax: whole scaling-law sweeps as one compiled JAX program, and honest scaling-law fits."""
from sweepjax.results import load

__all__ = ["load"]
