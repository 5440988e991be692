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
    ks = np.asarray(_check_ks(list(ks), len(pred)), np.int32)
    if draws < 1:
        raise ValueError(f"draws = {draws}: at least one draw per K")
    m = pred.shape[0]
    ok = np.all(np.isfinite(pred.reshape(m, -1)), axis=1)
    with np.errstate(over="ignore"):   # a member whose error overflows ranks last among the finite ones
        val = np.mean(np.square(np.nan_to_num(pred[:, 0::2]) - target[0::2]).reshape(m, -1), axis=1)
    val = np.nan_to_num(val, nan=np.finfo(np.float32).max, posinf=np.finfo(np.float32).max)   # diverged: +inf below
    scored, scored_target = pred[:, 1::2].reshape(m, -1), target[1::2].reshape(-1)
    out = _losses(jnp.asarray(scored), jnp.asarray(scored_target), jnp.asarray(ok), jnp.asarray(val),
                  jnp.asarray(ks), jax.random.key(seed), draws, mode == "best")
    return np.asarray(out, np.float64)


def _check_ks(ks, n: int) -> list[int]:
    """Ensemble sizes as ints (default: powers of two up to ``n``, and ``n``)."""
    if ks is None:
        return sorted({int(k) for k in 2 ** np.arange(int(np.log2(max(n, 1))) + 1)} | {n})
    out = []
    if len(ks) == 0:
        raise ValueError("ks = []: name at least one ensemble size")
    for k in ks:
        if isinstance(k, bool) or not float(k).is_integer() or int(k) < 1:
            raise ValueError(f"ks = {list(ks)}: ensemble sizes are whole numbers >= 1")
        out.append(int(k))
    return out


def _target_at(target: xr.DataArray, sel: dict, over: str, rest: list[str]) -> np.ndarray:
    """The test target of one point: the shared one, or its group's when a swept task key changes it."""
    t = target.sel({d: v for d, v in sel.items() if d in target.dims})
    if over in t.dims:
        if not (t == t.isel({over: 0})).all():
            raise ValueError(f"the test target changes along over = {over!r}: its members were scored on "
                             f"different test sets and cannot be averaged")
        t = t.isel({over: 0})
    return t.transpose(*rest).values


def ensemble_table(ds: xr.Dataset, ks=None, by: str | None = "width", over: str = "seed", mode: str = "random",
                   draws: int = 200, seed: int = 0) -> list[dict]:
    """Ensemble loss vs K for every point of the sweep: one row per (value of the other dims, K).

    ``over``: the dim whose members are combined (``seed``); ``by``: a size dim (``width``, ``depth`` ...:
    stored ``n_params`` must change along it) against which each ensemble of K members of size N is
    compared with one member with K times N's parameters (the size whose ``n_params`` is nearest, within
    25%; ``matched_loss`` is its median member loss on the same points, also in best-K mode). ``ks``:
    ensemble sizes (default powers of two up to the number of members, and that number). Each row: the
    point's coordinates, ``K``, ``members`` (finite), ``diverged``, ``median``/``q25``/``q75`` over the
    draws (K = 1 in random mode: exactly over the members; the one best-K ensemble: all three equal),
    ``single`` (median member loss on the same points), and with ``by``: ``n_params`` (K x N's),
    ``matched`` (the size used) and ``matched_loss``. Computed in float32.
    """
    if "predictions" not in ds or "test_target" not in ds:
        raise ValueError("these results hold no predictions: run the sweep with eval.save_predictions = true")
    pred = ds["predictions"]
    rest = [d for d in ("x", "output") if d in pred.dims]
    other = [d for d in pred.dims if d not in [over] + rest]
    if over not in pred.dims or over in rest:
        raise ValueError(f"over = {over!r} is not a sweep dim of the predictions (dims: {other + [over] * (over in pred.dims)})")
    if by is not None and by not in other:
        raise ValueError(f"by = {by!r} must be a sweep dim other than over = {over!r} (dims: {other})")
    if draws < 1:
        raise ValueError(f"draws = {draws}: at least one draw per K")
    n = pred.sizes[over]
    ks = _check_ks(ks, n)
    params = None
    if by is not None and "n_params" in ds:
        params = ds["n_params"].max(over) if over in ds["n_params"].dims else ds["n_params"]
        if (params == params.isel({by: 0})).all() and ds.sizes[by] > 1:
            raise ValueError(f"by = {by!r} is not a size: the members' n_params do not change along it")
        params = params.transpose(*other).values
    singles = np.full([ds.sizes[d] for d in other], np.nan)
    rows = []
    for index in np.ndindex(*singles.shape):
        sel = {d: ds[d].values[i].item() for d, i in zip(other, index)}
        p = pred.isel(dict(zip(other, index))).transpose(over, *rest).values
        target = _target_at(ds["test_target"], sel, over, rest)
        losses = ensemble_losses(p, target, ks, draws, mode, seed)
        ok = np.all(np.isfinite(p.reshape(len(p), -1)), axis=1)
        per_member = np.mean(np.square(p[ok][:, 1::2] - target[1::2]).reshape(int(ok.sum()), -1), axis=1)
        singles[index] = float(np.median(per_member)) if per_member.size else np.nan
        for k, row in zip(ks, losses):
            if k == 1 and mode == "random":   # every member once: the exact distribution over single members
                row = per_member
            q25, q50, q75 = (np.nanpercentile(row, q) if np.isfinite(row).any() else np.nan for q in (25, 50, 75))
            rows.append({**sel, "K": k, "mode": mode, "members": int(ok.sum()), "diverged": int((~ok).sum()),
                         "median": float(q50), "q25": float(q25), "q75": float(q75), "single": float(singles[index]),
                         "_index": index})
    if params is not None:
        axis = other.index(by)
        for row in rows:
            index = row["_index"]
            line = [index[:axis] + (j,) + index[axis + 1:] for j in range(ds.sizes[by])]
            wanted = row["K"] * float(params[index])
            gaps = [abs(float(params[i]) / wanted - 1) for i in line]
            best = int(np.argmin(gaps))
            row["n_params"] = wanted
            row["matched"] = ds[by].values[best].item() if gaps[best] <= 0.25 else None
            row["matched_loss"] = float(singles[line[best]]) if gaps[best] <= 0.25 else None
    for row in rows:
        del row["_index"]
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
