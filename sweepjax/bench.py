"""Throughput benchmark: the engine against the programs a researcher would otherwise write.

One workload, five ways, in one process (the order of ``Report.ways``):
  (a) the engine: all members as vmapped, bucketed, jitted programs;
  (b) the same members one at a time, each a jitted JAX loop at its true size (the engine's own
      program with a single member, so the losses must match (a) to float rounding);
  (c) the same members one at a time in PyTorch eager mode, the loop written by hand;
  (d) stacked PyTorch, eager: the strongest PyTorch peer, as a PyTorch user would write it. The members of
      each distinct (shape, lr) are one model whose parameters are ``torch.stack`` of the members' own (built
      as in (c), ``torch.nn.Linear``'s default init under each member's seed); forward by batched matmuls
      (``torch.bmm``), each member its own fresh batch, the members' losses summed (so each member's gradient
      is its own), one fused Adam over the stacked tensors;
  (e) (d) with its loss (forward and backward) under ``torch.compile``: its first steps, which compile, are
      timed apart and reported as its compile time.
(c)-(e) run on MLP workloads only, and are skipped when torch is absent. (b) and (c) time one member of
each distinct shape (a member's cost depends only on its shape) and weight each shape by how many members
have it, so their rates stand for the whole sweep; (d) and (e) train and time every member. From the same
inits and data, (d) reproduces (c) and (e) reproduces (d) to float rounding (tests/test_bench.py).
"""
from __future__ import annotations

import importlib.util
import resource
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sweepjax.config import Config, build_config
from sweepjax.engine.train import run_group
from sweepjax.grid import Grid, Group, build_grid
from sweepjax.models import count, padded_sizes, tokens_per_step

if TYPE_CHECKING:
    import torch

WORKLOADS = {
    # name: (config dict, CPU-sized overrides)
    "lottery": (
        {"model": {"activation": "silu"}, "task": {"batch_size": 1024},
         "train": {"optimizer": "adam", "lr": 1e-2, "steps": 10_000, "chunk_steps": 2_500},
         "eval": {"points": 10},
         "sweep": {"seed": {"range": [0, 100]}, "model.width": {"powers_of_two": [2, 1024]}}},
        {"train.steps": 300, "train.chunk_steps": 300, "task.batch_size": 256,
         "sweep.seed": {"range": [0, 8]}, "sweep.model.width": {"powers_of_two": [2, 256]}},
    ),
    "residual-depth": (
        {"model": {"activation": "relu", "residual": True, "norm": "rmsnorm", "mlp_ratio": 4},
         "task": {"batch_size": 1024}, "train": {"optimizer": "adam", "lr": 1e-3, "steps": 2_000, "chunk_steps": 1_000},
         "eval": {"points": 10},
         "sweep": {"seed": [0, 1, 2], "model.depth": [2, 4, 8, 16, 32, 64], "model.width": [32, 64, 128, 256]}},
        {"train.steps": 100, "train.chunk_steps": 100, "task.batch_size": 128,
         "sweep.seed": [0, 1], "sweep.model.depth": [2, 4, 8], "sweep.model.width": [16, 32, 64]},
    ),
    "transformer": (
        {"task": {"name": "markov", "vocab": 64, "context": 64, "batch_size": 64, "test_size": 64},
         "model": {"family": "transformer", "depth": 2, "head_size": 16, "mlp_ratio": 4, "norm": "layernorm",
                   "activation": "gelu"},
         "train": {"optimizer": "adam", "lr": 1e-3, "steps": 1_000, "chunk_steps": 500, "precision": "bf16"},
         "eval": {"points": 5},
         "sweep": {"seed": {"range": [0, 8]}, "model.width": [64, 128, 256, 512]}},
        {"train.steps": 40, "train.chunk_steps": 40, "train.precision": "float32", "task.context": 32,
         "task.batch_size": 16, "task.test_size": 16, "model.head_size": 8,
         "sweep.seed": [0, 1], "sweep.model.width": [16, 32, 64]},
    ),
}


def workload_config(name: str, small: bool, overrides: list[tuple[str, object]] = ()) -> Config:
    """The benchmark config of workload ``name``; ``small`` applies its CPU-sized overrides."""
    raw, cpu = WORKLOADS[name]
    return build_config(raw, list(cpu.items() if small else []) + list(overrides), name=name)


def train_flops(cfg: Config, sizes: dict[str, int]) -> float:
    """Model FLOPs of one training step of a member of ``sizes``: 3 x its exact forward matmul FLOPs x batch tokens."""
    return 3.0 * count(cfg, sizes)["forward_flops_per_token"] * tokens_per_step(cfg)



def matmul_ceiling(dtype=jnp.float32) -> float:
    """Measured FLOP/s of a large square matmul on the default device (the roofline's compute peak)."""
    n = 8192 if jax.default_backend() == "gpu" else 1024
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    t0, reps = time.perf_counter(), 10
    for _ in range(reps):
        out = f(a)
    out.block_until_ready()
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def peak_memory_bytes() -> tuple[int, str]:
    """Peak device memory (GPU) or peak host resident set (CPU), with which one it is."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host max RSS"


@dataclass
class Way:
    name: str
    member_steps_per_s: float
    compile_s: float
    members_timed: int
    final_losses: dict[int, float]  # flat member index -> final test loss


@dataclass
class Bucket:
    label: str
    members: int
    member_steps_per_s: float
    model_flops_per_s: float       # true-size model FLOPs of the bucket's members per second
    padding_waste: float


def run_engine(cfg: Config) -> tuple[Way, float, list[Bucket]]:
    """(a): every bucket as one program; returns the result, the padding waste and per-bucket rates."""
    grid = build_grid(cfg)
    losses, run_s, compile_s, executed, needed, buckets = {}, 0.0, 0.0, 0.0, 0.0, []
    for g in grid.groups:
        out = run_group(g.config, g, log=None)
        run_s += out.run_s
        compile_s += out.compile_s
        for i, loss in zip(g.index, out.test_loss[:, -1]):
            losses[int(i)] = float(loss)
        bucket_needed = sum(train_flops(g.config, s) for s in g.member_sizes())
        needed += bucket_needed
        executed += g.size * train_flops(g.config, padded_sizes(g.sizes()))
        steps = cfg.train.steps + 1
        buckets.append(Bucket(g.label(), g.size, g.size * steps / out.run_s, bucket_needed * steps / out.run_s,
                              g.padding_waste()))
    steps = grid.n_members * (cfg.train.steps + 1)
    way = Way("engine (vmapped, bucketed)", steps / run_s, compile_s, grid.n_members, losses)
    return way, executed / needed, buckets


def run_one_at_a_time(cfg: Config, rows: list[tuple]) -> Way:
    """(b): each member alone, a jitted loop at its true size. ``rows``: (group, row, weight)."""
    losses, run_s, compile_s = {}, 0.0, 0.0
    for g, r, weight in rows:
        out = run_group(g.config, g.subset(np.array([r])), log=None)
        run_s += weight * out.run_s
        compile_s += out.compile_s
        losses[int(g.index[r])] = float(out.test_loss[0, -1])
    n = sum(w for _, _, w in rows)
    return Way("one member at a time, jitted JAX", n * (cfg.train.steps + 1) / run_s, compile_s, len(rows), losses)


# --- the PyTorch peers (MLP workloads): written by hand, as a PyTorch user would ---

TORCH_WAYS = {  # way -> its row in the report, in the order of Report.ways (c), (d), (e)
    "alone": "one member at a time, PyTorch eager",
    "stacked": "stacked PyTorch (bmm, one model per shape), eager",
    "compiled": "stacked PyTorch (bmm, one model per shape), torch.compile",
}
COMPILE_WARMUP_STEPS = 2  # steps run before timing the compiled peer (they compile its forward and backward)


def warmup_steps(steps: int, compiled: bool) -> int:
    """Steps of a stacked PyTorch run timed apart as its compile time (none when eager; at least one timed step)."""
    return min(COMPILE_WARMUP_STEPS, steps - 1) if compiled else 0


@dataclass
class TorchMember:
    """What the PyTorch peers need of a member."""
    index: int     # flat member index
    seed: int      # torch.manual_seed before building its model (Linear's default init)
    width: int
    depth: int
    mlp_ratio: int  # residual blocks' hidden width / width
    lr: float


def torch_member(g: Group, r: int) -> TorchMember:
    """Member ``r`` of group ``g`` as the PyTorch peers see it."""
    v = g.values
    return TorchMember(int(g.index[r]), int(v["train.seed"][r]), int(v["model.width"][r]), int(v["model.depth"][r]),
                       int(v["model.mlp_ratio"][r]), float(v["train.lr"][r]))


def torch_stacks(grid: Grid) -> list[tuple[Config, list[TorchMember]]]:
    """The members of each group split by (width, depth, mlp_ratio, lr): the members one stacked PyTorch model trains
    (same tensor shapes, and one Adam learning rate, so every member's update is exactly its own)."""
    stacks = {}
    for gi, g in enumerate(grid.groups):
        for r in range(g.size):
            m = torch_member(g, r)
            stacks.setdefault((gi, m.width, m.depth, m.mlp_ratio, m.lr), (g.config, []))[1].append(m)
    return list(stacks.values())


def torch_mlp(cfg: Config, member: TorchMember, linear: Callable | None = None) -> torch.nn.Sequential:
    """The member's MLP in PyTorch (``torch.nn.Sequential``, x (..., 1) -> (..., 1)); ``linear(fan_in, fan_out,
    bias=True)`` makes its dense layers (default ``torch.nn.Linear``, with its default init)."""
    import torch
    m, width, depth, ratio = cfg.model, member.width, member.depth, member.mlp_ratio
    linear = linear or torch.nn.Linear
    act = {"silu": torch.nn.SiLU, "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "gelu": torch.nn.GELU}[m.activation]

    class Block(torch.nn.Module):
        def __init__(self, w):
            super().__init__()
            self.norm = torch.nn.RMSNorm(w, elementwise_affine=False) if m.norm == "rmsnorm" else torch.nn.Identity()
            self.up, self.act, self.down = linear(w, ratio * w), act(), linear(ratio * w, w, bias=False)

        def forward(self, h):
            return h + self.down(self.act(self.up(self.norm(h))))

    if m.residual:
        return torch.nn.Sequential(linear(1, width), *[Block(width) for _ in range(depth)], linear(width, 1))
    layers = [linear(1, width), act()]
    for _ in range(depth - 1):
        layers += [linear(width, width), act()]
    return torch.nn.Sequential(*layers, linear(width, 1))


def stacked_linear(members: int) -> type[torch.nn.Module]:
    """A ``linear`` for :func:`torch_mlp` that holds ``members`` dense layers at once: weight (members, fan_out,
    fan_in) and bias (members, fan_out), as torch.stack of theirs; input (members, batch, fan_in), one bmm."""
    import torch

    class StackedLinear(torch.nn.Module):
        def __init__(self, fan_in, fan_out, bias=True):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.empty(members, fan_out, fan_in))
            self.bias = torch.nn.Parameter(torch.empty(members, fan_out)) if bias else None

        def forward(self, x):
            y = torch.bmm(x, self.weight.mT)
            return y if self.bias is None else y + self.bias[:, None]

    return StackedLinear


def torch_net(cfg: Config, member: TorchMember) -> torch.nn.Sequential:
    """The member's own PyTorch model, initialised under ``torch.manual_seed(member.seed)``."""
    import torch
    torch.manual_seed(member.seed)
    return torch_mlp(cfg, member)


def torch_inputs(cfg: Config, members: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fresh training inputs x ~ U[low, high], shape (members, batch_size, 1)."""
    import torch
    t = cfg.task
    return torch.rand(members, t.batch_size, 1, generator=generator) * (t.high - t.low) + t.low


def torch_loss(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error of y against x**2 over the last two axes (batch, 1): per member when stacked."""
    return ((y - x**2) ** 2).mean(dim=(-2, -1))


def torch_test_loss(cfg: Config, net: torch.nn.Module) -> float:
    """Test loss of a trained member on the task's test grid (cell midpoints of [low, high])."""
    import torch
    t = cfg.task
    xt = t.low + (torch.arange(t.test_size) + 0.5)[:, None] * (t.high - t.low) / t.test_size
    with torch.no_grad():
        return float(torch_loss(net(xt), xt))


def adam_step(loss: Callable, opt: torch.optim.Optimizer) -> Callable:
    """step(x): one training step, an Adam step ``opt`` on ``loss(x)`` (a scalar)."""
    def step(x):
        value = loss(x)
        opt.zero_grad()
        value.backward()
        opt.step()
    return step


def timed_steps(step: Callable, data: Callable, indices: list[int], start: int, stop: int) -> float:
    """Seconds to run ``step(data(s, indices))`` for s = start .. stop - 1."""
    t0 = time.perf_counter()
    for s in range(start, stop):
        step(data(s, indices))
    return time.perf_counter() - t0


def train_alone(cfg: Config, member: TorchMember, steps: int, data: Callable) -> tuple[torch.nn.Module, float]:
    """(c): train one member alone for ``steps`` Adam steps on ``data(step, [member.index])[0]`` (batch, 1);
    returns the trained model and the seconds."""
    import torch
    net = torch_net(cfg, member)
    step = adam_step(lambda batch: torch_loss(net(batch[0]), batch[0]), torch.optim.Adam(net.parameters(), member.lr))
    return net, timed_steps(step, data, [member.index], 0, steps)


def train_stacked(cfg: Config, members: list[TorchMember], steps: int, data: Callable,
                  compiled: bool) -> tuple[list[torch.nn.Module], float, float]:
    """(d)/(e): train ``members`` (one shape, one lr) as one stacked model, from their own inits, each on its
    rows of ``data(step, indices)`` (members, batch, 1), the loss summed over members, one fused Adam; with the
    loss (forward and backward) under ``torch.compile`` if ``compiled``. Returns the trained per-member
    models, the seconds of the warm-up steps (the compile) and of the timed steps after them."""
    import torch
    nets = [torch_net(cfg, m) for m in members]
    stacked = torch_mlp(cfg, members[0], stacked_linear(len(members)))
    stacked.load_state_dict({k: torch.stack([n.state_dict()[k] for n in nets]) for k in nets[0].state_dict()})
    loss = lambda x: torch_loss(stacked(x), x).sum()
    if compiled:
        torch.compiler.reset()  # a fresh program for this shape
        loss = torch.compile(loss, fullgraph=True)
    step = adam_step(loss, torch.optim.Adam(stacked.parameters(), members[0].lr, fused=True))
    indices, warm = [m.index for m in members], warmup_steps(steps, compiled)
    warm_s = timed_steps(step, data, indices, 0, warm)
    run_s = timed_steps(step, data, indices, warm, steps)
    for i, net in enumerate(nets):
        net.load_state_dict({k: v[i] for k, v in stacked.state_dict().items()})
    return nets, warm_s, run_s


def torch_applies(cfg: Config) -> bool:
    """Whether the PyTorch peers can run: an MLP workload and torch installed."""
    return cfg.model.family == "mlp" and importlib.util.find_spec("torch") is not None


def fresh_inputs(cfg: Config) -> Callable:
    """The timed runs' data: fresh draws from torch's global generator every step, whatever the members."""
    return lambda step, indices: torch_inputs(cfg, len(indices))


def run_torch(cfg: Config, rows: list[tuple]) -> Way | None:
    """(c): each member alone in PyTorch eager mode (the loop written by hand), or None where it does not apply."""
    if not torch_applies(cfg):
        return None
    losses, run_s = {}, 0.0
    for g, r, weight in rows:
        net, seconds = train_alone(g.config, torch_member(g, r), cfg.train.steps + 1, fresh_inputs(g.config))
        run_s += weight * seconds
        losses[int(g.index[r])] = torch_test_loss(g.config, net)
    n = sum(w for _, _, w in rows)
    return Way(TORCH_WAYS["alone"], n * (cfg.train.steps + 1) / run_s, 0.0, len(rows), losses)


def run_torch_stacked(cfg: Config, grid: Grid, compiled: bool) -> Way | None:
    """(d)/(e): every member of the sweep, one stacked model per (shape, lr), eager or compiled; None where it
    does not apply. Member-steps/s over the timed steps (after the compiled way's warm-up steps)."""
    if not torch_applies(cfg):
        return None
    losses, run_s, warm_s, timed, steps = {}, 0.0, 0.0, 0, cfg.train.steps + 1
    for c, members in torch_stacks(grid):
        nets, warm, run = train_stacked(c, members, steps, fresh_inputs(c), compiled)
        warm_s, run_s = warm_s + warm, run_s + run
        timed += len(members) * (steps - warmup_steps(steps, compiled))
        losses.update({m.index: torch_test_loss(c, net) for m, net in zip(members, nets)})
    name = TORCH_WAYS["compiled" if compiled else "stacked"]
    return Way(name, timed / run_s, warm_s, grid.n_members, losses)


def shape_representatives(grid) -> list[tuple]:
    """One (group, row, weight) per distinct (group, true sizes): weight = members of that shape."""
    reps = {}
    for gi, g in enumerate(grid.groups):
        for r, shape in enumerate(g.shapes()):
            key = (gi, shape)
            reps[key] = (g, reps[key][1], reps[key][2] + 1) if key in reps else (g, r, 1)
    return list(reps.values())


@dataclass
class Report:
    text: str                  # markdown table and checks
    ways: list                 # the Way of (a)-(e), in that order; (c)-(e) None without torch or on non-MLP workloads
    padding_waste: float
    loss_rel_diff: float       # max |loss_b / loss_a - 1| over the members timed in (b)


def benchmark(name: str, small: bool, overrides=()) -> Report:
    """Run workload ``name`` the five ways of the module docstring; returns the report (markdown table and checks)."""
    cfg = workload_config(name, small, overrides)
    grid = build_grid(cfg)
    rows = shape_representatives(grid)
    engine, waste, buckets = run_engine(cfg)
    ways = [engine, run_one_at_a_time(cfg, rows), run_torch(cfg, rows), run_torch_stacked(cfg, grid, compiled=False),
            run_torch_stacked(cfg, grid, compiled=True)]
    peak, peak_kind = peak_memory_bytes()
    compute = jnp.bfloat16 if cfg.train.precision == "bf16" else jnp.float32
    ceiling = matmul_ceiling(compute)
    flops_needed = np.mean([train_flops(g.config, s) for g in grid.groups for s in g.member_sizes()])
    lines = [f"### {name} ({'CPU-sized' if small else 'full size'}): {grid.n_members} members, "
             f"{cfg.train.steps} steps, batch {cfg.task.batch_size}, {len(grid.groups)} bucket(s)",
             f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}", "",
             "| way | members timed | model-steps/s | samples (tokens)/s | compile s (total) | engine speedup |",
             "|---|---|---|---|---|---|"]
    for i, w in enumerate(ways):
        if w is None:
            why = "torch not installed" if cfg.model.family == "mlp" else "MLP workloads only"
            lines.append(f"| {list(TORCH_WAYS.values())[i - 2]} | - | skipped: {why} | | | |")
            continue
        lines.append(f"| {w.name} | {w.members_timed} | {w.member_steps_per_s:,.0f} | "
                     f"{w.member_steps_per_s * tokens_per_step(cfg):,.0f} | {w.compile_s:.1f} | "
                     f"{engine.member_steps_per_s / w.member_steps_per_s:,.2f}x |")
    lines.append(f"\n(one-at-a-time rows time one member per distinct shape, weighted by the members of that "
                 f"shape; model-steps count every member-step of the sweep, the final evaluation step included; "
                 f"engine speedup = engine model-steps/s / the row's, below 1 where the row is faster; the "
                 f"torch.compile row's compile s is its first {COMPILE_WARMUP_STEPS} steps per stacked model, "
                 f"timed apart, its model-steps/s the steps after them)")
    achieved = engine.member_steps_per_s * flops_needed
    diffs = [abs(ways[1].final_losses[i] / engine.final_losses[i] - 1) for i in ways[1].final_losses]
    lines += ["",
              f"- achieved model FLOP/s (true sizes, 3 x forward matmul FLOPs x batch): {achieved:.3g}; measured "
              f"{jnp.dtype(compute).name} matmul ceiling {ceiling:.3g} FLOP/s -> {achieved / ceiling:.1%} of it (MFU)",
              f"- padding waste (FLOPs executed / FLOPs needed): {waste:.2f}x",
              f"- {peak_kind} memory: {peak / 2**20:,.0f} MiB",
              f"- same losses: max relative difference of final test loss, engine vs one-at-a-time JAX, "
              f"over the {len(diffs)} timed members: {max(diffs):.2e}"]
    lines += ["", "| bucket | members | model-steps/s | model FLOP/s | MFU | padding waste |", "|---|---|---|---|---|---|"]
    lines += [f"| {b.label} | {b.members} | {b.member_steps_per_s:,.0f} | {b.model_flops_per_s:.3g} | "
              f"{b.model_flops_per_s / ceiling:.1%} | {b.padding_waste:.2f}x |" for b in buckets]
    lines.append("(per bucket: its training loop's wall time, compile excluded; MFU against the matmul ceiling above)")
    for w in (w for w in ways[2:] if w is not None):
        e = np.median([engine.final_losses[i] for i in w.final_losses])
        tq = np.median(list(w.final_losses.values()))
        lines.append(f"- {w.name} (PyTorch's own init and data stream): median final test loss {tq:.3g} vs "
                     f"engine {e:.3g} on the same {len(w.final_losses)} members")
    if ways[3] is not None:
        lines.append("- from the same inits and data, stacked eager reproduces the one-at-a-time PyTorch loop and "
                     "torch.compile reproduces stacked eager to float rounding (checked by tests/test_bench.py)")
    return Report("\n".join(lines), ways, waste, max(diffs))
