"""Ensembles of trained members: the loss of the average of K members' predictions as a function of K.

Works on a results Dataset saved with ``eval.save_predictions = true`` (``predictions``: sweep dims +
``x`` (+ ``output`` for vector outputs), and ``test_target``). Members are combined as the task's
outputs combine: the mean of the outputs, scored by the squared error averaged over points and output
components (the tasks that save predictions are those). Diverged members (NaN predictions) are left
out and counted.

Two ways to pick K members out of the runs of one point (the ``over`` dim, ``seed`` by default):

* ``mode = "random"``: ``draws`` random subsets of K members (without replacement);
* ``mode = "best"``: the K members with the lowest VALIDATION loss ("tickets"). The test points are split
  in two alternating halves: members are ranked on the even points (validation) and every ensemble, in
  both modes, is scored on the odd points, so a best-K ensemble is never chosen on the points that score it.

Everything for one point is one jitted computation, vectorised over K and draws: weights (K, draws,
members) times predictions (members, points).
"""
from __future__ import annotations

import itertools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

MODES = ("random", "best")


@partial(jax.jit, static_argnames=("draws", "best"))
def _losses(pred: jax.Array, target: jax.Array, ok: jax.Array, val: jax.Array, ks: jax.Array, key: jax.Array,
            draws: int, best: bool) -> jax.Array:
    """(len(ks), draws) squared errors of K-member means on the scoring points; NaN where K > members."""
    m = pred.shape[0]
    if best:   # rank by validation loss (diverged members last); one "draw", repeated
        score = jnp.where(ok, val, jnp.inf)[None, :].repeat(draws, 0)
    else:
        score = jnp.where(ok, jax.random.uniform(key, (draws, m)), jnp.inf)
    rank = jnp.argsort(jnp.argsort(score, axis=1), axis=1)                       # (draws, m)
    weights = (rank[None] < ks[:, None, None]) / ks[:, None, None]               # (K, draws, m)
    mean = jnp.einsum("kdm,mp->kdp", weights, jnp.where(ok[:, None], pred, 0.0))
    loss = jnp.mean(jnp.square(mean - target), axis=-1)
    return jnp.where(ks[:, None] <= jnp.sum(ok), loss, jnp.nan)


def ensemble_losses(pred: np.ndarray, target: np.ndarray, ks, draws: int = 100, mode: str = "random",
                    seed: int = 0) -> np.ndarray:
    """Losses of K-member ensembles of the members ``pred`` (members, points[, outputs]) against ``target``
    (points[, outputs]): (len(ks), draws), scored on the odd points (see the module docstring); rows with K
    larger than the number of finite members are NaN. ``mode = "best"`` repeats its one ensemble in
    every draw."""
    if mode not in MODES:
        raise ValueError(f"mode = {mode!r}: one of {', '.join(MODES)}")
    pred, target = np.asarray(pred, np.float32), np.asarray(target, np.float32)
    if pred.ndim < 2 or target.shape != pred.shape[1:] or pred.shape[1] < 2:
        raise ValueError(f"predictions {pred.shape} and target {target.shape}: need (members, points[, outputs]) and "
                         f"(points[, outputs]), points >= 2")
    ks = np.asarray(list(ks), np.int32)
    if ks.size == 0 or ks.min() < 1:
        raise ValueError(f"ks = {ks.tolist()}: ensemble sizes are >= 1")
    m = pred.shape[0]
    ok = np.all(np.isfinite(pred.reshape(m, -1)), axis=1)
    val = np.mean(np.square(np.nan_to_num(pred[:, 0::2]) - target[0::2]).reshape(m, -1), axis=1)
    scored, scored_target = pred[:, 1::2].reshape(m, -1), target[1::2].reshape(-1)
    out = _losses(jnp.asarray(scored), jnp.asarray(scored_target), jnp.asarray(ok), jnp.asarray(val),
                  jnp.asarray(ks), jax.random.key(seed), draws, mode == "best")
    return np.asarray(out, np.float64)


def _size_of(ds: xr.Dataset, sel: dict) -> float | None:
    """Parameters of one member at ``sel`` (stored counts), None without them."""
    if "n_params" not in ds:
        return None
    counts = ds["n_params"].sel(sel)
    return float(counts.max()) if counts.size else None


def ensemble_table(ds: xr.Dataset, ks=None, by: str | None = "width", over: str = "seed", mode: str = "random",
                   draws: int = 200, seed: int = 0) -> list[dict]:
    """Ensemble loss vs K for every point of the sweep: one row per (value of the other dims, K).

    ``over``: the dim whose members are combined (``seed``); ``by``: the size dim (``width``, ``depth`` ...)
    against which each ensemble of K members of size N is compared with one member of K x N parameters
    (the size whose stored ``n_params`` is nearest K times N's, within 25%; its median over ``over``).
    ``ks``: ensemble sizes (default powers of two up to the number of members). Each row: the point's
    coordinates, ``K``, ``members`` (finite), ``diverged``, ``median``/``q25``/``q75`` over the draws (the
    one best-K ensemble: all three equal), ``single`` (median member loss on the same points), and with
    ``by``: ``n_params`` (K x N's), ``matched`` (the size used) and ``matched_loss``.
    """
    if "predictions" not in ds or "test_target" not in ds:
        raise ValueError("these results hold no predictions: run the sweep with eval.save_predictions = true")
    if over not in ds["predictions"].dims:
        raise ValueError(f"over = {over!r} is not a dim of the predictions (dims: {list(ds['predictions'].dims)})")
    if by is not None and by not in ds.dims:
        raise ValueError(f"by = {by!r} is not a dim of the results (dims: {list(ds.dims)})")
    pred = ds["predictions"]
    rest = [d for d in ("x", "output") if d in pred.dims]
    other = [d for d in pred.dims if d not in [over] + rest]
    n = pred.sizes[over]
    ks = [int(k) for k in (ks if ks is not None else 2 ** np.arange(int(np.log2(n)) + 1))]
    target = ds["test_target"].values
    singles = {}
    rows = []
    for combo in itertools.product(*(ds[d].values.tolist() for d in other)):
        sel = dict(zip(other, combo))
        p = pred.sel(sel).transpose(over, *rest).values
        losses = ensemble_losses(p, target, ks, draws, mode, seed)
        ok = np.all(np.isfinite(p.reshape(len(p), -1)), axis=1)
        per_member = np.mean(np.square(p[ok][:, 1::2] - target[1::2]).reshape(int(ok.sum()), -1), axis=1)
        singles[tuple(combo)] = float(np.median(per_member)) if per_member.size else float("nan")
        for k, row in zip(ks, losses):
            q25, q50, q75 = (np.nanpercentile(row, q) if np.isfinite(row).any() else np.nan for q in (25, 50, 75))
            rows.append({**sel, "K": k, "mode": mode, "members": int(ok.sum()), "diverged": int((~ok).sum()),
                         "median": float(q50), "q25": float(q25), "q75": float(q75),
                         "single": singles[tuple(combo)]})
    if by is not None and "n_params" in ds:
        sizes = ds[by].values.tolist()
        for row in rows:
            sel = {d: row[d] for d in other}
            base = _size_of(ds, sel)
            target_params = row["K"] * base if base else None
            cand = []
            for s in sizes:
                c = _size_of(ds, {**sel, by: s})
                if c and target_params and abs(c / target_params - 1) <= 0.25:
                    cand.append((abs(c / target_params - 1), s))
            row["n_params"] = target_params
            row["matched"] = min(cand)[1] if cand else None
            row["matched_loss"] = (singles[tuple(({**sel, by: row["matched"]})[d] for d in other)]
                                   if cand else None)
    return rows


def describe(rows: list[dict]) -> str:
    """The table as text: one line per row."""
    lines = []
    for r in rows:
        point = ", ".join(f"{k}={r[k]}" for k in r if k not in ROW_KEYS)
        match = (f"; one member with K x N parameters ({r['matched']}): {r['matched_loss']:.4g}"
                 if r.get("matched") is not None else "")
        lines.append(f"{point or 'all'} K={r['K']:>4} ({r['mode']}): median {r['median']:.4g} "
                     f"[{r['q25']:.4g}, {r['q75']:.4g}], single member {r['single']:.4g}, "
                     f"{r['members']} members ({r['diverged']} diverged){match}")
    return "\n".join(lines)


ROW_KEYS = ("K", "mode", "members", "diverged", "median", "q25", "q75", "single", "n_params", "matched",
            "matched_loss")
"""The keys of a table row other than the point's coordinates."""


def plot_table(rows: list[dict], path, by: str | None = "width"):
    """One panel per value of the dims other than ``by``: for each ``by`` value (one colour) the ensemble
    loss (median, quartiles shaded) vs the total parameters of its K members (vs K without stored counts),
    and the loss of single members of every size (black dashed): where a coloured line lies below the
    black one, K small members beat one member with as many parameters."""
    from pathlib import Path

    from sweepjax.plots import plt, save
    point = lambda r: {k: r[k] for k in r if k not in ROW_KEYS}
    panels = list(dict.fromkeys(tuple((k, v) for k, v in point(r).items() if k != by) for r in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.5), squeeze=False)
    counted = all(r.get("n_params") for r in rows)
    for ax, panel in zip(axes[0], panels):
        sel = [r for r in rows if all(r[k] == v for k, v in panel)]
        sizes = list(dict.fromkeys(r[by] for r in sel)) if by else [None]
        for i, size in enumerate(sizes):
            line = [r for r in sel if by is None or r[by] == size]
            x = [r["n_params"] if counted else r["K"] for r in line]
            color = plt.cm.viridis(i / max(len(sizes) - 1, 1))
            ax.plot(x, [r["median"] for r in line], "o-", ms=3, color=color, label=f"{by}={size}" if by else "K members")
            ax.fill_between(x, [r["q25"] for r in line], [r["q75"] for r in line], color=color, alpha=0.15, lw=0)
        if by and counted:
            ones = sorted((r["n_params"], r["single"]) for r in sel if r["K"] == 1)
            ax.plot(*zip(*ones), "k--", lw=1.2, label="one member (median)")
        name = ", ".join(f"{k}={v}" for k, v in panel)
        ax.set(xscale="log", yscale="log", xlabel="parameters of the K members together" if counted else "K",
               ylabel="loss on the scoring points",
               title=f"Mean of K = 1, 2, 4.. members ({rows[0]['mode']} K)" + (f"\n{name}" if name else ""))
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.legend(fontsize=6, ncol=2)
    return save(fig, Path(path))
