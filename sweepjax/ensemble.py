"""Ensembles of trained members: the loss of the combination of K members' predictions as a function of K.

Works on a results Dataset saved with ``eval.save_predictions = true``: ``predictions`` (sweep dims + ``x``,
and ``output`` for vector outputs, or ``position``/``class`` for class probabilities) and ``test_target``.
Members combine as the task says (the ``combine`` attribute of ``predictions``):

* ``"outputs"`` (regression, MSE teachers): the mean of the outputs, scored by the squared error averaged
  over the points and output components;
* ``"probabilities"`` (sparse parity, KL teachers, next-token prediction): ``predictions`` holds each member's
  log-probabilities; the ensemble predicts the mean of the members' probabilities (computed as a
  log-sum-exp, so that no probability underflows), scored as the task scores one member: the cross-entropy
  against integer labels or the KL divergence from a target distribution (``test_target``), averaged over
  positions, each test example weighted by ``test_weight`` (sparse parity: its subtask's frequency), in the
  task's unit (bits or nats).

Diverged members (NaN predictions) are left out and counted.

Two ways to pick K members out of the runs of one point (the ``over`` dims: ``seed`` by default; several
dims pool members across them, e.g. ``("seed", "width")`` for ensembles across sizes):

* ``mode = "random"``: ``draws`` random subsets of K members (without replacement);
* ``mode = "best"``: the K members with the lowest VALIDATION loss ("tickets"): the engine's
  ``validation_loss``, each member's loss on fresh examples of its own data distribution, independent of
  the test set. Ensembles in both modes are scored on the whole test set, so K = 1 gives each member's
  own test loss.

Every distinct set of members is scored once (random draws repeat sets when there are few members; the
best-K set is one), on the device, batched: the mean of outputs is a matrix product; the mean of
probabilities is a matrix product of probabilities shifted by their maximum over the members, with an
exact log-sum-exp for the rare set whose chosen members all lie ~87 nats below the best one somewhere.
"""
from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

MODES = ("random", "best")
RULES = ("outputs", "probabilities")
_ROW_BUDGET = 2**24   # floats of one batch of ensembles computed at once
TINY = float(np.finfo(np.float32).tiny)


def _point_losses(pred: jax.Array, target: jax.Array, kind: str) -> jax.Array:
    """Per-point loss (points,) of one prediction (points, ...): ``kind`` "outputs" (squared error), "labels"
    (``pred`` = log-probability of the label: cross-entropy) or "distributions" (``pred`` = log-probabilities,
    classes last: KL from ``target``), averaged over the axes after the first."""
    if kind == "outputs":
        per = jnp.square(pred - target)
    elif kind == "labels":
        per = -pred
    else:
        per = jnp.sum(jnp.where(target > 0, target * (jnp.log(jnp.where(target > 0, target, 1.0)) - pred), 0.0), -1)
    return jnp.mean(per.reshape(per.shape[0], -1), axis=1)


def _score(point_losses: jax.Array, weights: jax.Array) -> jax.Array:
    return jnp.sum(point_losses * weights) / jnp.sum(weights)


def _batch(values: jax.Array) -> int:
    return max(1, _ROW_BUDGET // max(values[0].size, 1))


@partial(jax.jit, static_argnames=("kind",))
def _member_losses(values: jax.Array, target: jax.Array, weights: jax.Array, kind: str) -> jax.Array:
    """Each member's own loss (members,)."""
    return jax.lax.map(lambda v: _score(_point_losses(v, target, kind), weights), values, batch_size=_batch(values))


@partial(jax.jit, static_argnames=("kind",))
def _fast_losses(rows: jax.Array, values: jax.Array, target: jax.Array, weights: jax.Array, ok: jax.Array, kind: str):
    """Losses of the ensembles of member weights ``rows`` (rows, members): the weighted mean of the outputs, or
    of the probabilities as a matrix product of probabilities shifted by their maximum over the members
    (log pbar = top + log(w . exp(values - top))). Also returns, per row, whether some needed probability
    underflowed that way (every chosen member far below the best one): those rows go to :func:`_exact_losses`."""
    flat = values.reshape(values.shape[0], -1)
    if kind == "outputs":
        combine = lambda w: (jnp.dot(w, flat).reshape(values.shape[1:]), False)
    else:
        top = jnp.max(jnp.where(ok[:, None], flat, -jnp.inf), axis=0)
        shifted = jnp.exp(flat - top)
        need = jnp.ones_like(top, bool) if kind == "labels" else (target > 0).reshape(-1)

        def combine(w):
            s = jnp.dot(w, shifted)
            return (top + jnp.log(s)).reshape(values.shape[1:]), jnp.any(need & (s < TINY))
    one = lambda w: (lambda c: (_score(_point_losses(c[0], target, kind), weights), c[1]))(combine(w))
    return jax.lax.map(one, rows, batch_size=_batch(values))


@partial(jax.jit, static_argnames=("kind",))
def _exact_losses(rows: jax.Array, values: jax.Array, target: jax.Array, weights: jax.Array, kind: str) -> jax.Array:
    """:func:`_fast_losses` for log-probabilities by a log-sum-exp over the members (no underflow; slower)."""
    b = lambda w: w.reshape((-1,) + (1,) * (values.ndim - 1))
    one = lambda w: _score(_point_losses(jax.nn.logsumexp(values, axis=0, b=b(w)), target, kind), weights)
    return jax.lax.map(one, rows, batch_size=_batch(values))


class _Members:
    """The members of one point, ready to score: ``values`` (members, points, ...), the ``target`` and the
    points' ``weights``, ``kind`` (see :func:`_point_losses`), the unit scale and which members are finite."""

    def __init__(self, pred, target, rule: str, weights=None, unit: str | None = None):
        if rule not in RULES:
            raise ValueError(f"rule = {rule!r}: one of {', '.join(RULES)}")
        pred = np.asarray(pred, np.float32)
        target = np.asarray(target)
        labels = rule == "probabilities" and target.dtype.kind in "iu"
        want = pred.shape[1:-1] if labels else pred.shape[1:]
        if pred.ndim < 2 + (rule == "probabilities") or target.shape != want or pred.shape[1] < 1:
            raise ValueError(f"predictions {pred.shape} and target {target.shape}: need (members, points, ...) and "
                             f"a target shaped like one member's " + ("labels (no class axis)" if labels else "predictions"))
        m = pred.shape[0]
        self.ok = np.all(np.isfinite(pred.reshape(m, -1)), axis=1)
        if labels:
            if target.min() < 0 or target.max() >= pred.shape[-1]:
                raise ValueError(f"labels outside 0..{pred.shape[-1] - 1}")
            pred = np.take_along_axis(pred, target[None, ..., None].astype(np.int64), axis=-1)[..., 0]
            target = np.zeros(target.shape, np.float32)   # unused
        self.values = np.where(self.ok.reshape((-1,) + (1,) * (pred.ndim - 1)), pred, 0.0).astype(np.float32)
        self.target = target.astype(np.float32)
        self.kind = "outputs" if rule == "outputs" else "labels" if labels else "distributions"
        w = np.ones(pred.shape[1]) if weights is None else np.asarray(weights, np.float64)
        if w.shape != (pred.shape[1],) or not np.all(w >= 0) or w.sum() <= 0:
            raise ValueError(f"weights {w.shape}: one weight >= 0 per point, some positive")
        self.weights = w.astype(np.float32)
        self.scale = 1 / math.log(2) if unit == "bits" else 1.0

    def device(self) -> tuple:
        return jnp.asarray(self.values), jnp.asarray(self.target), jnp.asarray(self.weights)

    def member_losses(self) -> np.ndarray:
        """Each member's own loss (NaN for diverged members)."""
        losses = np.asarray(_member_losses(*self.device(), self.kind), np.float64) * self.scale
        return np.where(self.ok, losses, np.nan)

    def losses(self, rows: np.ndarray) -> np.ndarray:
        """Losses of the ensembles with member weights ``rows`` (rows, members), exact (see :func:`_fast_losses`)."""
        values, target, weights = self.device()
        loss, low = (np.asarray(a) for a in _fast_losses(jnp.asarray(rows, jnp.float32), values, target, weights,
                                                          jnp.asarray(self.ok), self.kind))
        loss = loss.astype(np.float64)
        if low.any():
            redo = np.flatnonzero(low)
            loss[redo] = np.asarray(_exact_losses(jnp.asarray(rows[redo], jnp.float32), values, target, weights,
                                                  self.kind))
        return loss * self.scale


def _subsets(ok: np.ndarray, ks: list[int], draws: int, mode: str, seed: int, validation) -> tuple:
    """The members of every ensemble: (rows, index) with ``rows`` the distinct member sets as weights 1/K
    (n, members) and ``index`` (len(ks), draws) the row of each (K, draw), -1 where K > finite members.
    Random: ``draws`` uniformly random K-subsets of the finite members; best: the K lowest ``validation``
    losses (NaN last), the same set in every draw. Each distinct set is computed once."""
    m = len(ok)
    if mode == "best":
        score = np.where(ok, np.nan_to_num(np.asarray(validation, np.float64), nan=np.inf), np.inf)[None]
        score = np.where(np.isinf(score) & ok[None], np.finfo(np.float64).max, score)   # NaN validation: last of the finite
    else:
        score = np.where(ok[None], np.random.default_rng(seed).random((draws, m)), np.inf)
    rank = np.argsort(np.argsort(score, axis=1, kind="stable"), axis=1)
    rows, index = [], np.full((len(ks), draws), -1)
    for i, k in enumerate(ks):
        if k > ok.sum():
            continue
        chosen, inverse = np.unique(rank < k, axis=0, return_inverse=True)
        index[i] = len(rows) + np.broadcast_to(inverse.reshape(-1), (draws,))
        rows += list(chosen / k)
    return np.asarray(rows, np.float32).reshape(-1, m), index


def ensemble_losses(pred: np.ndarray, target: np.ndarray, ks, draws: int = 100, mode: str = "random",
                    seed: int = 0, rule: str = "outputs", weights=None, unit: str | None = None,
                    validation=None) -> np.ndarray:
    """Losses of K-member ensembles of the members ``pred`` against ``target`` on every test point:
    (len(ks), draws); rows with K larger than the number of finite members are NaN.

    ``rule = "outputs"``: ``pred`` (members, points[, outputs]) and ``target`` (points[, outputs]);
    ``rule = "probabilities"``: ``pred`` (members, points, ..., classes) log-probabilities and ``target``
    integer labels (points, ...) or distributions (points, ..., classes); ``weights`` (points,) weigh the
    points (default equal), ``unit = "bits"`` reports cross-entropies in bits. ``mode = "best"`` takes the K
    members with the lowest ``validation`` losses (members,): losses on data other than the test set (the
    engine's ``validation_loss``), and repeats its one ensemble in every draw."""
    return _ensembles(_Members(pred, target, rule, weights, unit), ks, draws, mode, seed, validation)


def _ensembles(members: _Members, ks, draws: int, mode: str, seed: int, validation) -> np.ndarray:
    if mode not in MODES:
        raise ValueError(f"mode = {mode!r}: one of {', '.join(MODES)}")
    ks = _check_ks(list(ks), len(members.values))
    if draws < 1:
        raise ValueError(f"draws = {draws}: at least one draw per K")
    if mode == "best" and (validation is None or np.shape(validation) != (len(members.values),)):
        raise ValueError("mode = 'best' ranks members by their validation losses (one per member, data other than "
                         "the test set: the results' validation_loss); none were given")
    rows, index = _subsets(members.ok, ks, draws, mode, seed, validation)
    losses = members.losses(rows) if len(rows) else np.empty(0)
    return np.where(index >= 0, losses[np.maximum(index, 0)] if len(rows) else np.nan, np.nan)


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


def _shared_along(a: xr.DataArray, sel: dict, over: list[str], rest: list[str], what: str) -> np.ndarray:
    """The value of ``a`` (a test target or test weights) at one point, which must be the same for every
    member combined: the shared one, or its group's when a swept task key changes it."""
    t = a.sel({d: v for d, v in sel.items() if d in a.dims})
    for d in over:
        if d in t.dims:
            if not (t == t.isel({d: 0})).all():
                raise ValueError(f"the {what} changes along over = {d!r}: its members were scored on "
                                 f"different test sets and cannot be combined")
            t = t.isel({d: 0})
    return t.transpose(*[d for d in rest if d in t.dims]).values


def ensemble_table(ds: xr.Dataset, ks=None, by: str | None = "width", over: str | tuple[str, ...] = "seed",
                   mode: str = "random", draws: int = 200, seed: int = 0) -> list[dict]:
    """Ensemble loss vs K for every point of the sweep: one row per (value of the other dims, K).

    ``over``: the dim whose members are combined (``seed``), or several dims whose members are pooled (e.g.
    ``("seed", "width")``: ensembles across sizes); ``by``: a size dim (``width``, ``depth`` ...: stored
    ``n_params`` must change along it) against which each ensemble of K members of size N is compared with
    one member with K times N's parameters (the size whose ``n_params`` is nearest, within 25%;
    ``matched_loss`` is its median member test loss, also in best-K mode). ``ks``: ensemble
    sizes (default powers of two up to the number of members, and that number). Each row: the point's
    coordinates, ``K``, ``members`` (finite), ``diverged``, ``median``/``q25``/``q75`` over the draws (K = 1
    in random mode: exactly over the members; the one best-K ensemble: all three equal), ``single`` (median
    member test loss), and with ``by`` (one ``over`` dim): ``n_params`` (K x N's),
    ``matched`` (the size used) and ``matched_loss``; scored on the whole test set, best-K chosen by
    ``validation_loss``. Members combine by the rule their task saved (see the module docstring); computed
    in float32.
    """
    if "predictions" not in ds or "test_target" not in ds:
        raise ValueError("these results hold no predictions: run the sweep with eval.save_predictions = true")
    pred = ds["predictions"]
    rule = pred.attrs.get("combine", "probabilities" if "class" in pred.dims else "outputs")
    rest = [d for d in ("x", "position", "output", "class") if d in pred.dims]
    over = [over] if isinstance(over, str) else list(over)
    other = [d for d in pred.dims if d not in over + rest]
    if not over or any(d not in pred.dims or d in rest for d in over) or len(set(over)) < len(over):
        raise ValueError(f"over = {over}: distinct sweep dims of the predictions (dims: {[d for d in pred.dims if d not in rest]})")
    if by is not None and by not in other:
        raise ValueError(f"by = {by!r} must be a sweep dim other than over = {over} (dims: {other})")
    if by is not None and len(over) > 1:
        raise ValueError(f"by = {by!r} with several over dims {over}: a pool of members of different sizes has no "
                         f"single size to match; use by = None")
    if draws < 1:
        raise ValueError(f"draws = {draws}: at least one draw per K")
    if mode == "best" and "validation_loss" not in ds:
        raise ValueError("mode = 'best' ranks members by validation_loss, which these results do not hold (made "
                         "before it was kept): rerun the sweep, or use mode = 'random'")
    pred = pred.stack(_member=over) if len(over) > 1 else pred.rename({over[0]: "_member"})
    val = None
    if "validation_loss" in ds:
        val = ds["validation_loss"].broadcast_like(ds["predictions"].isel({d: 0 for d in rest}, drop=True))
        val = val.stack(_member=over) if len(over) > 1 else val.rename({over[0]: "_member"})
    n = pred.sizes["_member"]
    ks = _check_ks(ks, n)
    unit = ds["test_loss"].attrs.get("units") if "test_loss" in ds else None
    params = None
    if by is not None and "n_params" in ds:
        params = ds["n_params"].max([d for d in over if d in ds["n_params"].dims])
        if (params == params.isel({by: 0})).all() and ds.sizes[by] > 1:
            raise ValueError(f"by = {by!r} is not a size: the members' n_params do not change along it")
        params = params.transpose(*other).values
    singles = np.full([ds.sizes[d] for d in other], np.nan)
    rows = []
    for index in np.ndindex(*singles.shape):
        sel = {d: ds[d].values[i].item() for d, i in zip(other, index)}
        p = pred.isel(dict(zip(other, index))).transpose("_member", *rest).values
        target = _shared_along(ds["test_target"], sel, over, rest, "test target")
        weights = _shared_along(ds["test_weight"], sel, over, rest, "test weight") if "test_weight" in ds else None
        members = _Members(p, target, rule, weights, unit)
        v = val.isel(dict(zip(other, index))).values if val is not None else None
        losses = _ensembles(members, ks, draws, mode, seed, v)
        per_member = members.member_losses()[members.ok]
        singles[index] = float(np.median(per_member)) if per_member.size else np.nan
        for k, row in zip(ks, losses):
            if k == 1 and mode == "random":   # every member once: the exact distribution over single members
                row = per_member
            q25, q50, q75 = (np.nanpercentile(row, q) if np.isfinite(row).any() else np.nan for q in (25, 50, 75))
            rows.append({**sel, "K": k, "mode": mode, "members": int(members.ok.sum()),
                         "diverged": int((~members.ok).sum()), "median": float(q50), "q25": float(q25),
                         "q75": float(q75), "single": float(singles[index]), "_index": index})
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
               ylabel="test loss",
               title=f"Mean of K = 1, 2, 4.. members ({rows[0]['mode']} K)" + (f"\n{name}" if name else ""))
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.legend(fontsize=6, ncol=2)
    return save(fig, Path(path))
