"""Training steps as a per-member axis: a sweep of run lengths is one program (issue 11, part 5).

Each member's lr schedule spans its own steps, a member stops and freezes after its last step while
longer members go on, size buckets count steps, and counts use each member's own steps.
"""
from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import run, small_config
from sweepjax.config import ConfigError, build_config
from sweepjax.engine.optim import make_optimizer, schedule_shape
from sweepjax.engine.train import GroupProgram, eval_steps, precision, run_group
from sweepjax.grid import build_grid
from sweepjax.models import padded_sizes, tokens_per_step
from sweepjax.results import counts
from sweepjax.run import run_sweep

CURVES = ("train_loss", "test_loss")
STEPS = [100, 300, 500]
MODEL = {"width": 8}
SCHEDULES = {
    "constant": {},
    "cosine": {"schedule": "cosine", "final_lr_fraction": 0.1},
    "warmup_cosine": {"schedule": "warmup_cosine", "warmup_fraction": 0.1},
    "wsd": {"schedule": "wsd", "decay_fraction": 0.3, "final_lr_fraction": 0.05},
}
ONE_PROGRAM = {"max_padding_waste": 0}   # steps [100, 300, 500] in one program (1.5 would split them)


def _config(steps: list[int], train: dict, **sections):
    return small_config({"train.steps": steps}, model=MODEL, train={"chunk_steps": 64, **train},
                        eval={"points": 6, "save_params": True}, run=ONE_PROGRAM, **sections)


def _run(steps: list[int], train: dict):
    return run_sweep(_config(steps, train), log=None)[0]


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_member_in_a_sweep_of_lengths_equals_it_alone_bitwise(schedule):
    """steps = 300 inside a sweep of [100, 300, 500] (one program) is the same member trained alone, bit for bit
    (curves, final loss, final parameters): its schedule depends on its own steps only, the shorter member's
    stop and the longer member's extra steps leave it alone.

    "Alone" is a group of three copies of the member (as the engine fills a last member chunk), which loops to
    step 300 only: XLA on CPU rounds differently for a member axis of another length (seeds [0, 1, 2] vs [0]
    already differ in the last bits), so a one-member run is compared to float32 rounding only.
    """
    train = SCHEDULES[schedule]
    cfg = _config(STEPS, train)
    swept = run_sweep(cfg, log=None)[0]
    (g,) = build_grid(cfg).groups
    row = int(np.flatnonzero(g.values["train.steps"] == 300)[0])
    alone = run_group(g.config, g.subset(np.array([row] * 3)), log=None)
    m = swept.sel(steps=300)
    np.testing.assert_array_equal(m.train_loss.values, alone.train_loss[0])
    np.testing.assert_array_equal(m.test_loss.values, alone.test_loss[0])
    np.testing.assert_array_equal(m.final_test_loss.values, alone.final_test_loss[0])
    assert alone.params and all(f"param.{k}" in swept for k in alone.params)
    for k, v in alone.params.items():
        np.testing.assert_array_equal(m[f"param.{k}"].values, v[0], k)

    one = _run([300], train)          # a run of its own: its own evaluation schedule, a member axis of one
    common = np.intersect1d(swept.eval_step.values, one.eval_step.values)
    assert {0, 1, 300} <= set(common.tolist())
    for k in CURVES:
        np.testing.assert_allclose(m[k].sel(eval_step=common).values, one[k].sel(steps=300, eval_step=common).values,
                                   rtol=1e-5, err_msg=k)

    # The lengths really differ: at step 300 the 500-step member has (for a decaying schedule) another lr.
    at = dict(eval_step=300)
    if schedule != "constant":
        assert swept.test_loss.sel(steps=500, **at) != m.test_loss.sel(**at)
    else:
        assert swept.test_loss.sel(steps=500, **at) == m.test_loss.sel(**at)


def test_evaluations_and_final_loss_per_member():
    """One shared eval_step axis: 0, log-spaced steps up to the longest run, and every run's last step; each
    member has values up to its own last step, NaN after, and final_test_loss is the value at its last step."""
    ds = _run(STEPS, SCHEDULES["cosine"])
    np.testing.assert_array_equal(ds.eval_step.values, eval_steps(STEPS, 6))
    assert set(STEPS) | {0} <= set(ds.eval_step.values.tolist())
    for s in STEPS:
        for k in CURVES:
            curve = ds[k].sel(steps=s)
            assert np.isfinite(curve.where(ds.eval_step <= s, drop=True)).all(), (s, k)
            assert np.isnan(curve.where(ds.eval_step > s, drop=True)).all(), (s, k)
        assert ds.final_test_loss.sel(steps=s) == ds.test_loss.sel(steps=s, eval_step=s)
    assert np.unique(ds.final_test_loss.values).size == len(STEPS)


def test_stopped_member_is_frozen():
    """After its last step a member's whole state (parameters, optimizer state, flags, curves) stays as it was
    while the longer member trains on."""
    cfg = small_config({"train.steps": [30, 90]}, model=MODEL, train={"chunk_steps": 31, "schedule": "cosine"},
                       run=ONE_PROGRAM)
    g = build_grid(cfg).groups[0]
    seen = {}
    with precision(g.config):
        program = GroupProgram(g.config, padded_sizes(g.sizes()))
        members = program.members(g, np.arange(g.size))

        def after(step, total, elapsed, state):
            seen[step] = jax.tree.map(np.array, state)     # host copies (the state's buffers are donated)

        program.train(program.init(members), members, g.longest, 0, after)
    assert sorted(seen) == [31, 62, 91]
    short, final = (jax.tree.map(lambda x: x[0], seen[s]) for s in (31, 91))
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(short)[0], jax.tree.leaves(final)):
        np.testing.assert_array_equal(a, b, jax.tree_util.keystr(path))
    assert not np.array_equal(seen[31]["params"]["w_in"][1], seen[91]["params"]["w_in"][1])  # the other went on
    assert int(seen[91]["opt"][0].count[0]) == 30 and int(seen[91]["opt"][0].count[1]) == 90


def test_bucketing_counts_steps():
    """A member that has stopped still costs its steps: steps [10, 1000] at one width are two buckets under the
    default max_padding_waste 1.5 (joined, the waste is 2 x 1000 / 1010), one with 0; results are equal."""
    sweep = {"train.steps": [10, 1000]}
    split = build_grid(small_config(sweep, model=MODEL)).groups
    joined = build_grid(small_config(sweep, model=MODEL, run=ONE_PROGRAM)).groups
    assert sorted(g.longest for g in split) == [10, 1000] and len(joined) == 1
    assert [g.padding_waste() for g in split] == [1.0, 1.0]
    assert joined[0].padding_waste() == pytest.approx(2 * 1000 / 1010)
    assert len(build_grid(small_config({"train.steps": [100, 120]}, model=MODEL)).groups) == 1  # 1.09: joined
    # widths and steps together: the waste of each bucket stays within the limit
    mixed = build_grid(small_config({"train.steps": [10, 100, 1000], "model.width": [4, 16, 64]})).groups
    assert all(g.padding_waste() <= 1.5 for g in mixed) and len(mixed) > 1

    log = io.StringIO()
    a = run_sweep(small_config(sweep, model=MODEL), log=log)[0]
    b = run(sweep, model=MODEL, run=ONE_PROGRAM)
    for k in CURVES + ("final_test_loss",):     # member axes of 1 and 2: equal to float32 rounding (XLA on CPU)
        np.testing.assert_allclose(a[k].values, b[k].values, rtol=1e-5, err_msg=k)
        np.testing.assert_array_equal(np.isnan(a[k].values), np.isnan(b[k].values), k)
    for k in ("tokens", "train_flops"):
        np.testing.assert_array_equal(a[k].values, b[k].values, k)
    assert "step 10/10" in log.getvalue() and "step 1000/1000" in log.getvalue()   # each bucket's longest run
    assert a.tokens.sel(steps=1000) == 100 * a.tokens.sel(steps=10)


def test_counts_use_each_members_steps():
    cfg = small_config({"train.steps": [10, 1000], "model.width": [4, 8]}, run=ONE_PROGRAM)
    grid = build_grid(cfg)
    c = counts(grid)
    np.testing.assert_array_equal(c["tokens"], [[tokens_per_step(cfg) * 10] * 2, [tokens_per_step(cfg) * 1000] * 2])
    for k in ("train_flops", "train_flops_6nd"):
        np.testing.assert_allclose(c[k][1] / c[k][0], 100.0, rtol=1e-12, err_msg=k)
    np.testing.assert_array_equal(c["train_flops"], 3.0 * c["forward_flops_per_token"] * c["tokens"])
    np.testing.assert_array_equal(c["n_params"][0], c["n_params"][1])


def _train(**keys):
    return build_config({"train": keys}).train


def test_wsd_shape():
    """wsd: lr constant until (1 - decay_fraction) x steps, then linear to final_lr_fraction x lr at the last step."""
    cfg = _train(schedule="wsd", decay_fraction=0.2, final_lr_fraction=0.1)
    v = np.asarray(jax.vmap(schedule_shape(cfg, 100))(jnp.arange(121)))
    np.testing.assert_array_equal(v[:81], 1.0)
    np.testing.assert_allclose(v[80:101], np.linspace(1.0, 0.1, 21), rtol=1e-6)
    np.testing.assert_allclose(v[100:], 0.1, rtol=1e-6)
    # per member (traced steps under vmap): each schedule spans its own run
    both = np.asarray(jax.vmap(lambda n: jax.vmap(schedule_shape(cfg, n))(jnp.arange(201)))(jnp.array([100, 200])))
    np.testing.assert_array_equal(both[0], np.concatenate([v, np.full(80, v[-1])]))
    np.testing.assert_array_equal(both[1][:161], 1.0)
    np.testing.assert_allclose(both[1][200], 0.1, rtol=1e-6)
    # the optimizer applies it: plain SGD's step is lr x shape
    sgd = _train(optimizer="sgd", schedule="wsd", decay_fraction=0.5, final_lr_fraction=0.2)
    tx = make_optimizer(sgd, jnp.float32(2.0), steps=jnp.int32(10))
    params, state, lrs = jnp.zeros(()), None, []
    state = tx.init(params)
    for _ in range(10):
        update, state = tx.update(jnp.ones(()), state, params)
        lrs.append(-float(update))
    np.testing.assert_allclose(lrs, 2.0 * np.array([1, 1, 1, 1, 1, 1, 0.84, 0.68, 0.52, 0.36]), rtol=1e-6)


@pytest.mark.parametrize("name, ours, theirs", [
    ("cosine", dict(schedule="cosine", final_lr_fraction=0.1), optax.cosine_decay_schedule(1.0, 100, alpha=0.1)),
    ("linear", dict(schedule="linear", final_lr_fraction=0.1), optax.linear_schedule(1.0, 0.1, 100)),
    ("warmup_cosine", dict(schedule="warmup_cosine", warmup_fraction=0.1, final_lr_fraction=0.1),
     optax.warmup_cosine_decay_schedule(0.0, 1.0, 10, 100, end_value=0.1)),
])
def test_other_schedules_keep_their_shape(name, ours, theirs):
    """The per-member schedules are optax's for a fixed number of steps."""
    t = jnp.arange(121)
    np.testing.assert_allclose(jax.vmap(schedule_shape(_train(**ours), 100))(t), jax.vmap(theirs)(t), rtol=1e-6,
                               atol=1e-7, err_msg=name)


def test_chunks_and_resume_bitwise(tmp_path):
    """Chunk size and a stop-and-resume (after the short member has finished) change no number."""
    from sweepjax.engine.checkpoint import Interrupted, Store
    cfg = small_config({"train.steps": [20, 70], "seed": [0, 1]}, model=MODEL,
                       train={"chunk_steps": 9, "schedule": "wsd"}, run=ONE_PROGRAM)
    ref = run_sweep(cfg, log=None)[0]
    other = run_sweep(cfg.with_values({"train.chunk_steps": 100}), log=None)[0]
    calls = []

    def stop():
        calls.append(1)
        return len(calls) >= 3     # at step 27: the 20-step members are done, the 70-step ones are not

    store = Store(tmp_path, every_minutes=0)
    with pytest.raises(Interrupted, match="stopped at step 27"):
        run_sweep(cfg, log=None, store=store, should_stop=stop)
    store.close()
    store = Store(tmp_path, every_minutes=0)
    resumed = run_sweep(cfg, log=None, store=store)[0]
    store.close()
    for ds in (other, resumed):
        for k in CURVES + ("final_test_loss", "diverged_step"):
            np.testing.assert_array_equal(ds[k].values, ref[k].values, k)


@pytest.mark.parametrize("raw, message", [
    ({"train": {"decay_fraction": 0.5}},
     "train.decay_fraction = 0.5: has no effect with train.schedule = 'constant' (only with "),
    ({"train": {"schedule": "cosine"}, "sweep": {"train.decay_fraction": [0.1, 0.2]}},
     "sweep.train.decay_fraction = [0.1, 0.2]: has no effect with train.schedule = 'cosine'"),
    ({"train": {"schedule": "wsd", "decay_fraction": 0.0}}, "train.decay_fraction = 0.0: must be > 0"),
    ({"train": {"schedule": "wsd", "decay_fraction": 1.5}}, "train.decay_fraction = 1.5: must be <= 1"),
    ({"train": {"schedule": "wsdd"}}, "train.schedule = 'wsdd': allowed: constant, cosine, warmup_cosine, linear, wsd"),
    ({"task": {"train_data": "grid"}, "train": {"optimizer": "lbfgs", "schedule": "wsd"}},
     "train.schedule = 'wsd': has no effect with train.optimizer = 'lbfgs'"),
])
def test_refusals(raw, message):
    with pytest.raises(ConfigError) as err:
        build_config(raw)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_wsd_keys_accepted():
    cfg = build_config({"train": {"schedule": "wsd", "decay_fraction": 0.1, "final_lr_fraction": 0.01},
                        "sweep": {"train.steps": [10, 20]}})
    assert cfg.train.decay_fraction == 0.1 and cfg.sweep["train.steps"] == [10, 20]


def test_step_buckets_of_one_shape_compile_once():
    """Buckets that differ only in step counts reuse one compiled program (DESIGN invariant 4): steps
    [10, 100] split into two buckets of the same shape and member count compile once, and the results
    equal the unbucketed run. (A bucket with another member count needs its own compile.)"""
    from sweepjax.config import build_config
    from sweepjax.run import run_sweep
    raw = {"task": {"batch_size": 16, "test_size": 11}, "model": {"width": 8}, "eval": {"points": 3},
           "sweep": {"train.steps": [10, 100], "seed": [0, 1]}}
    split, man = run_sweep(build_config(raw), log=None)
    compiles = man["compile_seconds_per_group"]
    assert len(compiles) == 2, compiles                       # the ladder was split into buckets ...
    assert sum(c > 0.05 for c in compiles) == 1, compiles     # ... which compiled one program
    joined, _ = run_sweep(build_config({**raw, "run": {"max_padding_waste": 0}}), log=None)
    np.testing.assert_allclose(split.final_test_loss.values, joined.final_test_loss.values, rtol=1e-5)
