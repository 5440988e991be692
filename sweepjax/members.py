"""One trained member of a results directory, rebuilt as a model: for analysis (QDG), or as a
teacher/generator that becomes the data source of another sweep (:mod:`sweepjax.generate`).

A sweep run with ``eval.save_params = true`` keeps every member's trained parameters as the
``param.*`` variables of its results (``param.init.*``: at initialisation), padded with zeros to
the largest sizes of the sweep. :func:`member_model` rebuilds one member from them: the resolved
config in ``ds.attrs["sweepjax_config"]`` with the member's sweep values applied, its true sizes,
the module padded to the stored parameter shapes and its parameters, bitwise as saved. Its
:meth:`Member.apply` is the forward pass the engine computes, so it reproduces the member's test
loss (up to float32 reduction order).

A member is selected by its coordinate on every sweep dim (``depth=2, seed=0``; a dim with a single
coordinate may be left out); :func:`load_member` does it from a results directory, and
:func:`parse_member` reads a selector written as text (``"depth=2,seed=0"``).
"""
from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

from sweepjax.config import Config, build_config, dim_name, member_keys

PARAM_PREFIX = "param."


@dataclass(eq=False)   # hashed by identity: its bound ``apply`` is a static jit argument
class Member:
    """One trained member of a sweep, rebuilt from its results."""
    coords: dict[str, Any]        # sweep dim -> coordinate label of the member
    config: Config                # the member's config (its sweep values applied)
    sizes: dict[str, int]         # its true sizes (the family's SIZE_KEYS)
    padded: dict[str, int]        # the sizes the module is padded to (those of the stored parameters)
    model: Any                    # the flax module
    params: dict                  # its trained parameters (a pytree, padded shapes)

    def apply(self, params: dict, x: jax.Array, **kwargs) -> jax.Array:
        """Outputs of the member on a batch ``x``, as the engine computes them (``kwargs``: to the module, e.g. a
        transformer's ``cache`` and ``position`` for incremental decoding)."""
        sizes = {k: jnp.asarray(v, jnp.int32) for k, v in self.sizes.items()}
        return self.model.apply({"params": params}, x, sizes, **kwargs)


def params_sha256(params: dict) -> str:
    """sha256 of a parameter tree: every leaf's path, dtype, shape and bytes, in path order (equal exactly when
    the parameters are bitwise equal)."""
    h = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(params), key=lambda p: jax.tree_util.keystr(p[0])):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{jax.tree_util.keystr(path)} {a.dtype} {a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def sweep_config(ds: xr.Dataset) -> Config:
    """The resolved config a results Dataset was made with (``ds.attrs["sweepjax_config"]``)."""
    text = ds.attrs.get("sweepjax_config")
    if not text:
        raise ValueError("these results hold no 'sweepjax_config' attribute (not made by sweepjax.run)")
    return build_config(tomllib.loads(text), combinations=False)


def parse_members(items: list[str] | None) -> dict[str, str]:
    """``["width=64", "seed=0"]`` -> ``{"width": "64", "seed": "0"}`` (values stay text: :func:`member_model`
    reads them in the type of the dim's coordinates)."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"member selector {item!r}: expected dim=value")
        k, v = (s.strip() for s in item.split("=", 1))
        if not k or k in out:
            raise ValueError(f"member selector {item!r}: " + ("no dim name" if not k else f"{k!r} given twice"))
        out[k] = v
    return out


def parse_member(text: str) -> dict[str, str]:
    """A member selector written as text, ``"depth=2,seed=0"`` -> ``{"depth": "2", "seed": "0"}``
    (comma-separated ``dim=value`` items; ``""`` selects the only member of a one-member sweep)."""
    return parse_members([s for s in text.split(",")] if text.strip() else [])


def _parse(value: Any, coord: np.ndarray) -> Any:
    """A member coordinate given as text (``--member width=64``) in the type of the dim's coordinates."""
    if not isinstance(value, str) or coord.dtype.kind in "USO":
        return value
    try:
        return tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        return value


def _member_index(ds: xr.Dataset, cfg: Config, coords: dict[str, Any]) -> dict[str, int]:
    """Sweep dim -> position of the member's coordinate (every sweep dim with several coordinates must be given)."""
    dims = {dim_name(k): k for k in cfg.sweep}
    available = "; ".join(f"{d}: {ds[d].values.tolist()}" for d in dims) or "none"
    given = {dim_name(k): v for k, v in coords.items()}
    unknown = sorted(set(given) - set(dims))
    if unknown:
        raise ValueError(f"member coordinates {unknown} are not sweep dims (sweep dims and coordinates: {available})")
    missing = sorted(d for d in set(dims) - set(given) if ds[d].size > 1)
    if missing:
        raise ValueError(f"member coordinates miss sweep dims {missing}: the selection is ambiguous; a member is "
                         f"selected by one coordinate of each of ({available})")
    index = {}
    for d in dims:
        labels = ds[d].values
        if d not in given:
            index[d] = 0
            continue
        value = _parse(given[d], labels)
        hits = [i for i, v in enumerate(labels.tolist()) if v == value]
        if not hits:
            raise ValueError(f"{d} = {given[d]!r} is not a coordinate of the sweep (it has {labels.tolist()})")
        index[d] = hits[0]
    return index


def _padded_sizes(cfg: Config) -> dict[str, int]:
    """The largest true size of every size key over the whole sweep: the shapes ``param.*`` are padded to."""
    from sweepjax.grid import build_grid
    from sweepjax.models import padded_sizes
    out: dict[str, int] = {}
    # Unbucketed (no calibration to measure): buckets split a group's members, so the maxima are the same.
    for group in build_grid(cfg.with_values({"run.max_padding_waste": 0.0})).groups:
        for k, v in padded_sizes(group.sizes()).items():
            out[k] = max(out.get(k, 0), v)
    return out


def member_model(ds: xr.Dataset, initial: bool = False, **coords) -> Member:
    """Rebuild one trained member from results saved with ``eval.save_params = true``.

    ``coords``: the member's coordinate on every sweep dim (``width=64, seed=0``; dotted keys such as
    ``model.width`` also work; values may be text, read in the type of the coordinates; a dim with one
    coordinate may be left out). Returns a :class:`Member` (config, true sizes, module, parameters,
    bitwise as stored); ``initial``: with its parameters at initialisation (``param.init.*``) instead.
    """
    from sweepjax.models import dtypes, make_model, member_sizes
    from sweepjax.tasks import make_task
    if not any(str(v).startswith(PARAM_PREFIX) for v in ds.data_vars):
        raise ValueError("these results hold no trained parameters (no 'param.*' variables): run the sweep "
                         "with eval.save_params = true")
    cfg = sweep_config(ds)
    index = _member_index(ds, cfg, coords)
    values = {k: cfg.sweep[k][index[dim_name(k)]] for k in cfg.sweep}
    mcfg = cfg.with_values(values)
    sizes = member_sizes(mcfg, {k: np.asarray([mcfg.get(k)]) for k in member_keys(mcfg)})
    sizes = {k: int(np.asarray(v).ravel()[0]) for k, v in sizes.items()}
    padded = _padded_sizes(cfg)
    model = make_model(mcfg, padded)
    dtype = dtypes(mcfg)[0]
    x0 = make_task(mcfg.task).init_input(dtype)
    shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0)}, x0,
                                               {k: jnp.int32(v) for k, v in sizes.items()})["params"])
    labels = {d: ds[d].values[i].item() for d, i in index.items()}
    leaves = []
    flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    for path, leaf in flat:
        name = PARAM_PREFIX + ("init." if initial else "") + jax.tree_util.keystr(path, simple=True, separator=".")
        if name not in ds:
            raise ValueError(f"the results hold no {name!r}: they were saved by another model structure")
        arr = np.asarray(ds[name].isel(index).values)
        if arr.shape != tuple(leaf.shape):
            raise ValueError(f"{name} is stored with shape {arr.shape}, the rebuilt module (padded to "
                             f"{padded}) expects {tuple(leaf.shape)}")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"member {labels} has non-finite parameters ({name}): it diverged or was not trained")
        leaves.append(jnp.asarray(arr, leaf.dtype))
    params = jax.tree_util.tree_unflatten(treedef, leaves)
    return Member(labels, mcfg, sizes, padded, model, params)


def load_member(results: str | Path | xr.Dataset, initial: bool = False, **coords) -> Member:
    """The trained member at ``coords`` of a results directory (or its ``results.nc``, or a loaded Dataset),
    saved with ``eval.save_params = true``: ``load_member("runs/gen", depth=2, seed=0)``, or with a selector
    written as text, ``load_member("runs/gen", **parse_member("depth=2,seed=0"))``. See :func:`member_model`;
    a wrong or ambiguous selection raises ValueError naming the sweep dims and their coordinates."""
    from sweepjax import results as store
    ds = results if isinstance(results, xr.Dataset) else store.load(results)
    return member_model(ds, initial=initial, **coords)


__all__ = ["Member", "member_model", "load_member", "parse_member", "parse_members", "sweep_config", "PARAM_PREFIX"]
