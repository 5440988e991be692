"""Mirror pairs in one-hidden-layer nets: neurons (w, b) with a partner near (-w, b).

In the lottery-ticket picture a symmetric pair (w, b), (-w, b) with equal output weights is the
best two-neuron "ticket" for an even target like x^2; a wide trained SiLU net is mostly made of them.
"""
from __future__ import annotations

import numpy as np


def mirror_distances(w: np.ndarray, b: np.ndarray, block: int = 1024) -> np.ndarray:
    """For each neuron i, min over j != i of ||(w_i, b_i) - (-w_j, b_j)||, divided by the median
    neuron norm ||(w, b)|| (so the distance is scale free). ``w``, ``b``: (N,) input weights, biases."""
    w, b = np.asarray(w, float), np.asarray(b, float)
    scale = np.median(np.hypot(w, b))
    out = np.empty(len(w))
    for s in range(0, len(w), block):
        d = np.hypot(w[s:s + block, None] + w[None, :], b[s:s + block, None] - b[None, :])
        rows = np.arange(s, min(s + block, len(w)))
        d[rows - s, rows] = np.inf
        out[rows] = d.min(axis=1)
    return out / scale


def mirror_fraction(w: np.ndarray, b: np.ndarray, tol: float = 0.05) -> float:
    """Fraction of neurons with a mirror partner within relative distance ``tol``."""
    return float(np.mean(mirror_distances(w, b) < tol))
