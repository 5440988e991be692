"""Sweep axes -> members -> groups.

Members are the cartesian product of the sweep axes, in the order the config lists them
(the first axis varies slowest). Axes in :func:`config.member_keys` only change numbers and
stay inside one compiled program; every other swept key is structural and splits the members
into groups, each compiled once and all run by the same command.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from sweepjax.config import Config, dim_name, member_keys
from sweepjax.models import count, member_sizes, padded_sizes
from sweepjax.tasks import task_class


@dataclass
class Group:
    """Members sharing one compiled program."""
    structural: dict            # structural key -> value for this group
    config: Config              # the config with this group's structural values (numeric keys at defaults)
    index: np.ndarray           # flat member indices into the full grid, shape (n,)
    values: dict[str, np.ndarray]  # per-member key -> values, shape (n,), for every key of member_keys(config)

    @property
    def size(self) -> int:
        return len(self.index)

    @property
    def longest(self) -> int:
        """The group's longest run, in steps (its program loops this far; shorter members stop and freeze)."""
        return int(self.values["train.steps"].max())

    def label(self) -> str:
        parts = [f"{dim_name(k)}={v}" for k, v in self.structural.items()]
        for key in ("model.width", "model.depth") + (("train.steps",) if "train.steps" in self.config.sweep else ()):
            lo, hi = self.values[key].min(), self.values[key].max()
            parts.append(f"{dim_name(key)} {lo}" + (f"-{hi}" if hi > lo else ""))
        return ", ".join(parts)

    def sizes(self) -> dict[str, np.ndarray]:
        """True model sizes of each member (the model family's size keys -> arrays of shape (n,))."""
        return member_sizes(self.config, self.values)

    def shapes(self) -> list[tuple]:
        """Each member's true sizes as a tuple (members of equal shape cost the same)."""
        return list(zip(*(v.tolist() for v in self.sizes().values())))

    def member_sizes(self) -> list[dict[str, int]]:
        """Each member's true sizes as a dict (size key -> int)."""
        keys = list(self.sizes())
        return [dict(zip(keys, shape)) for shape in self.shapes()]

    def subset(self, rows: np.ndarray) -> "Group":
        """The members at positions ``rows`` of this group, as a group of their own."""
        return Group(self.structural, self.config, self.index[rows], {k: v[rows] for k, v in self.values.items()})

    def cost(self, sizes: dict[str, int], steps: int = 1) -> float:
        """Forward FLOPs per token (or sample) of a member of ``sizes``, times ``steps`` training steps."""
        return count(self.config, sizes)["forward_flops_per_token"] * float(steps)

    def padding_waste(self) -> float:
        """Work executed / work needed: every member runs at the padded sizes (the group max) for the group's
        longest run (a member that has stopped still costs its steps in the vmapped loop), against each
        member's true sizes for its own steps."""
        own = self.values["train.steps"]
        true = sum(self.cost(s, n) for s, n in zip(self.member_sizes(), own))
        return self.size * self.cost(padded_sizes(self.sizes()), self.longest) / true


@dataclass
class Grid:
    """The full sweep: axes, coordinates and groups."""
    axes: dict[str, list]       # sweep key -> values (config order)
    groups: list[Group]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.axes.values())

    @property
    def dims(self) -> list[str]:
        return [dim_name(k) for k in self.axes]

    @property
    def n_members(self) -> int:
        return int(np.prod(self.shape)) if self.axes else 1


def bucket(group: Group, max_waste: float) -> list[Group]:
    """Split ``group`` into buckets of similar size and length so each bucket's padding waste is <= ``max_waste``.

    The waste counts steps too (:meth:`Group.padding_waste`): a member runs at the bucket's padded sizes
    for the bucket's longest run. First-fit decreasing over member kinds (true sizes and steps), largest
    work first: all members of a kind join the first bucket whose waste stays within the limit, else open
    a new bucket. ``max_waste`` = 0 disables bucketing. Results do not change (padding invariance,
    per-member steps); only the work done does.
    """
    if not max_waste:
        return [group]
    keys = list(group.sizes())
    kinds = [(int(n), *shape) for n, shape in zip(group.values["train.steps"], group.shapes())]
    work = lambda kind: group.cost(dict(zip(keys, kind[1:])), kind[0])
    buckets: list[list[int]] = []
    for kind in sorted(set(kinds), key=lambda k: (work(k), k), reverse=True):
        rows = [i for i in range(group.size) if kinds[i] == kind]
        for b in buckets:
            if group.subset(np.array(sorted(b + rows))).padding_waste() <= max_waste:
                b += rows
                break
        else:
            buckets.append(rows)
    return [group.subset(np.array(sorted(b))) for b in buckets]


def build_grid(cfg: Config) -> Grid:
    """Enumerate members and split them into structural groups."""
    keys = list(cfg.sweep)
    combos = list(itertools.product(*(cfg.sweep[k] for k in keys)))
    numeric = member_keys(cfg)
    structural_keys = [k for k in keys if k not in numeric]
    by_struct: dict[str, tuple[dict, list[int]]] = {}   # keyed by repr: values may be lists (model.zero_init)
    for i, combo in enumerate(combos):
        member = dict(zip(keys, combo))
        structural = {k: member[k] for k in structural_keys}
        by_struct.setdefault(repr(structural), (structural, []))[1].append(i)
    groups = []
    for structural, idx in by_struct.values():
        gcfg = cfg.with_values(structural)
        values = {}
        for key in numeric:
            if key in keys:
                pos = keys.index(key)
                values[key] = np.array([combos[i][pos] for i in idx])
            else:
                values[key] = np.full(len(idx), gcfg.get(key))
        if not task_class(gcfg.task.name).samples(gcfg.task):   # its own full batch: no sampled set
            values["task.dataset_size"] = np.zeros(len(idx), np.int64)
        # data_seed = -1 means "follow the init seed": independent data stream per init seed.
        ds = values["task.data_seed"]
        values["task.data_seed"] = np.where(ds < 0, values["train.seed"], ds)
        groups += bucket(Group(structural, gcfg, np.array(idx), values), cfg.run.max_padding_waste)
    return Grid(dict(cfg.sweep), groups)
