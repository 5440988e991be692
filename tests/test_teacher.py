"""Task teacher and the inverse-depth study's engine parts (issue 12): the teacher generator, the KL and
MSE losses, per-member temperature, padded students, zero-init students, shared teacher batches and the
layer measures (eval.layers)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_alone
from sweepjax.analysis.depth import LAYER_METRICS, middle
from sweepjax.config import ConfigError, build_config
from sweepjax.run import run_sweep
from sweepjax.tasks.teacher import Teacher, rms_norm, teacher_params

TASK = {"name": "teacher", "teacher_depth": 6, "teacher_width": 8, "teacher_hidden": 16, "n_classes": 5,
        "batch_size": 32, "test_size": 64, "data_seed": 0}
STUDENT = {"family": "mlp", "residual": True, "width": 8, "mlp_ratio": 2, "activation": "relu2", "norm": "rmsnorm",
           "input": "none", "head": "linear", "zero_init": ["proj", "head"]}


def task_keys(**kw) -> dict:
    """The test task's keys; the MSE target has no classes (n_classes would be refused)."""
    out = {**TASK, **kw}
    if out.get("target") == "mse":
        out.pop("n_classes")
    return out


def keys(**kw):
    return build_config({"task": task_keys(**kw)}, combinations=False).task


def config(sweep: dict, task: dict | None = None, model: dict | None = None, steps: int = 30, **sections):
    raw = {"task": task_keys(**(task or {})), "model": {**STUDENT, **(model or {})},
           "train": {"steps": steps, "chunk_steps": steps, "lr": 3e-3}, "eval": {"points": 3}, "sweep": sweep}
    for key in sweep:   # the sweep sets these: a single value beside the axis would be refused
        section, _, name = key.partition(".")
        raw.get(section, {}).pop(name, None)
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return build_config(raw)


def test_teacher_layers_independent_or_tied_scaled_and_fixed_by_seed():
    ind, tied = teacher_params(keys()), teacher_params(keys(teacher="tied"))
    for k in ("w1", "b1", "w2"):
        assert ind[k].shape[0] == 6 and tied[k].shape[0] == 6
        assert all(np.array_equal(tied[k][0], tied[k][i]) for i in range(6)), k
        assert not np.array_equal(ind[k][0], ind[k][1]), k
    # U(+-1/sqrt(fan_in)), the output projections times 1/sqrt(teacher depth) (before tying)
    for p in (ind, tied):
        bound = np.abs(np.asarray(p["w2"])).max() * np.sqrt(16) * np.sqrt(6)
        assert 0.8 < bound <= 1.0, bound
        assert 0.8 < np.abs(np.asarray(p["w1"])).max() * np.sqrt(8) <= 1.0
        assert p["head"].shape == (8, 5)
    again, other = teacher_params(keys()), teacher_params(keys(teacher_seed=1))
    assert all(np.array_equal(ind[k], again[k]) for k in ind)
    assert not np.array_equal(ind["w1"], other["w1"])


def test_teacher_forward_is_the_written_network():
    t = Teacher(keys())
    x = jax.random.normal(jax.random.key(3), (4, 8))
    p = {k: np.asarray(v, np.float64) for k, v in t.params.items()}
    rms = lambda h: h / np.sqrt(np.mean(h**2, -1, keepdims=True) + 1e-6)
    h = rms(np.asarray(x, np.float64))
    for i in range(6):
        h = h + np.maximum(rms(h) @ p["w1"][i] + p["b1"][i], 0) ** 2 @ p["w2"][i]
    np.testing.assert_allclose(np.asarray(t.targets(x, jnp.float32)), rms(h) @ p["head"], rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(np.asarray(Teacher(keys(target="mse")).targets(x, jnp.float32)), rms(h),
                               rtol=2e-5, atol=2e-6)


def test_kl_loss_equals_a_direct_computation():
    t = Teacher(keys())
    y = jax.random.normal(jax.random.key(0), (3, 5)) * 3
    out = jax.random.normal(jax.random.key(1), (3, 5))
    for temp in (0.05, 1.0):
        loss = np.asarray(t.losses(out, y, {"temperature": jnp.float32(temp)}))
        yt = np.asarray(y, np.float64) / temp
        p = np.exp(yt - yt.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        o = np.asarray(out, np.float64)
        log_q = o - o.max(-1, keepdims=True) - np.log(np.exp(o - o.max(-1, keepdims=True)).sum(-1, keepdims=True))
        np.testing.assert_allclose(loss, (p * (np.log(p) - log_q)).sum(-1), rtol=1e-5)


def test_zero_init_student_starts_as_the_identity():
    """With zero projections the student's stream stays RMSNorm(x): at step 0 the MSE student's loss is that
    of the normed input against the teacher's final state, and a KL student with a zero head predicts uniform."""
    for target in ("mse", "kl"):
        model = {"head": "none", "zero_init": ["proj"]} if target == "mse" else {}
        ds = run_sweep(config({"model.depth": [2, 3]}, {"target": target}, model, steps=2), log=None)[0]
        t = Teacher(keys(target=target))
        x, y = (np.asarray(a, np.float64) for a in t.test_set(jnp.float32))
        if target == "mse":
            expect = np.mean((np.asarray(rms_norm(jnp.asarray(x)), np.float64) - y) ** 2)
        else:
            p = np.exp(y - y.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            expect = np.mean((p * (np.log(p) + np.log(5))).sum(-1))
        np.testing.assert_allclose(ds.test_loss.isel(eval_step=0).values, expect, rtol=1e-5)


def test_temperature_inside_one_program_equals_it_alone():
    cfg = config({"task.temperature": [0.1, 1.0], "model.depth": [1, 3]})
    swept = run_sweep(cfg, log=None)[0]
    alone = run_alone(cfg, {"task.temperature": 0.1, "model.depth": 1}, {"task.temperature": 0.1, "model.depth": 3})
    m = swept.sel(temperature=0.1, depth=1)
    np.testing.assert_array_equal(m.test_loss.values, alone.test_loss[0])
    assert not np.array_equal(m.test_loss.values, swept.test_loss.sel(temperature=1.0, depth=1).values)


@pytest.mark.parametrize("depths", [[1, 4], [6, 48]])
def test_padded_students_equal_solo_students(depths):
    """Invariant 1 for the study's students (no input layer, head without bias, zero-init): a student
    padded next to a deeper one trains as it does alone (its own one-depth group)."""
    cfg = config({"model.depth": depths, "seed": [0, 1]}, steps=6, run={"max_padding_waste": 0})
    swept = run_sweep(cfg, log=None)[0]
    for depth in depths:
        solo = run_sweep(config({"seed": [0, 1]}, model={"depth": depth}, steps=6), log=None)[0]
        np.testing.assert_allclose(swept.test_loss.sel(depth=depth).values, solo.test_loss.values, rtol=2e-5,
                                   err_msg=str(depth))


def test_shared_teacher_batches_equal_per_member_batches(monkeypatch):
    """Members share their data seed's batch (drawn once per step): the same numbers as each member drawing
    its own; two data seeds give two streams."""
    cfg = config({"seed": [0, 1], "model.depth": [1, 2]}, {"data_seed": -1})
    shared = run_sweep(cfg, log=None)[0]
    monkeypatch.setattr(Teacher, "SHARED_BATCH", False)
    own = run_sweep(cfg, log=None)[0]
    np.testing.assert_allclose(shared.train_loss.values, own.train_loss.values, rtol=1e-6)
    np.testing.assert_allclose(shared.test_loss.values, own.test_loss.values, rtol=1e-6)
    assert not np.allclose(shared.train_loss.sel(seed=0).values[..., 1:], shared.train_loss.sel(seed=1).values[..., 1:])


def test_layer_measures_of_the_engine():
    """eval.layers = "final": the stream's measures per member on a ``layer`` dim, NaN past each depth; with the
    whole test set as the probe batch the last layer's loss is the test loss; "every" adds eval_step."""
    cfg = config({"model.depth": [2, 4]}, {"test_size": 32}, eval={"layers": "final"})
    ds = run_sweep(cfg, log=None)[0]
    assert ds.sizes["layer"] == 5 and all(f"layer_{k}" in ds for k in LAYER_METRICS)
    for depth in (2, 4):
        m = ds.sel(depth=depth)
        assert np.isfinite(m.layer_norm.values[: depth + 1]).all() and np.isnan(m.layer_norm.values[depth + 1:]).all()
        assert np.isfinite(m.layer_update_angle.values[: depth - 1]).all()
        assert np.isnan(m.layer_update_angle.values[depth - 1:]).all()
        np.testing.assert_allclose(m.layer_loss.values[depth], m.final_test_loss.values, rtol=1e-5)
        np.testing.assert_allclose(m.layer_progress.values[[0, depth]], [0.0, 1.0], atol=1e-6)
        np.testing.assert_allclose(m.layer_end_angle.values[depth], 0.0, atol=2e-3)
    every = run_sweep(config({"model.depth": [2, 4]}, {"test_size": 32}, eval={"layers": "every"}), log=None)[0]
    assert every.layer_loss.dims == ("depth", "eval_step", "layer")
    np.testing.assert_allclose(every.layer_loss.isel(eval_step=-1).values, ds.layer_loss.values, rtol=1e-6)


def test_layer_metrics_on_constructed_states():
    from sweepjax.analysis.depth import layer_metrics
    e = np.eye(4, dtype=np.float32)
    # updates alternate between orthogonal directions: update angle pi/2; states along one line: step angle 0
    ortho = np.cumsum(np.stack([e[0] * 2, e[1], e[2], e[1], e[2]]), axis=0)[:, None, :]
    line = (np.arange(1, 6, dtype=np.float32)[:, None] * e[0])[:, None, :]
    m = np.asarray(layer_metrics(jnp.asarray(ortho), 4, None, layers=6))
    at = {k: m[i] for i, k in enumerate(LAYER_METRICS)}
    np.testing.assert_allclose(at["update_angle"][:3], np.pi / 2, atol=1e-6)
    assert np.isnan(at["update_angle"][3:]).all() and m.shape == (len(LAYER_METRICS), 7)
    np.testing.assert_allclose(at["norm"][:5], np.linalg.norm(ortho[:, 0], axis=1), rtol=1e-6)
    line_m = np.asarray(layer_metrics(jnp.asarray(line), 4))
    at = {k: line_m[i] for i, k in enumerate(LAYER_METRICS)}
    np.testing.assert_allclose(at["update_angle"][:3], 0.0, atol=1e-3)
    np.testing.assert_allclose(at["step_angle"][:4], 0.0, atol=1e-3)
    np.testing.assert_allclose(at["progress"], np.arange(5) / 4, atol=1e-6)
    # a member of depth 2 inside states padded to 4 layers: its measures stop at its own depth
    short = np.asarray(layer_metrics(jnp.asarray(line), 2))
    np.testing.assert_allclose(short[LAYER_METRICS.index("progress")][:3], [0, 0.5, 1], atol=1e-6)
    assert np.isnan(short[:, 3:]).all()
    assert list(middle(np.arange(8), 8)) == [2, 3, 4, 5] and list(middle(np.arange(2), 2)) == [0]


def test_teachers_update_angles_check_the_generator():
    """The generator's signature: independent layers make successive updates nearly orthogonal, tied layers
    make them nearly parallel (PAPERS.md: 1.567 vs 0.012 rad at depth 128)."""
    from sweepjax.analysis.depth import layer_metrics
    for kind, lo, hi in (("independent", 1.45, 1.70), ("tied", 0.0, 0.1)):
        t = Teacher(keys(teacher=kind, teacher_depth=64, teacher_width=32, teacher_hidden=128))
        x = jax.random.normal(jax.random.key(0), (256, 32))
        angle = np.asarray(layer_metrics(t.states(x), 64))[LAYER_METRICS.index("update_angle")]
        value = np.nanmean(middle(angle, 64))
        assert lo <= value <= hi, (kind, value)


def test_student_options_are_refused_where_they_cannot_work():
    with pytest.raises(ConfigError, match=r"^model.input = 'none' with model.width = 16: .*set model.width = 8$"):
        config({}, model={"width": 16})
    with pytest.raises(ConfigError, match=r"^model.zero_init = \['head', 'proj'\] with model.head = 'none'"):
        config({}, {"target": "mse"}, {"head": "none"})
    with pytest.raises(ConfigError, match=r"^model.head = 'none' with model.width = 8: .* size 5"):
        config({}, model={"head": "none", "zero_init": ["proj"]})
    with pytest.raises(ConfigError, match=r"^model.input = 'none': has no effect with model.residual = False"):
        config({}, model={"residual": False, "zero_init": ["head"], "norm": "none", "mlp_ratio": 1})


def test_on_cpu_and_set_can_drop_a_sweep_axis():
    raw = {"task": dict(TASK), "model": dict(STUDENT), "sweep": {"model.depth": [1, 2], "seed": [0, 1]},
           "on_cpu": {"sweep.seed": []}}
    assert list(build_config(raw, on_cpu=True).sweep) == ["model.depth"]
    assert set(build_config(raw).sweep) == {"model.depth", "train.seed"}
    with pytest.raises(ConfigError, match=r"^sweep.model.width = \[\]: drops a sweep axis, but the sweep has no axis"):
        build_config(raw, [("sweep.model.width", [])])


def test_teacher_weights_and_training_inputs_use_unrelated_keys():
    """With data_seed = teacher_seed the first training batches are not made from the teacher's keys (the
    teacher's key is folded into a domain no training step reaches)."""
    from scipy.stats import spearmanr
    t = Teacher(keys(teacher_seed=3))
    w = np.asarray(t.params["w1"]).ravel()[:256]      # a batch holds 32 x 8 inputs
    for step in range(4):
        x, _ = t.train_batch(jax.random.key(3), jnp.int32(step), {}, jnp.float32)
        r = spearmanr(np.asarray(x).ravel(), w)[0]
        assert abs(r) < 0.2, (step, r)


def test_student_reading_through_the_teachers_frozen_head():
    """student_head = "teacher" (the authors' long tied runs): the student's normed state goes through the
    teacher's head, both logits divided by T; a zero-init student starts at the normed input's loss."""
    kw = {"student_head": "teacher", "head_init": "normal"}
    t = Teacher(keys(**kw))
    head = np.asarray(t.params["head"], np.float64)
    assert abs(head.std() * np.sqrt(8) - 1) < 0.3     # N(0, 1/width)
    assert Teacher.model_io(keys(**kw)) == {"in_dim": 8, "out_dim": 8}
    out = np.asarray(jax.random.normal(jax.random.key(1), (3, 8)), np.float64)
    y = np.asarray(jax.random.normal(jax.random.key(2), (3, 5)), np.float64) * 2
    T = 0.3
    loss = np.asarray(t.losses(jnp.asarray(out, jnp.float32), jnp.asarray(y, jnp.float32), {"temperature": jnp.float32(T)}))
    log_softmax = lambda z: z - z.max(-1, keepdims=True) - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
    log_p, log_q = log_softmax(y / T), log_softmax(out @ head / T)
    np.testing.assert_allclose(loss, (np.exp(log_p) * (log_p - log_q)).sum(-1), rtol=1e-4)
    ds = run_sweep(config({"model.depth": [1, 2]}, kw, {"head": "none", "zero_init": ["proj"]}, steps=2), log=None)[0]
    x, yt = t.test_set(jnp.float32)
    expect = np.mean(np.asarray(t.losses(rms_norm(x), yt, {"temperature": jnp.float32(1.0)})))
    np.testing.assert_allclose(ds.test_loss.isel(eval_step=0).values, expect, rtol=1e-5)
    with pytest.raises(ConfigError, match=r"^task.student_head = 'teacher' with model.head = 'linear'"):
        config({}, kw)


def test_layer_measures_next_to_plain_groups_and_swept_task_sizes_are_checked():
    """eval.layers in a sweep over model.residual: the plain group holds NaN; a swept task size that an MLP
    without input layer cannot take is refused before anything runs."""
    ds = run_sweep(config({"model.residual": [True, False]}, model={"input": "affine", "head": "affine",
                                                                      "zero_init": []}, steps=3,
                          eval={"layers": "final"}), log=None)[0]
    assert np.isnan(ds.layer_norm.sel(residual=False)).all() and np.isfinite(ds.layer_norm.sel(residual=True)[:2]).all()
    with pytest.raises(ConfigError, match=r"^model.input = 'none' with model.width = 8: .* in every group"):
        config({"task.teacher_width": [8, 4]})


def test_every_evaluation_with_runs_of_different_lengths():
    """eval.layers = "every" with a swept train.steps: each member's measures are read at its own last step."""
    from sweepjax.analysis.depth import angle_summary, final_values
    ds = run_sweep(config({"train.steps": [4, 8], "model.depth": [3, 4]}, eval={"layers": "every"}), log=None)[0]
    final = final_values(ds.layer_update_angle)
    assert "eval_step" not in final.dims
    short = ds.layer_update_angle.sel(steps=4).sel(eval_step=4)
    np.testing.assert_array_equal(final.sel(steps=4).values, short.values)
    assert all(r["middle_update_angle"] is not None for r in angle_summary(ds))


def test_dropping_an_axis_resolves_its_alias():
    raw = {"task": dict(TASK), "model": dict(STUDENT), "sweep": {"model.depth": [1, 2], "seed": [0, 1]}}
    assert list(build_config(raw, [("sweep.train.seed", [])]).sweep) == ["model.depth"]


def test_mse_students_save_vector_predictions_for_ensembles():
    """eval.save_predictions with the MSE target keeps each student's outputs (x, output); their mean over
    all members scores as a direct computation; the depth study compares K shallow students with one deep."""
    from sweepjax.analysis.depth import depth_ensembles
    cfg = config({"model.depth": [1, 2], "seed": [0, 1]}, {"target": "mse"}, {"head": "none", "zero_init": ["proj"]},
                 eval={"save_predictions": True})
    ds = run_sweep(cfg, log=None)[0]
    assert ds.predictions.dims == ("depth", "seed", "x", "output") and ds.test_target.dims == ("x", "output")
    p = ds.predictions.sel(depth=1).values
    np.testing.assert_allclose(np.mean((p - ds.test_target.values) ** 2, axis=(1, 2)),
                               ds.final_test_loss.sel(depth=1).values, rtol=1e-4)   # the whole test set scores
    rows = {(r["depth"], r["K"]): r for r in depth_ensembles(ds)}
    mean = p.mean(0)
    np.testing.assert_allclose(rows[(1, 2)]["median"], np.mean((mean - ds.test_target.values) ** 2), rtol=1e-5)
    assert rows[(1, 2)]["matched"] == 2 and rows[(2, 2)]["matched"] is None
