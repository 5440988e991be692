"""QDG, quanta discovery from gradients (Michaud et al. 2023, the quantization model; issue 13 part 4).

Take the samples a trained member already predicts well (per-sample loss < ``threshold``), compute the
per-sample gradient of the loss w.r.t. all parameters (the MLP family has no embeddings or norms with
parameters, so nothing is excluded), scale each to unit L2 norm, form the cosine matrix C and the
affinity A = 1 - arccos(C) / pi, and cluster A by spectral clustering (precomputed affinity, many
k-means inits). The cluster sizes, sorted, are the rank-frequency curve of the discovered quanta (the
paper's toy QDG found a log-log slope ~ -1.1). On ``sparse-parity`` the true quanta are the subtasks,
read from the one-hot part of x, so the clusters are scored with the adjusted Rand index.

A member is rebuilt from a results Dataset saved with ``eval.save_params = true`` by
:func:`sweepjax.members.member_model` (re-exported here with :class:`~sweepjax.members.Member`,
``sweep_config`` and ``parse_members``).

Padded entries of a member's parameters are zero and masked, so their gradients are zero: they add
nothing to the norms or cosines, and the gradients are those of the member at its true size.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jax.flatten_util import ravel_pytree

from sweepjax.config import dim_name
from sweepjax.members import Member, member_model, parse_members, sweep_config
from sweepjax.results import saved_task

NULL_DRAWS = 200   # shuffles of the subtask ids for the ARI's chance level


# ---- the default member ------------------------------------------------------------------
def default_member(ds: xr.Dataset) -> dict[str, Any]:
    """The widest member of the first coordinates: the largest ``width``, the first value of every other
    sweep dim (seed 0 for the usual seed axis)."""
    cfg = sweep_config(ds)
    out = {}
    for key in cfg.sweep:
        d = dim_name(key)
        values = ds[d].values
        out[d] = (values.max() if d == "width" else values[0]).item()
    return out


# ---- per-sample gradients ---------------------------------------------------------------------
def _per_sample(apply_fn, params, x, y, loss_fn):
    def loss_one(p, xi, yi):
        return loss_fn(apply_fn(p, xi[None]), yi[None])[0]

    def flat_grad(xi, yi):
        return ravel_pytree(jax.grad(loss_one)(params, xi, yi))[0]

    return jax.vmap(flat_grad)(x, y)


_per_sample_jit = jax.jit(_per_sample, static_argnums=(0, 4))


def per_sample_gradients(apply_fn: Callable, params: dict, x: jax.Array, y: jax.Array, loss_fn: Callable,
                         chunk: int | None = None) -> jax.Array:
    """Gradient of each sample's loss w.r.t. all parameters, flattened: (n_samples, n_params).

    ``apply_fn(params, x_batch) -> outputs``; ``loss_fn(outputs, y_batch) -> per-example losses``. It is
    ``jax.vmap`` of ``jax.grad`` over the samples, jitted (``apply_fn`` and ``loss_fn`` are static: pass
    the same function objects to reuse the compilation). ``chunk``: samples per vmapped call (bounds
    memory; None = all at once). Parameters are flattened in ``ravel_pytree`` order.
    """
    n = x.shape[0]
    if not chunk or chunk >= n:
        return _per_sample_jit(apply_fn, params, x, y, loss_fn)
    parts = [_per_sample_jit(apply_fn, params, x[i:i + chunk], y[i:i + chunk], loss_fn) for i in range(0, n, chunk)]
    return jnp.concatenate(parts, axis=0)


# ---- clustering ------------------------------------------------------------------------------
def gradient_affinity(grads: np.ndarray) -> np.ndarray:
    """Affinity of per-sample gradients: each row scaled to unit L2 norm, cosines C, A = 1 - arccos(C) / pi
    (in [0, 1]; 1 for parallel gradients, 1/2 for orthogonal ones, 0 for opposite ones)."""
    g = np.asarray(grads, np.float64)
    norms = np.linalg.norm(g, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("a per-sample gradient is exactly zero: it has no direction")
    g = g / norms
    c = np.clip(g @ g.T, -1.0, 1.0)
    return 1.0 - np.arccos(c) / np.pi


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def spectral_clusters(affinity: np.ndarray, k: int, n_init: int = 30, seed: int = 0) -> np.ndarray:
    """Cluster labels (n,) from a precomputed affinity by spectral clustering (``n_init`` k-means inits)."""
    from sklearn.cluster import SpectralClustering
    n = affinity.shape[0]
    if k < 1:
        raise ValueError(f"clusters = {k}: need at least one cluster")
    if k == 1:
        return np.zeros(n, np.int64)
    if n <= k:
        raise ValueError(f"{n} samples cannot be split into {k} clusters")
    sc = SpectralClustering(n_clusters=k, affinity="precomputed", n_init=n_init, random_state=seed,
                            assign_labels="kmeans")
    return np.asarray(sc.fit_predict(affinity), np.int64)


def rank_frequency(labels: np.ndarray) -> tuple[np.ndarray, float]:
    """Cluster sizes sorted from largest to smallest, and the least-squares slope of log size vs log rank
    (NaN with fewer than two clusters)."""
    sizes = np.sort(np.bincount(np.asarray(labels)))[::-1]
    sizes = sizes[sizes > 0]
    if len(sizes) < 2:
        return sizes, float("nan")
    rank = np.arange(1, len(sizes) + 1)
    slope = np.polyfit(np.log(rank), np.log(sizes), 1)[0]
    return sizes, float(slope)


# ---- QDG on a sweep member --------------------------------------------------------------------
@dataclass
class QDGResult:
    """What :func:`qdg` found. :meth:`summary` is the JSON-serialisable part; the arrays are per kept sample."""
    member: dict[str, Any]
    n_drawn: int
    n_kept: int
    threshold: float
    clusters: int
    cluster_sizes: np.ndarray          # sorted, largest first (rank-frequency)
    slope: float                       # log-log slope of cluster size vs rank
    ari: float                         # adjusted Rand index of the clusters vs the true subtasks
    labels: np.ndarray                 # cluster of each kept sample
    subtasks: np.ndarray               # true subtask id of each kept sample
    losses: np.ndarray                 # per-sample loss of each kept sample (task's unit)
    contingency: np.ndarray            # (clusters, n_tasks) counts of kept samples
    subtask_kept: np.ndarray           # (n_tasks,) kept samples of each subtask
    subtask_drawn: np.ndarray          # (n_tasks,) drawn samples of each subtask
    extra: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Plain-Python dict (JSON-serialisable)."""
        f = lambda v: None if not np.isfinite(v) else float(v)
        return {
            "member": {k: (v.item() if hasattr(v, "item") else v) for k, v in self.member.items()},
            "n_drawn": int(self.n_drawn), "n_kept": int(self.n_kept), "threshold": float(self.threshold),
            "clusters": int(self.clusters), "cluster_sizes": [int(s) for s in self.cluster_sizes],
            "rank_frequency_slope": f(self.slope), "adjusted_rand_index": f(self.ari),
            "subtasks_present": int(np.count_nonzero(self.subtask_kept)),
            "subtask_kept": [int(s) for s in self.subtask_kept],
            "subtask_drawn": [int(s) for s in self.subtask_drawn],
            "contingency": self.contingency.astype(int).tolist(),
            **self.extra,
        }

    def to_json(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.summary(), indent=2))
        return path


def qdg(ds: xr.Dataset, member: dict | None = None, n_samples: int = 2000, clusters: int | None = None,
        threshold: float = 0.1, seed: int = 0, n_init: int = 30, chunk: int = 1024,
        align_labels: bool = False) -> QDGResult:
    """Quanta discovery from gradients on one member of a ``sparse-parity`` sweep.

    ``member``: its sweep coordinates (default :func:`default_member`: the widest member of the first
    coordinates). Draws ``n_samples`` examples from the task with the member's ``zipf_exponent`` (key
    ``seed``), keeps those with per-sample loss < ``threshold`` (in the task's unit, bits), clusters their
    normalised per-sample gradients into ``clusters`` clusters (default: the number of distinct subtasks
    among the kept samples, so the adjusted Rand index is scored at the true number of quanta) and scores
    the clusters against the true subtask ids, beside the ARI's chance level (``ari_null_mean``/``_sd`` in
    ``extra``: the same clusters scored against ``NULL_DRAWS`` shuffles of the subtask ids) and two baselines
    that know nothing learned (``ari_inputs``: the same clustering of the raw inputs; ``ari_init_gradients``:
    of the member's gradients at initialisation, ``param.init.*``): the clusters reflect learned quanta only
    where the ARI beats both.

    ``align_labels`` (not in the paper; default off): multiply each gradient by its label's sign (+1 for
    parity 1, -1 for parity 0). With two classes the cross-entropy gradient is -p_wrong * s_y * d(logit_1 -
    logit_0)/dtheta, so two samples of one subtask with opposite labels have nearly opposite gradients
    and the paper's affinity splits every subtask by label; aligned, the gradients are those of each
    sample's correct-class margin, and the clusters follow the subtasks much more closely (see the tests).
    """
    from sklearn.metrics import adjusted_rand_score

    from sweepjax.models import dtypes
    from sweepjax.tasks import make_task
    name = saved_task(ds).get("name", "regression-1d")
    if name != "sparse-parity":
        raise ValueError(f"qdg scores clusters against sparse-parity subtasks; these results are of task {name!r}")
    if n_samples < 2:
        raise ValueError(f"n_samples = {n_samples}: QDG clusters at least 2 samples")
    # Dims not given default to the widest member's first coordinates.
    m = member_model(ds, **{**default_member(ds), **{dim_name(k): v for k, v in (member or {}).items()}})
    cfg = m.config
    task = make_task(cfg.task)
    dtype = dtypes(cfg)[0]
    n_tasks = cfg.task.n_tasks
    tm = {k.split(".", 1)[1]: jnp.asarray(cfg.get(k), dtype) for k in task.MEMBER_KEYS}
    keys = jax.random.split(jax.random.key(seed), n_samples)
    x, y = task.examples(keys, tm, dtype)
    subtask = np.asarray(jnp.argmax(x[:, :n_tasks], axis=1))
    apply_fn = m.apply
    loss_fn = lambda out, yb: task.losses(out, yb, tm)
    losses = np.asarray(jax.jit(lambda p, xb, yb: loss_fn(apply_fn(p, xb), yb))(m.params, x, y))
    keep = np.flatnonzero(losses < threshold)
    if len(keep) < 2:
        raise ValueError(f"only {len(keep)} of {n_samples} samples have loss < {threshold}: member {m.coords} "
                         f"predicts too little well for QDG")
    grads = np.asarray(per_sample_gradients(apply_fn, m.params, x[keep], y[keep], loss_fn, chunk=chunk))
    nonzero = np.linalg.norm(grads, axis=1) > 0   # a saturated sample (gradient underflowed to 0) has no direction
    keep, grads = keep[nonzero], grads[nonzero]
    if align_labels:
        grads = grads * np.where(np.asarray(y)[keep] == 1, 1.0, -1.0)[:, None]
    sub_kept = subtask[keep]
    k = int(clusters) if clusters is not None else int(len(np.unique(sub_kept)))
    labels = spectral_clusters(gradient_affinity(grads), k, n_init=n_init, seed=seed)
    sizes, slope = rank_frequency(labels)
    several = len(np.unique(sub_kept)) > 1   # with one subtask kept the ARI is 1 whatever the clusters: undefined
    ari = float(adjusted_rand_score(sub_kept, labels)) if several else float("nan")
    # Baselines that know nothing learned: the same clustering of the raw inputs, and of the gradients of the
    # member at its initialisation (same samples, same K): QDG finds quanta only where it beats them.
    score = lambda g: (float(adjusted_rand_score(sub_kept, spectral_clusters(gradient_affinity(g), k, n_init=n_init,
                                                                              seed=seed))) if several else float("nan"))
    baselines = {"ari_inputs": score(np.asarray(x)[keep])}
    m0 = member_model(ds, initial=True, **m.coords)
    g0 = np.asarray(per_sample_gradients(m0.apply, m0.params, x[keep], y[keep], loss_fn, chunk=chunk))
    if align_labels:
        g0 = g0 * np.where(np.asarray(y)[keep] == 1, 1.0, -1.0)[:, None]
    baselines["ari_init_gradients"] = score(g0) if np.all(np.linalg.norm(g0, axis=1) > 0) else float("nan")
    rng = np.random.default_rng(seed)   # chance level: the same clusters against shuffled subtask ids
    null = np.array([adjusted_rand_score(rng.permutation(sub_kept), labels) if several else np.nan
                     for _ in range(NULL_DRAWS)])
    cont = np.zeros((k, n_tasks), np.int64)
    np.add.at(cont, (labels, sub_kept), 1)
    return QDGResult(
        member=m.coords, n_drawn=n_samples, n_kept=len(keep), threshold=threshold, clusters=k,
        cluster_sizes=sizes, slope=slope, ari=ari, labels=labels, subtasks=sub_kept, losses=losses[keep],
        contingency=cont, subtask_kept=np.bincount(sub_kept, minlength=n_tasks),
        subtask_drawn=np.bincount(subtask, minlength=n_tasks),
        extra={**{key: _finite(v) for key, v in baselines.items()}, "ari_null_mean": _finite(null.mean()), "ari_null_sd": _finite(null.std()), "ari_null_draws": NULL_DRAWS,
               "n_params": int(grads.shape[1]), "zero_gradients_dropped": int(np.count_nonzero(~nonzero)),
               "seed": int(seed), "align_labels": bool(align_labels)})


def plot_rank_frequency(result: QDGResult, path: str | Path) -> Path:
    """Log-log rank-frequency plot of the QDG cluster sizes with the fitted slope."""
    from sweepjax.plots import plt, save
    sizes = np.asarray(result.cluster_sizes, float)
    rank = np.arange(1, len(sizes) + 1)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(rank, sizes, "o-", label="QDG clusters")
    if np.isfinite(result.slope):
        c = np.mean(np.log(sizes) - result.slope * np.log(rank))
        ax.plot(rank, np.exp(c) * rank ** result.slope, "--", color="gray", label=f"fit: slope {result.slope:.2f}")
    true = np.sort(result.subtask_kept[result.subtask_kept > 0])[::-1]
    ax.plot(np.arange(1, len(true) + 1), true, "s", mfc="none", color="C1", label="true subtasks (kept samples)")
    ax.set(xscale="log", yscale="log", xlabel="rank", ylabel="samples in cluster",
           title=f"QDG rank-frequency, ARI {result.ari:.2f} ({result.n_kept} samples)")
    ax.legend(fontsize=8)
    return save(fig, Path(path))


def run_qdg_cli(results_dir: str | Path, member: dict | None = None, clusters: int | None = None,
                out_json: str | Path | None = None, plot_path: str | Path | None = None,
                n_samples: int = 2000, threshold: float = 0.1, seed: int = 0, align_labels: bool = False) -> QDGResult:
    """What ``sweepjax qdg RESULTS_DIR`` does: QDG on one member (``member`` values may be text, as
    ``--member width=64`` gives them), the summary written to ``out_json`` (default ``RESULTS_DIR/qdg.json``)
    and the rank-frequency figure to ``plot_path`` (default ``RESULTS_DIR/figures/qdg_rank_frequency.png``);
    prints one line."""
    from sweepjax import results
    out = Path(results_dir)
    ds = results.load(out)
    base = out if out.is_dir() else out.parent
    res = qdg(ds, member=member or None, clusters=clusters, n_samples=n_samples, threshold=threshold, seed=seed,
              align_labels=align_labels)
    out_json = Path(out_json) if out_json else base / "qdg.json"
    plot_path = Path(plot_path) if plot_path else base / "figures" / "qdg_rank_frequency.png"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    plot_path.parent.mkdir(parents=True, exist_ok=True)
    res.to_json(out_json)
    plot_rank_frequency(res, plot_path)
    print(f"qdg {res.member}: {res.n_kept}/{res.n_drawn} samples kept, {res.clusters} clusters, "
          + (f"ARI {res.ari:.3f} (chance {res.extra['ari_null_mean']:.3f} +- {res.extra['ari_null_sd']:.3f}; "
             f"raw inputs {res.extra['ari_inputs']:.3f}, gradients at init {res.extra['ari_init_gradients']:.3f}), "
             if np.isfinite(res.ari) else "ARI undefined (one subtask among the kept samples), ") +
          f"rank-frequency slope {res.slope:.2f}; wrote {out_json} and {plot_path}")
    return res


__all__ = ["Member", "QDGResult", "member_model", "default_member", "sweep_config", "per_sample_gradients",
           "gradient_affinity", "spectral_clusters", "rank_frequency", "qdg", "plot_rank_frequency",
           "run_qdg_cli", "parse_members"]

