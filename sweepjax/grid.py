"""Sweep axes -> members -> groups.

Members are the cartesian product of the sweep axes, in the order the config lists them
(the first axis varies slowest). Axes in :func:`config.member_keys` only change numbers and
stay inside one compiled program; every other swept key is structural and splits the members
into groups, each compiled once and all run by the same command. A group whose members differ in
size or length may be split further into size buckets, one program each, where a cost model
(:func:`bucket`, measured once per machine by :func:`sweepjax.engine.calibrate.calibrate`) says that the padded work saved is
worth more than the extra programs cost.
"""
from __future__ import annotations

import functools
import itertools
import math
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sweepjax.config import Config, dim_name, member_keys
from sweepjax.models import count, member_sizes, padded_sizes, tokens_per_step
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
        """The structural values, then the range of width, depth and of each other swept per-member size or length
        (``model.heads``, ``model.mlp_ratio``, ``train.steps``) over the group's members."""
        parts = [f"{dim_name(k)}={v}" for k, v in self.structural.items()]
        swept = tuple(k for k in ("model.heads", "model.mlp_ratio", "train.steps") if k in self.config.sweep)
        for key in ("model.width", "model.depth") + swept:
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

    def kinds(self) -> list[tuple]:
        """Each member's kind, (steps, *true sizes): members of one kind cost the same."""
        return [(int(n), *shape) for n, shape in zip(self.values["train.steps"], self.shapes())]

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


# ---- size buckets: a cost model and the cheapest split -------------------------------------------

@dataclass(frozen=True)
class Calibration:
    """The two numbers of the bucketing cost model (:func:`bucket`), for one backend and model family.

    ``program_seconds``: what one more program costs besides its training loop: tracing and compiling
    its init, training and prediction programs, running the init, moving results to the host.
    ``flop_rate``: model FLOPs (3 x forward matmul FLOPs per token x tokens, :func:`sweepjax.models.count`'s
    units) per second of the training loop, as the marginal rate: what one more padded FLOP costs.
    """
    program_seconds: float
    flop_rate: float


def partition(n: int, cost: Callable[[int, int], float]) -> list[tuple[int, int]]:
    """The split of items 0 .. n-1, in their order, into runs [i, j) of minimal summed ``cost(i, j)``.

    Dynamic programming over the n (n + 1) / 2 runs: best[j] = min over i of best[i] + cost(i, j).
    Ties go to the fewer, longer runs. ``cost`` is ``inf`` for a run not allowed; a finite cost counts at most
    float max / (n + 1), so that sums stay finite. Raises ``ValueError`` if no split into allowed runs exists.
    """
    best, cut = [0.0] + [math.inf] * n, [0] * (n + 1)
    cap = sys.float_info.max / (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            c = cost(i, j)
            c = best[i] + min(c, cap) if c < math.inf else math.inf
            if c < best[j]:
                best[j], cut[j] = c, i
    if best[n] == math.inf:
        raise ValueError(f"no split of {n} items into allowed runs")
    runs, j = [], n
    while j:
        runs.append((cut[j], j))
        j = cut[j]
    return runs[::-1]


def bucket(group: Group, max_waste: float, calibration: Callable[[Config], Calibration]) -> list[Group]:
    """Split ``group`` into size buckets, one program each, so that the estimated seconds of all of them are least.

    A bucket is estimated at ``program_seconds`` plus its padded work / ``flop_rate``, the :class:`Calibration`
    that ``calibration(group.config)`` returns (asked only when there is a
    choice to make). Padded work: members x forward FLOPs per token at the bucket's padded sizes x tokens per
    step x 3 (forward and backward) x the bucket's longest run in steps (a member that has stopped still costs
    its steps in the vmapped loop).

    Member kinds (true sizes and steps) are put in order, and :func:`partition` finds the cheapest split of that
    order into contiguous runs. With one size axis, one run length and no waste bound, the order by work is
    enough: some optimal partition is contiguous in it (a bucket pays for its largest kind, so each kind belongs
    with the smallest largest kind above it). With several axes (width x depth, sizes x steps), kinds of similar
    work can be wide-and-shallow and narrow-and-deep, and no one order holds every good bucket: the split is
    made in several orders (by work, and by each axis first, then work: width-major keeps a width's depths
    together) and the cheapest is kept. A heuristic then: a partition contiguous in none of them is not tried.

    ``max_waste`` >= 1 bounds each bucket's padding waste (:meth:`Group.padding_waste`) as well; 0 makes one
    program of the group. Results do not change (padding invariance, per-member steps); only the work does.
    """
    keys = list(group.sizes())
    rows_of = group.kinds()
    work = lambda kind: group.cost(dict(zip(keys, kind[1:])), kind[0])
    kinds = sorted(set(rows_of), key=lambda k: (work(k), k), reverse=True)
    if not max_waste or len(kinds) == 1:
        return [group]
    members = Counter(rows_of)
    cal = calibration(group.config)
    seconds_per_flop = 3.0 * tokens_per_step(group.config) / cal.flop_rate

    forward = functools.cache(lambda sizes: group.cost(dict(zip(keys, sizes))))   # FLOPs per token at padded sizes
    own = {kind: members[kind] * work(kind) for kind in kinds}                    # the work a kind needs

    def split(order: list[tuple]) -> tuple[float, list[set[tuple]]]:
        """The cheapest split of ``order`` into runs, and its estimated seconds."""
        table = {}   # (i, j) -> estimated seconds of the bucket order[i:j] (finite), inf beyond the waste bound
        for j in range(1, len(order) + 1):
            top, n, needed = order[j - 1], 0, 0.0   # running maxima (steps, *sizes) and sums of the run
            for i in range(j - 1, -1, -1):          # growing the run downwards
                kind = order[i]
                top = tuple(map(max, top, kind))
                n, needed = n + members[kind], needed + own[kind]
                executed = n * forward(top[1:]) * top[0]
                allowed = i == j - 1 or executed <= max_waste * needed   # one kind: waste 1, always allowed
                seconds = min(cal.program_seconds + seconds_per_flop * executed, sys.float_info.max)
                table[i, j] = seconds if allowed else math.inf
        runs = partition(len(order), lambda i, j: table[i, j])
        cap = sys.float_info.max / (len(order) + 1)   # as partition counts them
        return sum(min(table[r], cap) for r in runs), [set(order[i:j]) for i, j in runs]

    axis_first = lambda a: sorted(kinds, key=lambda k: (k[a], work(k), k), reverse=True)   # a: steps, then each size
    orders = [kinds] + [axis_first(a) for a in range(len(keys) + 1)]
    _, runs = min((split(order) for order in orders), key=lambda split: split[0])   # ties: the first order
    return [group.subset(np.array([r for r, kind in enumerate(rows_of) if kind in run])) for run in runs]


def build_grid(cfg: Config) -> Grid:
    """Enumerate members, split them into structural groups and those into size buckets (:func:`bucket`).

    All groups are costed with one calibration, whatever the order of the axes: that of the first, in sorted order,
    of the (reference program, precision) pairs (:func:`sweepjax.engine.calibrate.reference`) of the groups that
    have a split to choose (more than one member kind, ``run.max_padding_waste`` > 0): a sweep mixing model kinds
    or precisions costs all its groups with that pair's numbers. Those numbers are written into ``cfg.run``
    (where ``run.program_seconds`` or ``run.flop_rate`` was 0: measure), so the resolved config records them and a
    resumed run splits alike.
    """
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
        groups.append(Group(structural, gcfg, np.array(idx), values))
    choosing = [g for g in groups if cfg.run.max_padding_waste and len(set(g.kinds())) > 1]
    if not choosing:
        return Grid(dict(cfg.sweep), groups)
    from sweepjax.engine.calibrate import calibrate, reference   # the engine sits above the grid: import here
    pair = lambda g: (reference(g.config), g.config.train.precision)
    cal = calibrate(min(choosing, key=pair).config)
    cfg.run.program_seconds, cfg.run.flop_rate = cal.program_seconds, cal.flop_rate
    buckets = [b for g in groups for b in bucket(g, cfg.run.max_padding_waste, lambda _: cal)]
    return Grid(dict(cfg.sweep), buckets)
