"""Size buckets by cost (issue 17): the cost model, the cheapest split, its calibration, and that results never
depend on it."""
from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from conftest import run, small_config
from sweepjax.engine import calibrate as calibration
from sweepjax.config import ConfigError
from sweepjax.engine.calibrate import measure
from sweepjax.grid import Calibration, bucket, build_grid, partition
from sweepjax.models import padded_sizes, tokens_per_step

CURVES = ("train_loss", "test_loss")


def fixed(program_seconds: float, flop_rate: float = 1e9):
    """A calibration callable for :func:`bucket` that measures nothing."""
    return lambda cfg: Calibration(program_seconds, flop_rate)


def one_group(sweep: dict, **sections):
    """The single structural group of a small sweep, unsplit."""
    (g,) = build_grid(small_config(sweep, run={"max_padding_waste": 0}, **sections)).groups
    return g


def seconds(g, cal: Calibration) -> float:
    """The cost model's estimate of one bucket ``g``."""
    executed = g.size * g.cost(padded_sizes(g.sizes()), g.longest)
    return cal.program_seconds + 3 * tokens_per_step(g.config) * executed / cal.flop_rate


def set_partitions(items: list) -> list[list[list]]:
    """Every partition of ``items`` into non-empty sets."""
    if not items:
        return [[]]
    first, rest = items[0], items[1:]
    out = []
    for p in set_partitions(rest):
        out.append([[first]] + p)
        out += [p[:i] + [[first] + b] + p[i + 1:] for i, b in enumerate(p)]
    return out


def test_partition_is_the_cheapest_split_into_runs():
    """The dynamic programme equals brute force over all 2^(n-1) splits of n items into contiguous runs."""
    rng = np.random.default_rng(0)
    for n in range(1, 8):
        for _ in range(20):
            table = rng.uniform(0, 10, (n, n + 1))
            table[rng.uniform(size=table.shape) < 0.2] = math.inf   # runs not allowed
            table[np.arange(n), np.arange(1, n + 1)] = rng.uniform(0, 10, n)   # single items always are
            cost = lambda i, j: table[i, j]
            got = sum(cost(i, j) for i, j in partition(n, cost))
            cuts = [[0, *c, n] for k in range(n) for c in itertools.combinations(range(1, n), k)]
            assert got == pytest.approx(min(sum(cost(a, b) for a, b in zip(c, c[1:])) for c in cuts))


@pytest.mark.parametrize("program_seconds", [1e-4, 0.01, 0.05, 0.3, 3.0])
def test_buckets_are_the_cheapest_partition_of_one_size_axis(program_seconds):
    """With one size axis (widths, uneven member counts) the contiguous split is the best of ALL partitions of the
    member kinds (brute force over the 203 set partitions of 6 kinds)."""
    g = one_group({"model.width": [2, 3, 5, 8, 13, 40], "seed": [0, 1]}, task={"batch_size": 64})
    g = g.subset(np.flatnonzero((g.values["model.width"] != 5) | (g.values["train.seed"] == 0)))  # width 5: 1 member
    cal = Calibration(program_seconds, 1e7)
    got = sum(seconds(b, cal) for b in bucket(g, math.inf, lambda cfg: cal))
    widths = sorted(set(g.values["model.width"].tolist()))
    best = min(sum(seconds(g.subset(np.flatnonzero(np.isin(g.values["model.width"], s))), cal) for s in p)
               for p in set_partitions(widths))
    assert got == pytest.approx(best, rel=1e-12)


def test_program_cost_decides_between_one_program_and_one_per_kind():
    """A program that costs (nearly) nothing: one bucket per member kind; one that costs a day: one bucket."""
    g = one_group({"model.width": [4, 16, 64], "train.steps": [10, 40]})
    assert len(bucket(g, math.inf, fixed(1e-12))) == 6
    assert len(bucket(g, math.inf, fixed(86400.0))) == 1
    assert len(bucket(g, 0.0, fixed(1e-12))) == 1          # max_padding_waste = 0: one program, whatever the cost
    assert len(bucket(one_group({"seed": [0, 1]}), math.inf, fixed(1e-12))) == 1   # one kind: nothing to split


def test_waste_bound_holds_and_steps_count():
    """max_padding_waste stays a hard bound on every bucket (steps count: a stopped member still runs);
    1.0 gives one bucket per kind; under the bound the cost model still joins what is cheap to join."""
    g = one_group({"model.width": [4, 5, 16, 64], "train.steps": [10, 12, 1000]})
    for bound in (1.0, 1.2, 1.5, 3.0):
        buckets = bucket(g, bound, fixed(86400.0))
        assert all(b.padding_waste() <= bound + 1e-12 for b in buckets)
        assert sorted(np.concatenate([b.index for b in buckets]).tolist()) == sorted(g.index.tolist())
    assert len(bucket(g, 1.0, fixed(86400.0))) == 12
    assert len(bucket(g, 1.5, fixed(86400.0))) < 12      # width 4 with 5, steps 10 with 12


def test_several_axes_are_split_in_several_orders():
    """Widths x depths: in the order by work, (width 128, depth 4) sits between kinds of other widths, and the
    fewest buckets within a waste of 1.5 (two per width: depths 1-2 and 4-8, as first-fit found) are contiguous
    only in the width-major order, which the split also tries."""
    g = one_group({"model.width": [16, 32, 64, 128], "model.depth": [1, 2, 4, 8]}, model={"residual": True})
    buckets = bucket(g, 1.5, fixed(86400.0))
    assert sorted(b.label() for b in buckets) == sorted(f"width {w}, depth {d}" for w in (16, 32, 64, 128)
                                                        for d in ("1-2", "4-8"))


def test_cost_settings_leave_results_unchanged():
    """One program (a program costs a day) or one per width (it costs nothing): the same member results.
    (XLA on CPU rounds differently for member axes of other lengths: equal to float32 rounding.)"""
    sweep = {"seed": [0, 1], "model.width": [2, 4, 16, 64]}
    joined = small_config(sweep, run={"max_padding_waste": float("inf"), "program_seconds": 86400.0, "flop_rate": 1e9})
    split = small_config(sweep, run={"max_padding_waste": float("inf"), "program_seconds": 1e-9, "flop_rate": 1e9})
    assert len(build_grid(joined).groups) == 1 and len(build_grid(split).groups) == 4
    one = run(sweep, run={"max_padding_waste": float("inf"), "program_seconds": 86400.0, "flop_rate": 1e9})
    four = run(sweep, run={"max_padding_waste": float("inf"), "program_seconds": 1e-9, "flop_rate": 1e9})
    for k in CURVES + ("final_test_loss",):
        np.testing.assert_allclose(four[k].values, one[k].values, rtol=1e-5, err_msg=k)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty calibration cache, and a ``measure`` that counts its calls instead of timing the engine."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []

    def measure(name, precision="float32"):
        calls.append((name, precision))
        return Calibration(2.0, 3e9)
    monkeypatch.setattr(calibration, "measure", measure)
    return calls


def test_calibration_is_measured_once_cached_and_overridable(cache):
    cfg = small_config({"model.width": [4, 64]})
    assert calibration.calibrate(cfg) == Calibration(2.0, 3e9) and cache == [("mlp", "float32")]
    assert calibration.calibrate(small_config({"model.width": [8, 16]})) == Calibration(2.0, 3e9)
    assert len(cache) == 1                                   # read back from the cache file
    calibration.calibrate(small_config({"model.width": [8, 16]}, model={"residual": True}))
    assert cache[1:] == [("mlp-residual", "float32")]       # residual MLPs have a reference of their own
    saved = json.loads(calibration.calibration_path().read_text())
    assert saved == {k: {"program_seconds": 2.0, "flop_rate": 3e9} for k in saved} and len(saved) == 2
    assert sorted(k.rsplit(" / ", 2)[1:] for k in saved) == [["mlp", "float32"], ["mlp-residual", "float32"]]
    # the config keys win over the measurement, each on its own
    assert calibration.calibrate(small_config({}, run={"program_seconds": 0.5})) == Calibration(0.5, 3e9)
    assert calibration.calibrate(small_config({}, run={"flop_rate": 1e12})) == Calibration(2.0, 1e12)
    calibration.calibration_path().unlink()
    assert calibration.calibrate(small_config({}, run={"program_seconds": 0.5, "flop_rate": 1e12})) == Calibration(0.5, 1e12)
    assert len(cache) == 2                                   # both given: nothing measured


def test_build_grid_records_the_numbers_it_used(cache):
    """The resolved config (saved beside the results) holds the calibration its buckets came from, so a resumed
    run splits the same way; nothing is measured where there is nothing to split."""
    cfg = small_config({"model.width": [4, 64]})
    build_grid(cfg)
    assert (cfg.run.program_seconds, cfg.run.flop_rate) == (2.0, 3e9)
    quiet = small_config({"seed": [0, 1]})
    build_grid(quiet)
    build_grid(small_config({"model.width": [4, 64]}, run={"max_padding_waste": 0}))
    assert len(cache) == 1 and (quiet.run.program_seconds, quiet.run.flop_rate) == (0.0, 0.0)


def test_measure_times_the_engine(monkeypatch):
    """The real measurement, on the reference programs shrunk to a few members and steps."""
    raw, _ = calibration.CALIBRATION_REFERENCE["mlp"]
    monkeypatch.setitem(calibration.CALIBRATION_REFERENCE, "mlp", (raw, {"cpu": (2, 4, 64, 5), "accelerator": (2, 4, 64, 5)}))
    cal = measure("mlp")   # the real one (conftest replaces calibration.measure in every test)
    assert 0 < cal.program_seconds < 600 and 0 < cal.flop_rate < 1e18
    for name, (_, sizes) in calibration.CALIBRATION_REFERENCE.items():   # every reference is a valid one-program config
        for n, narrow, wide, steps in sizes.values():
            for width in (narrow, wide):
                assert len(build_grid(calibration.reference_config(name, width, n, steps, "bf16")).groups) == 1


@pytest.mark.parametrize("setting, message", [
    ({"program_seconds": -1.0}, "run.program_seconds = -1.0: must be >= 0"),
    ({"flop_rate": float("nan")}, "run.flop_rate = nan: must be finite"),
    ({"max_padding_waste": 0.5}, "must be 0 (no bucketing) or >= 1"),
    ({"max_padding_waste": 0, "flop_rate": 1e9}, "run.flop_rate = 1000000000.0: has no effect with "
                                                  "run.max_padding_waste = 0.0"),
])
def test_bad_values_are_refused(setting, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        small_config({}, run=setting)


def test_resume_with_the_config_keeps_the_measured_numbers(tmp_path):
    """The saved config holds the numbers the buckets came from; resuming with the original config (which says 0:
    measure) takes them instead of refusing the difference or measuring again (which could split otherwise)."""
    from sweepjax import results
    from sweepjax.run import resume_config
    raw = {"task": {"batch_size": 64}, "train": {"steps": 40}, "sweep": {"model.width": [4, 64]}}
    cfg = small_config(raw["sweep"], task=raw["task"])
    build_grid(cfg)   # measures (conftest: 2.5 s, 3.5e9 FLOP/s) and records the numbers in cfg.run
    cfg.run.program_seconds, cfg.run.flop_rate = 1.25, 7e9   # as if measured on another day
    results.save_config(cfg, tmp_path)
    (tmp_path / "checkpoints").mkdir()
    resumed = resume_config(tmp_path, {**raw, "task": {**raw["task"], "test_size": 101},
                                       "train": {"steps": 40, "chunk_steps": 15, "lr": 1e-2}, "eval": {"points": 4}})
    assert (resumed.run.program_seconds, resumed.run.flop_rate) == (1.25, 7e9)
    with pytest.raises(ConfigError, match="run.flop_rate"):   # a number the user sets must still match
        resume_config(tmp_path, {**raw, "task": {**raw["task"], "test_size": 101}, "run": {"flop_rate": 1e9},
                                 "train": {"steps": 40, "chunk_steps": 15, "lr": 1e-2}, "eval": {"points": 4}})
