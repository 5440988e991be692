"""The throughput benchmark runs in CI-sized form and checks what it claims."""
from __future__ import annotations

import pytest

from sweepjax import bench
from sweepjax.bench import benchmark
from sweepjax.grid import build_grid


def test_bench_small_lottery_runs_and_losses_agree():
    rep = benchmark("lottery", small=True, overrides=[("train.steps", 30), ("train.chunk_steps", 31),
                                                      ("sweep.seed", [0, 1]), ("sweep.model.width", [2, 4, 32])])
    engine, alone, torch_way, stacked, compiled = rep.ways
    assert engine.members_timed == 6 and alone.members_timed == 3   # one member per distinct width
    assert engine.member_steps_per_s > 0 and alone.member_steps_per_s > 0
    assert rep.loss_rel_diff < 1e-5          # padding/bucketing changes nothing but rounding
    assert 1.0 <= rep.padding_waste <= 1.5
    assert "| engine (vmapped, bucketed) |" in rep.text
    if torch_way is not None:
        assert torch_way.members_timed == 3
        for way in (stacked, compiled):       # every member trained and timed
            assert way.members_timed == 6 and sorted(way.final_losses) == list(range(6))
            assert way.member_steps_per_s > 0 and f"| {way.name} | 6 |" in rep.text
        assert compiled.compile_s > 0


def test_bench_small_transformer_reports_mfu_per_bucket():
    rep = benchmark("transformer", small=True, overrides=[("train.steps", 5), ("train.chunk_steps", 5),
                                                          ("sweep.seed", [0, 1]), ("sweep.model.width", [16])])
    engine, alone, *torch_ways = rep.ways
    assert torch_ways == [None, None, None] and rep.text.count("MLP workloads only") == 3
    assert engine.members_timed == 2 and alone.members_timed == 1
    assert rep.loss_rel_diff < 1e-5
    assert "| bucket | members | model-steps/s | model FLOP/s | MFU |" in rep.text


def trained_weights(stacks, ways, steps, data):
    """Flat member index -> {parameter name -> trained tensor}, for each way of training ``stacks``."""
    out = {}
    for way in ways:
        out[way] = {}
        for cfg, members in stacks:
            if way == "alone":
                nets = [bench.train_alone(cfg, m, steps, data)[0] for m in members]
            else:
                nets = bench.train_stacked(cfg, members, steps, data, compiled=way == "compiled")[0]
            out[way].update({m.index: n.state_dict() for m, n in zip(members, nets)})
    return out


@pytest.mark.parametrize("workload", ["lottery", "residual-depth"])
def test_stacked_torch_reproduces_one_at_a_time(workload):
    """From the same per-member inits and data, stacked PyTorch eager trains every member exactly as the
    one-at-a-time loop does, to float rounding: stacking neither mixes members up nor couples them."""
    torch = pytest.importorskip("torch")
    cfg = bench.workload_config(workload, small=True, overrides=[
        ("task.batch_size", 16), ("sweep.seed", [0, 1]), ("sweep.model.width", [4, 8])]
        + ([("sweep.model.depth", [2])] if workload == "residual-depth" else []))
    stacks = bench.torch_stacks(build_grid(cfg))
    assert sorted(len(ms) for _, ms in stacks) == [2, 2]                  # one stack per width
    steps, gen = 20, torch.Generator().manual_seed(0)
    xs = [bench.torch_inputs(cfg, 4, gen) for _ in range(steps)]           # member i's batch at step s: xs[s][i]
    w = trained_weights(stacks, ["alone", "stacked"], steps, lambda s, idx: xs[s][idx])
    for i in range(4):
        for k, v in w["alone"][i].items():
            torch.testing.assert_close(w["stacked"][i][k], v, rtol=1e-5, atol=1e-6)
    one, other = (w["stacked"][m.index]["0.weight"] for m in stacks[0][1])   # same width, different seeds
    assert not torch.allclose(one, other)


def test_compiled_stacked_torch_reproduces_eager():
    """torch.compile changes nothing but rounding: same members, same data, same trained weights."""
    torch = pytest.importorskip("torch")
    cfg = bench.workload_config("lottery", small=True, overrides=[
        ("task.batch_size", 16), ("sweep.seed", [0, 1, 2]), ("sweep.model.width", [8])])
    stacks = bench.torch_stacks(build_grid(cfg))
    steps, gen = 20, torch.Generator().manual_seed(0)
    xs = [bench.torch_inputs(cfg, 3, gen) for _ in range(steps)]
    w = trained_weights(stacks, ["stacked", "compiled"], steps, lambda s, idx: xs[s][idx])
    for i in range(3):
        for k, v in w["stacked"][i].items():
            torch.testing.assert_close(w["compiled"][i][k], v, rtol=1e-5, atol=1e-6)
