"""Throughput benchmark: the engine against the loops a researcher would otherwise write.

One workload, three ways, in one process:
  (a) the engine: all members as vmapped, bucketed, jitted programs;
  (b) the same members one at a time, each a jitted JAX loop at its true size (the engine's own
      program with a single member, so the losses must match (a) to float rounding);
  (c) the same members one at a time in PyTorch eager mode (MLP workloads; skipped when torch is absent).
(b) and (c) time one member of each distinct shape (a member's cost depends only on its shape) and
weight each shape by how many members have it, so their rates stand for the whole sweep.
"""
from __future__ import annotations

import resource
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from sweepjax.config import Config, build_config
from sweepjax.engine.train import run_group
from sweepjax.grid import build_grid
from sweepjax.models import count, padded_sizes, tokens_per_step

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


def run_torch(cfg: Config, rows: list[tuple]) -> Way | None:
    """(c): each member alone in PyTorch eager mode (the loop written by hand), or None without torch."""
    if cfg.model.family != "mlp":
        return None
    try:
        import torch
    except ImportError:
        return None
    acts = {"silu": torch.nn.SiLU, "relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "gelu": torch.nn.GELU}
    m, t = cfg.model, cfg.task

    class Block(torch.nn.Module):
        def __init__(self, w):
            super().__init__()
            self.norm = torch.nn.RMSNorm(w, elementwise_affine=False) if m.norm == "rmsnorm" else torch.nn.Identity()
            self.up, self.act = torch.nn.Linear(w, m.mlp_ratio * w), acts[m.activation]()
            self.down = torch.nn.Linear(m.mlp_ratio * w, w, bias=False)

        def forward(self, h):
            return h + self.down(self.act(self.up(self.norm(h))))

    def build(w, d):
        if m.residual:
            return torch.nn.Sequential(torch.nn.Linear(1, w), *[Block(w) for _ in range(d)], torch.nn.Linear(w, 1))
        layers = [torch.nn.Linear(1, w), acts[m.activation]()]
        for _ in range(d - 1):
            layers += [torch.nn.Linear(w, w), acts[m.activation]()]
        return torch.nn.Sequential(*layers, torch.nn.Linear(w, 1))

    xt = t.low + (torch.arange(t.test_size) + 0.5)[:, None] * (t.high - t.low) / t.test_size  # cell midpoints, as the task
    losses, run_s = {}, 0.0
    for g, r, weight in rows:
        torch.manual_seed(int(g.values["train.seed"][r]))
        net = build(int(g.values["model.width"][r]), int(g.values["model.depth"][r]))
        opt = torch.optim.Adam(net.parameters(), lr=float(g.values["train.lr"][r]))
        t0 = time.perf_counter()
        for _ in range(cfg.train.steps + 1):
            x = torch.rand(t.batch_size, 1) * (t.high - t.low) + t.low
            loss = torch.mean((net(x) - x**2) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
        run_s += weight * (time.perf_counter() - t0)
        with torch.no_grad():
            losses[int(g.index[r])] = float(torch.mean((net(xt) - xt**2) ** 2))
    n = sum(w for _, _, w in rows)
    return Way("one member at a time, PyTorch eager", n * (cfg.train.steps + 1) / run_s, 0.0, len(rows), losses)


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
    ways: list                 # the Way of (a), (b), (c) (None when torch is absent)
    padding_waste: float
    loss_rel_diff: float       # max |loss_b / loss_a - 1| over the members timed in (b)


def benchmark(name: str, small: bool, overrides=()) -> Report:
    """Run workload ``name`` three ways; returns the report (markdown table and checks)."""
    cfg = workload_config(name, small, overrides)
    grid = build_grid(cfg)
    rows = shape_representatives(grid)
    engine, waste, buckets = run_engine(cfg)
    ways = [engine, run_one_at_a_time(cfg, rows), run_torch(cfg, rows)]
    peak, peak_kind = peak_memory_bytes()
    compute = jnp.bfloat16 if cfg.train.precision == "bf16" else jnp.float32
    ceiling = matmul_ceiling(compute)
    flops_needed = np.mean([train_flops(g.config, s) for g in grid.groups for s in g.member_sizes()])
    lines = [f"### {name} ({'CPU-sized' if small else 'full size'}): {grid.n_members} members, "
             f"{cfg.train.steps} steps, batch {cfg.task.batch_size}, {len(grid.groups)} bucket(s)",
             f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), jax {jax.__version__}", "",
             "| way | members timed | model-steps/s | samples (tokens)/s | compile s (total) | engine speedup |",
             "|---|---|---|---|---|---|"]
    for w in ways:
        if w is None:
            why = "torch not installed" if cfg.model.family == "mlp" else "MLP workloads only"
            lines.append(f"| one member at a time, PyTorch eager | - | skipped: {why} | | | |")
            continue
        lines.append(f"| {w.name} | {w.members_timed} | {w.member_steps_per_s:,.0f} | "
                     f"{w.member_steps_per_s * tokens_per_step(cfg):,.0f} | {w.compile_s:.1f} | "
                     f"{engine.member_steps_per_s / w.member_steps_per_s:,.1f}x |")
    lines.append(f"\n(one-at-a-time rows time one member per distinct shape, weighted by the members of that "
                 f"shape; model-steps count every member-step of the sweep, the final evaluation step included)")
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
    if ways[2] is not None:
        e = np.median([engine.final_losses[i] for i in ways[2].final_losses])
        tq = np.median(list(ways[2].final_losses.values()))
        lines.append(f"- PyTorch (own init and data stream) median final loss {tq:.3g} vs engine {e:.3g} "
                     f"on the same members")
    return Report("\n".join(lines), ways, waste, max(diffs))
