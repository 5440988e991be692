"""The throughput benchmark runs in CI-sized form and checks what it claims."""
from __future__ import annotations

from sweepjax.bench import benchmark


def test_bench_small_lottery_runs_and_losses_agree():
    rep = benchmark("lottery", small=True, overrides=[("train.steps", 30), ("train.chunk_steps", 31),
                                                      ("sweep.seed", [0, 1]), ("sweep.model.width", [2, 4, 32])])
    engine, alone, torch_way = rep.ways
    assert engine.members_timed == 6 and alone.members_timed == 3   # one member per distinct width
    assert engine.member_steps_per_s > 0 and alone.member_steps_per_s > 0
    assert rep.loss_rel_diff < 1e-5          # padding/bucketing changes nothing but rounding
    assert 1.0 <= rep.padding_waste <= 1.5
    assert "| engine (vmapped, bucketed) |" in rep.text
    if torch_way is not None:
        assert torch_way.members_timed == 3


def test_bench_small_transformer_reports_mfu_per_bucket():
    rep = benchmark("transformer", small=True, overrides=[("train.steps", 5), ("train.chunk_steps", 5),
                                                          ("sweep.seed", [0, 1]), ("sweep.model.width", [16])])
    engine, alone, torch_way = rep.ways
    assert torch_way is None and "MLP workloads only" in rep.text
    assert engine.members_timed == 2 and alone.members_timed == 1
    assert rep.loss_rel_diff < 1e-5
    assert "| bucket | members | model-steps/s | model FLOP/s | MFU |" in rep.text
