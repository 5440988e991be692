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
from sweepjax.config import ConfigError, build_config
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
    split = small_config(sweep, run={"max_padding_waste": float("inf"), "program_seconds": 1e-6, "flop_rate": 1e9})
    assert len(build_grid(joined).groups) == 1 and len(build_grid(split).groups) == 4
    one = run(sweep, run={"max_padding_waste": float("inf"), "program_seconds": 86400.0, "flop_rate": 1e9})
    four = run(sweep, run={"max_padding_waste": float("inf"), "program_seconds": 1e-6, "flop_rate": 1e9})
    for k in CURVES + ("final_test_loss",):
        np.testing.assert_allclose(four[k].values, one[k].values, rtol=1e-5, err_msg=k)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty calibration cache, and a ``measure`` that counts its calls instead of timing the engine."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(calibration.ENVIRONMENT)   # measure (conftest fixes the numbers for every other test)
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


# ---- review 17: one calibration per sweep, validated numbers, hard bound, resumable splits -------------------------

def members_of(buckets) -> list[frozenset]:
    """Each bucket as the set of its members' coordinates (structural values and per-member sweep values)."""
    out = []
    for b in buckets:
        swept = [k for k in b.config.sweep if k in b.values]
        rows = zip(*(b.values[k].tolist() for k in swept))
        out.append(frozenset((tuple(sorted(b.structural.items())), row) for row in rows))
    return sorted(out, key=sorted)


@pytest.mark.parametrize("axis, values", [("model.residual", [False, True]),
                                          ("train.precision", ["float32", "float64"])])
def test_calibration_does_not_depend_on_axis_order(monkeypatch, tmp_path, axis, values):
    """One calibration for the whole sweep, that of the sorted-first (reference, precision) pair: the same buckets
    in either axis order (here the pairs' numbers differ so much that each alone would split otherwise)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(calibration.ENVIRONMENT)   # measure (conftest fixes the numbers for every other test)
    calls = []

    def measure(name, precision="float32"):
        calls.append((name, precision))
        return Calibration(1e-6 if (name, precision) == ("mlp", "float32") else 1e5, 1e9)
    monkeypatch.setattr(calibration, "measure", measure)
    grids = []
    for order in (values, values[::-1]):
        cfg = small_config({axis: order, "seed": [0, 1], "model.width": [2, 4, 16, 64]},
                           run={"max_padding_waste": float("inf")})
        grids.append(members_of(build_grid(cfg).groups))
        assert (cfg.run.program_seconds, cfg.run.flop_rate) == (1e-6, 1e9)   # the pair's numbers are recorded
    assert grids[0] == grids[1] and len(grids[0]) == 8                       # every group split by width
    assert set(calls) == {("mlp", "float32")}


def test_measured_numbers_are_snapped_and_clipped(cache, monkeypatch):
    """Measured numbers are rounded to 2 significant digits (and clipped into the accepted ranges) before use and
    before they are cached."""
    monkeypatch.setattr(calibration, "measure", lambda name, precision="float32": Calibration(2.3456, 3.1416e9))
    assert calibration.calibrate(small_config({})) == Calibration(2.3, 3.1e9)
    assert list(json.loads(calibration.calibration_path().read_text()).values()) == [
        {"program_seconds": 2.3, "flop_rate": 3.1e9}]
    calibration.calibration_path().unlink()
    monkeypatch.setattr(calibration, "measure", lambda name, precision="float32": Calibration(1e-9, 0.25))
    assert calibration.calibrate(small_config({})) == Calibration(1e-6, 1.0)


@pytest.mark.parametrize("content", [
    "", "{", "[]", "null", "3", '{"KEY": {}}', '{"KEY": null}', '{"KEY": [2.0, 3e9]}',
    '{"KEY": {"program_seconds": "x", "flop_rate": 1}}', '{"KEY": {"program_seconds": true, "flop_rate": 1e9}}',
    '{"KEY": {"program_seconds": -5, "flop_rate": -1}}', '{"KEY": {"program_seconds": 0, "flop_rate": 1e9}}',
    '{"KEY": {"program_seconds": NaN, "flop_rate": 1e9}}', '{"KEY": {"program_seconds": 1.0, "flop_rate": Infinity}}',
    '{"KEY": {"program_seconds": 1e300, "flop_rate": 1e9}}', '{"KEY": {"program_seconds": 1.0}}',
])
def test_a_bad_cache_counts_as_missing(cache, content):
    """A cache that is not a JSON object, or an entry that is not two numbers in range: measured again, the entry
    overwritten (other entries kept), and only the measured numbers reach the config."""
    cfg = small_config({"model.width": [4, 64]})
    key = calibration.machine_key(cfg)
    path = calibration.calibration_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content.replace("KEY", key.replace('"', '\\"')))
    build_grid(cfg)
    assert (cfg.run.program_seconds, cfg.run.flop_rate) == (2.0, 3e9) and len(cache) == 1
    build_config(cfg.to_dict())   # the resolved config (as saved) is a valid one
    assert json.loads(path.read_text())[key] == {"program_seconds": 2.0, "flop_rate": 3e9}
    assert calibration.calibrate(cfg) == Calibration(2.0, 3e9) and len(cache) == 1


def test_a_cached_nan_never_reaches_the_config(cache):
    """review17/nanres.py: a NaN cached for every key made the saved config one that could not be resumed."""
    calibration.calibrate(small_config({}))
    path = calibration.calibration_path()
    path.write_text(json.dumps({k: {"program_seconds": 1.0, "flop_rate": math.nan}
                                for k in json.loads(path.read_text())}))
    cfg = small_config({"model.width": [2, 64]})
    build_grid(cfg)
    assert (cfg.run.program_seconds, cfg.run.flop_rate) == (2.0, 3e9)


@pytest.mark.parametrize("key, value", [("program_seconds", 1e308), ("program_seconds", 5e-324),
                                        ("flop_rate", 5e-324), ("flop_rate", 1e21)])
def test_given_numbers_out_of_range_are_refused(cache, key, value):
    cfg = small_config({"model.width": [2, 4, 16, 64]}, run={"program_seconds": 1.0, "flop_rate": 1e9, key: value})
    with pytest.raises(ConfigError, match=f"run.{key} = "):
        build_grid(cfg)


def test_partition_raises_where_no_split_is_allowed():
    with pytest.raises(ValueError, match="no split"):
        partition(3, lambda i, j: math.inf)
    assert partition(3, lambda i, j: 1e308 if j - i == 1 else math.inf) == [(0, 1), (1, 2), (2, 3)]


@pytest.mark.parametrize("cal", [Calibration(1e308, 1e9), Calibration(1.0, 5e-324), Calibration(5e-324, 5e-324),
                                 Calibration(1.0, 1e-300)])
def test_waste_bound_is_hard_whatever_the_numbers(cal):
    """review17/path.py: with every cost infinite the split came out as one bucket over the bound."""
    g = one_group({"model.width": [2, 4, 16, 64], "train.steps": [10, 1000]})
    for bound in (1.0, 1.5, math.inf):
        buckets = bucket(g, bound, lambda cfg: cal)
        assert max(b.padding_waste() for b in buckets) <= bound * (1 + 1e-12)
        assert sorted(np.concatenate([b.index for b in buckets]).tolist()) == sorted(g.index.tolist())
    assert len(bucket(g, math.inf, lambda cfg: cal)) == 1   # a program costs more than any work: one program


def test_cache_key_names_the_machine(monkeypatch):
    import jax
    cfg = small_config({})
    key = calibration.machine_key(cfg)
    assert "cores" in key and f"{jax.device_count()} devices" in key
    monkeypatch.setattr(jax, "device_count", lambda *a: 64)
    assert calibration.machine_key(cfg) != key and "64 devices" in calibration.machine_key(cfg)


def test_member_padded_sizes_measure_nothing(cache):
    """members._padded_sizes builds the grid unbucketed (nothing to measure): the maxima are those of the buckets."""
    from sweepjax.members import _padded_sizes
    cfg = small_config({"model.width": [4, 16, 64], "model.depth": [1, 3]}, model={"residual": True})
    assert _padded_sizes(cfg) == {"width": 64, "depth": 3, "mlp_hidden": 64} and cache == []
    cheap = {"program_seconds": 1e-6, "flop_rate": 1e9}
    buckets = build_grid(small_config(cfg.sweep, model={"residual": True}, run=cheap)).groups
    assert len(buckets) > 1
    assert {k: max(padded_sizes(g.sizes())[k] for g in buckets) for k in _padded_sizes(cfg)} == _padded_sizes(cfg)


def test_labels_name_every_swept_size():
    """review17/tr.py: a sweep over model.heads (or model.mlp_ratio) printed identical labels."""
    t = {"task": {"name": "markov", "batch_size": 8, "test_size": 16},
         "model": {"family": "transformer", "head_size": 0}}
    group = one_group({"model.width": [32, 64], "model.heads": [1, 2, 4]}, **t)
    labels = [group.subset(np.array([r])).label() for r in range(group.size)]
    assert len(set(labels)) == 6 and "heads 4" in labels[-1]
    g = one_group({"model.width": [16, 64], "model.mlp_ratio": [1, 4]}, model={"residual": True})
    labels = [g.subset(np.array([r])).label() for r in range(g.size)]
    assert len(set(labels)) == 4 and "mlp_ratio 1" in labels[0]


def test_resume_after_the_split_changed_loads_no_old_unit(tmp_path, monkeypatch):
    """Checkpoint units carry a fingerprint of their members: a resume with other calibration numbers (so another
    split) recomputes instead of loading a unit into other members, and ends equal to an uninterrupted run of the
    new split; a plain resume still loads the finished units."""
    from sweepjax.engine.checkpoint import Interrupted, Store
    from sweepjax.run import run_sweep
    loaded = []
    load = Store.load_unit
    monkeypatch.setattr(Store, "load_unit", lambda self, unit: (r := load(self, unit), loaded.append(r is not None))[0])
    sweep = {"seed": [0, 1], "model.width": [4, 64]}
    split = small_config(sweep, run={"max_padding_waste": float("inf"), "program_seconds": 1e-6, "flop_rate": 1e9})
    joined = small_config(sweep, run={"max_padding_waste": float("inf"), "program_seconds": 1e7, "flop_rate": 1e9})
    assert len(build_grid(split).groups) == 2 and len(build_grid(joined).groups) == 1

    def interrupted(where):
        calls = []
        store = Store(where, every_minutes=0)
        with pytest.raises(Interrupted):   # the third check: the first bucket done, the second at step 15
            run_sweep(split, log=None, store=store, should_stop=lambda: (calls.append(1), len(calls) >= 3)[1])
        store.close()
        assert len(list((where / "checkpoints" / "units").iterdir())) == 1

    for cfg, where in ((split, tmp_path / "same"), (joined, tmp_path / "changed")):
        interrupted(where)
        loaded.clear()
        store = Store(where, every_minutes=0)
        resumed = run_sweep(cfg, log=None, store=store)[0]
        store.close()
        assert sum(loaded) == (1 if cfg is split else 0)
        ref = run_sweep(cfg, log=None)[0]
        for k in CURVES + ("final_test_loss",):
            np.testing.assert_array_equal(resumed[k].values, ref[k].values, k)


def test_the_environment_fixes_the_numbers(monkeypatch):
    """$SWEEPJAX_CALIBRATION stands in for measuring (conftest sets it for the tests and the processes they start);
    config keys still win; a malformed value is refused."""
    monkeypatch.setattr(calibration, "measure", lambda *a: pytest.fail("measured despite the environment"))
    monkeypatch.setenv(calibration.ENVIRONMENT, "1.5,2e9")
    assert calibration.calibrate(small_config({"model.width": [4, 64]})) == Calibration(1.5, 2e9)
    assert calibration.calibrate(small_config({}, run={"flop_rate": 1e12})) == Calibration(1.5, 1e12)
    monkeypatch.setenv(calibration.ENVIRONMENT, "1.5")
    with pytest.raises(ConfigError, match="SWEEPJAX_CALIBRATION"):
        calibration.calibrate(small_config({"model.width": [4, 64]}))
