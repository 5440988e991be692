"""Engine invariants (DESIGN.md 1-5) on small sweeps, CPU."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import run

CURVES = ("train_loss", "test_loss")


def _member(ds, **sel):
    return {k: ds[k].sel(**sel).values for k in CURVES}


def _rel(a, b):
    return np.max(np.abs(a - b) / np.abs(a))


PLAIN, RESIDUAL = {"residual": False}, {"residual": True}


@pytest.mark.parametrize("model, member, sweep", [
    # the reviewed defect: a depth-1 plain member next to deeper ones (flax creation-order keys)
    ({**PLAIN, "activation": "tanh"}, dict(width=6, depth=1), {"model.width": [6], "model.depth": [1, 3]}),
    ({**PLAIN, "activation": "silu"}, dict(width=3, depth=2), {"model.width": [3, 96], "model.depth": [2, 7]}),
    ({**PLAIN, "activation": "relu2", "init": "normal"}, dict(width=1, depth=1),
     {"model.width": [1, 8], "model.depth": [1, 2]}),
    # width 1 without a norm: RMSNorm of one unit is sign(h), which turns rounding into jumps
    ({**RESIDUAL, "activation": "gelu", "depth_scaling": "inv_sqrt"},
     dict(width=1, depth=1, mlp_ratio=1), {"model.width": [1, 8], "model.depth": [1, 3], "model.mlp_ratio": [1, 4]}),
    ({**RESIDUAL, "activation": "tanh", "norm": "rmsnorm"}, dict(width=3, depth=2, mlp_ratio=4),
     {"model.width": [3, 16], "model.depth": [2, 5], "model.mlp_ratio": [1, 4]}),
], ids=["plain-depth1-next-to-3", "plain-w3d2-in-96x7", "plain-width1", "residual-w1-d1-ratio1",
        "residual-ratio4-next-to-1"])
def test_padding_invariance(model, member, sweep):
    """A member trained inside a padded sweep (one program, no buckets) matches it trained alone, over
    every MLP size axis and at its edges (width 1, depth 1, mlp_ratio 1 next to 4)."""
    alone = run({f"model.{k}": [v] for k, v in member.items()}, model=model, run={"max_padding_waste": 0})
    padded = run(sweep, model=model, run={"max_padding_waste": 0})
    a, b = _member(alone, **member), _member(padded, **member)
    for k in CURVES:
        assert np.all(np.isfinite(a[k]))
        assert _rel(a[k], b[k]) < 1e-5, k
    # The sweep really trained something different at the other sizes.
    assert np.unique(padded.final_test_loss.values).size == padded.final_test_loss.size


def test_member_independence_order_extra_members_and_chunks():
    """Reordering axes, adding members and chunking the member axis leave each member unchanged."""
    base = run({"seed": [0, 1], "model.width": [4, 16]})
    reordered = run({"model.width": [16, 4], "seed": [1, 0]})
    more = run({"seed": [0, 1, 2], "model.width": [4, 8, 16], "train.lr": [1e-2, 3e-3]})
    chunked = run({"seed": [0, 1], "model.width": [4, 16]}, run={"member_chunk": 3})
    for seed in (0, 1):
        for width in (4, 16):
            ref = _member(base, seed=seed, width=width)
            for other in (_member(reordered, seed=seed, width=width),
                          _member(more, seed=seed, width=width, lr=1e-2),
                          _member(chunked, seed=seed, width=width)):
                for k in CURVES:
                    assert _rel(ref[k], other[k]) < 1e-5, (seed, width, k)


def test_bucketing_leaves_results_unchanged():
    """Size buckets (several programs) give the same member results as one padded program."""
    sweep = {"seed": [0, 1], "model.width": [2, 4, 16, 64]}
    one = run(sweep, run={"max_padding_waste": 0})
    bucketed = run(sweep, run={"max_padding_waste": 1.5})
    for k in CURVES:
        np.testing.assert_allclose(one[k].values, bucketed[k].values, rtol=1e-5)


def test_determinism():
    """Same config, same numbers, bit for bit."""
    sweep = {"seed": [0, 1], "model.width": [4, 8]}
    a, b = run(sweep), run(sweep)
    for k in CURVES + ("final_test_loss",):
        np.testing.assert_array_equal(a[k].values, b[k].values)


def test_seeds_and_data_streams():
    """Different init seeds differ; a shared data seed gives common random numbers."""
    ds = run({"seed": [0, 1], "data_seed": [-1, 5]}, model={"width": 8})
    own = ds.sel(data_seed=-1).final_test_loss.values
    assert own[0] != own[1]
    # With data_seed = 5 both inits see the same batches; with -1 each follows its init seed, and
    # seed 0 with data_seed -1 uses stream 0, which differs from stream 5.
    assert ds.final_test_loss.sel(seed=0, data_seed=-1) != ds.final_test_loss.sel(seed=0, data_seed=5)


def test_divergence_flagged_frozen_and_isolated():
    """An absurd lr diverges, is flagged with NaN losses; the other members equal a run without it."""
    with_bad = run({"train.lr": [1e-2, 1e6], "seed": [0, 1]}, model={"width": 8})
    without = run({"train.lr": [1e-2], "seed": [0, 1]}, model={"width": 8})
    assert with_bad.diverged.sel(lr=1e6).all()
    assert not with_bad.diverged.sel(lr=1e-2).any()
    assert np.isnan(with_bad.final_test_loss.sel(lr=1e6)).all()
    assert (with_bad.diverged_step.sel(lr=1e6) >= 0).all()
    for k in CURVES:
        np.testing.assert_array_equal(with_bad[k].sel(lr=1e-2).values, without[k].sel(lr=1e-2).values)


@pytest.mark.parametrize("train", [
    {"optimizer": "sgd", "momentum": 0.9, "schedule": "linear", "final_lr_fraction": 0.1},
    {"optimizer": "adamw", "weight_decay": 1e-2, "schedule": "warmup_cosine", "warmup_fraction": 0.1},
    {"optimizer": "adam", "schedule": "cosine", "precision": "float64"},
], ids=["sgd-linear", "adamw-warmup-cosine", "adam-cosine-f64"])
def test_optimizers_and_schedules_learn(train):
    """Every optimizer/schedule lowers the test loss of x^2 regression."""
    ds = run({"seed": [0]}, model={"width": 16}, train={"steps": 150, **train})
    curve = ds.test_loss.values.ravel()
    assert np.all(np.isfinite(curve)) and curve[-1] < 0.5 * curve[0]
    if train.get("precision") == "float64":
        assert ds.test_loss.dtype == np.float64


def test_lbfgs_full_batch_converges_far():
    """Full-batch L-BFGS on the grid drives the loss of a small SiLU net far below Adam's start."""
    ds = run({"seed": [0]}, model={"width": 4}, task={"train_data": "grid", "grid_size": 201, "test_size": 200},
             train={"optimizer": "lbfgs", "steps": 200, "precision": "float64"})
    curve = ds.test_loss.values.ravel()
    assert curve[-1] < 1e-3 * curve[0]


def test_memory_plan_splits_members_without_changing_results():
    """A device limit that fits 2 members makes chunks of 2; results equal the one-chunk run."""
    from conftest import small_config
    from sweepjax.engine.memory import member_bytes, plan_member_chunk
    sweep = {"seed": [0, 1, 2], "model.width": [16]}
    cfg = small_config(sweep)
    padded = {"width": 16, "depth": 1, "mlp_hidden": 16}
    per_member = member_bytes(cfg, padded)
    limit_gb = 2.5 * per_member / cfg.run.memory_fraction / 2**30
    assert plan_member_chunk(small_config(sweep, run={"memory_limit_gb": limit_gb}), 3, padded) == 2
    one = run(sweep)
    split = run(sweep, run={"memory_limit_gb": limit_gb})
    for k in CURVES:
        np.testing.assert_array_equal(one[k].values, split[k].values)


SHARDED_SCRIPT = """
import sys, numpy as np, jax
sys.path.insert(0, {tests!r})
from conftest import run
ds = run({{"seed": [0, 1, 2], "model.width": [4, 16], "train.lr": [1e-2, 1e6]}})
assert jax.device_count() == 4, jax.device_count()
np.save({out!r}, ds.test_loss.values)
"""


def test_sharding_over_four_devices_matches_one(tmp_path):
    """The member axis sharded over 4 (forced host) devices gives the single-device results
    (to float32 rounding: XLA may vectorize a 2-member shard differently from a 12-member batch),
    divergence flags included."""
    import os
    import subprocess
    import sys
    out = tmp_path / "four.npy"
    script = SHARDED_SCRIPT.format(tests=os.path.dirname(__file__), out=str(out))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    one = run({"seed": [0, 1, 2], "model.width": [4, 16], "train.lr": [1e-2, 1e6]}).test_loss.values
    four = np.load(out)
    np.testing.assert_array_equal(np.isnan(one), np.isnan(four))
    np.testing.assert_allclose(four, one, rtol=1e-5)


LBFGS_FLAT_SCRIPT = """
import sys, numpy as np
sys.path.insert(0, {tests!r})
from conftest import run
ds = run({{"seed": [4, 5, 6, 7]}}, model={{"width": 2, "activation": "relu"}},
         task={{"train_data": "grid", "grid_size": 201, "test_size": 200}},
         train={{"optimizer": "lbfgs", "steps": 200, "chunk_steps": 50, "precision": "float64"}}, eval={{"points": 10}})
np.save({out!r}, ds.train_loss.values)
np.save({steps!r}, ds.converged_step.values)
np.save({evals!r}, ds.eval_step.values)
"""


def test_lbfgs_finishes_under_vmap_when_a_member_is_flat(tmp_path):
    """Width-2 ReLU nets in float64 on a 201-point grid, seeds 4-7 together: with optax's default zoom
    line search seed 5 stops advancing (its objective is flat at rounding level) and the vmapped while
    loop never exits. The bounded backtracking search finishes; a failed search drops its step and
    restarts the memory, and a member whose restarted search also fails is frozen as converged: its
    loss never rises, stays constant once it stops improving, and ``converged_step`` says when."""
    import os
    import subprocess
    import sys
    out, steps_file, evals_file = tmp_path / "lbfgs.npy", tmp_path / "steps.npy", tmp_path / "evals.npy"
    script = LBFGS_FLAT_SCRIPT.format(tests=os.path.dirname(__file__), out=str(out), steps=str(steps_file),
                                      evals=str(evals_file))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    curves, steps, evals = np.load(out), np.load(steps_file), np.load(evals_file)
    assert np.all(np.isfinite(curves))
    assert np.all(np.diff(curves, axis=1) <= 0)          # a line search only accepts decreases
    assert np.all(curves[:, -1] < 0.6 * curves[:, 0])    # and every member learned (width-2 ReLU: bad tickets too)
    assert np.all((steps >= 0) & (steps < 200)), steps    # all four stop improving (ReLU width 2: few steps)
    for curve, frozen in zip(curves, steps):               # and sit still from the step they were frozen
        assert np.all(curve[evals > frozen] == curve[-1]), (frozen, curve)


def test_adam_hyperparameters_reach_the_optimizer():
    """train.adam_b1/b2/eps change the curves (they were validated, saved and ignored)."""
    base = run({"seed": [0]}, model={"width": 8})
    for key, value in (("adam_b1", 0.0), ("adam_b2", 0.5), ("adam_eps", 0.1)):
        other = run({"seed": [0]}, model={"width": 8}, train={key: value})
        assert not np.allclose(other.train_loss.values, base.train_loss.values), key


def test_relative_divergence_flags_a_blow_up_below_the_absolute_limit():
    """A loss of ~1e-4 that grows 10,000x is flagged at once by train.divergence_factor (default 1e4),
    long before the absolute 1e10 limit (or non-finite values) would catch it."""
    sweep = {"train.lr": [1e-2, 3.0]}
    kw = dict(model={"width": 8, "init": "normal"}, task={"low": -0.1, "high": 0.1}, eval={"points": 10})
    rel = run(sweep, train={"optimizer": "sgd"}, **kw)
    absolute = run(sweep, train={"optimizer": "sgd", "divergence_factor": 1e300}, **kw)
    assert not rel.diverged.sel(lr=1e-2) and rel.diverged.sel(lr=3.0)
    step_rel, step_abs = int(rel.diverged_step.sel(lr=3.0)), int(absolute.diverged_step.sel(lr=3.0))
    assert absolute.diverged.sel(lr=3.0) and step_rel < step_abs
    off = run(sweep, train={"optimizer": "sgd", "divergence_factor": 0.0}, **kw)  # 0 switches the rule off
    np.testing.assert_array_equal(off.diverged_step.values, absolute.diverged_step.values)
    # at the step where it was flagged the loss was finite and far below the absolute limit
    curve = absolute.train_loss.sel(lr=3.0)
    assert np.isfinite(curve.sel(eval_step=step_rel)) and curve.sel(eval_step=step_rel) < 1e10
    np.testing.assert_array_equal(rel.train_loss.sel(lr=1e-2), absolute.train_loss.sel(lr=1e-2))


def test_diverged_members_have_nan_predictions_and_parameters():
    """A diverged member's saved predictions and final parameters are NaN (its frozen parameters are its
    last finite ones, which the ensemble and mirror analyses must not use); its initial ones are kept."""
    ds = run({"train.lr": [1e-2, 1e6]}, model={"width": 8}, eval={"save_predictions": True, "save_params": True})
    assert ds.diverged.sel(lr=1e6) and not ds.diverged.sel(lr=1e-2)
    assert np.isnan(ds.predictions.sel(lr=1e6)).all() and np.isfinite(ds.predictions.sel(lr=1e-2)).all()
    for name in ("w_in", "b_in", "w_out", "b_out"):
        assert np.isnan(ds[f"param.{name}"].sel(lr=1e6)).all(), name
        assert np.isfinite(ds[f"param.{name}"].sel(lr=1e-2)).all(), name
        assert np.isfinite(ds[f"param.init.{name}"].sel(lr=1e6)).all(), name


@pytest.mark.parametrize("family, decayed, kept", [
    ("mlp", ("w_in", "w_out", "w1", "w2"), ("b_in", "b_out", "b1")),
    ("transformer", ("wq", "wo", "w1", "w2", "readout"), ("embed", "pos_embed", "ln1_gain", "ln1_bias", "ln_f_gain")),
])
def test_adamw_decays_matrices_only_unless_decay_all(family, decayed, kept):
    """With a zero gradient AdamW's update is pure decay: weight matrices shrink, biases, norm gains and
    embeddings do not, unless train.decay_all."""
    import jax
    import jax.numpy as jnp
    from conftest import small_config
    from sweepjax.engine.optim import make_optimizer
    from sweepjax.models import FAMILIES
    names = decayed + kept
    params = {n: jnp.ones((2, 3)) for n in names}
    for decay_all in (False, True):
        cfg = small_config({}, train={"optimizer": "adamw", "weight_decay": 0.5, "decay_all": decay_all}).train
        tx = make_optimizer(cfg, jnp.float32(0.1), FAMILIES[family].DECAYED)
        zero = jax.tree.map(jnp.zeros_like, params)
        updates, _ = tx.update(zero, tx.init(params), params)
        for n in names:
            moved = bool(jnp.any(updates[n] != 0))
            assert moved == (decay_all or n in decayed), (n, decay_all)


def test_lr_depth_scaling_is_lr_times_c_over_sqrt_true_depth():
    """train.lr_depth_scaling = 2 with lr 1e-2: the depth-1 member trains at 2e-2 and the depth-4 member at
    1e-2, exactly as members given those learning rates directly (residual MLPs, one padded program)."""
    model = {"residual": True, "width": 8}
    scaled = run({"model.depth": [1, 4]}, model=model, train={"lr_depth_scaling": 2.0})
    for depth, lr in ((1, 2e-2), (4, 1e-2)):
        direct = run({"model.depth": [1, 4]}, model=model, train={"lr": lr})
        for k in CURVES:
            np.testing.assert_allclose(scaled[k].sel(depth=depth), direct[k].sel(depth=depth), rtol=1e-6, err_msg=k)
    off = run({"model.depth": [1, 4]}, model=model)
    assert not np.allclose(off.train_loss.sel(depth=1), scaled.train_loss.sel(depth=1))
