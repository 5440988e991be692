"""The task plug-in protocol, exercised by a task defined here (one class and one registry line): its own
keys, a per-member number, vector inputs, a classification head with a loss in bits, extra records;
and the MLP family's zero_init (issue 11, parts 1-3)."""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import small_config
from sweepjax.config import ConfigError, TaskConfig, build_config
from sweepjax.engine.train import run_group
from sweepjax.grid import build_grid
from sweepjax.losses import cross_entropy
from sweepjax.run import run_sweep
from sweepjax.tasks import TASKS
from sweepjax.tasks.base import Task


@dataclass
class NoisyArgmaxKeys(TaskConfig):
    dim: int = 5               # input size
    classes: int = 3           # label = argmax of the first `classes` inputs
    flip: float = 0.0          # per member: probability that a training label is replaced by a uniform class


class NoisyArgmax(Task):
    """x ~ N(0, I_dim); label argmax(x[:classes]), flipped to a uniform class with probability ``flip``
    in training (never in the test set); cross-entropy in bits."""
    Keys = NoisyArgmaxKeys
    FAMILIES = ("mlp",)
    MEMBER_KEYS = ("task.flip",)
    MINIMUM = {"task.dim": (1, True), "task.classes": (2, True), "task.flip": (0, True)}
    BELOW = {"task.flip": 1.0}
    LOSS_UNIT = "bits"
    RECORDS = {"class_loss": ("label",)}

    @classmethod
    def check(cls, cfg):
        if cfg.task.classes > cfg.task.dim:
            raise ConfigError(f"task.classes = {cfg.task.classes} > task.dim = {cfg.task.dim}")

    @classmethod
    def model_io(cls, keys):
        return {"in_dim": keys.dim, "out_dim": keys.classes}

    def init_input(self, dtype):
        return jnp.zeros((1, self.cfg.dim), dtype)

    def _label(self, x):
        return jnp.argmax(x[..., : self.cfg.classes], axis=-1)

    def examples(self, keys, m, dtype):
        def one(key):
            kx, kf, kc = jax.random.split(key, 3)
            x = jax.random.normal(kx, (self.cfg.dim,), dtype)
            flip = jax.random.uniform(kf) < m["flip"]
            return x, jnp.where(flip, jax.random.randint(kc, (), 0, self.cfg.classes), self._label(x))
        return jax.vmap(one)(keys)

    def test_set(self, dtype):
        x = jax.random.normal(jax.random.key(123), (self.cfg.test_size, self.cfg.dim), dtype)
        return x, self._label(x)

    def losses(self, outputs, y, m):
        return cross_entropy(outputs, y, "bits")

    def record_shapes(self):
        return {"class_loss": (self.cfg.classes,)}

    def records(self, losses, predict, m):
        x, y = self.test_set(jnp.float32)
        loss = self.losses(predict(x), y, m)      # the model run again: the same as `losses`
        per = jax.ops.segment_sum(loss, y, self.cfg.classes) / jax.ops.segment_sum(jnp.ones_like(loss), y, self.cfg.classes)
        return {"class_loss": per}


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    monkeypatch.setitem(TASKS, "noisy-argmax", f"{__name__}:NoisyArgmax")


TASK = {"name": "noisy-argmax", "test_size": 256}


def test_task_keys_are_its_own():
    cfg = build_config({"task": {**TASK, "dim": 7}, "sweep": {"task.flip": [0.0, 0.5]}})
    assert cfg.task.dim == 7 and "task.flip" in cfg.schema.member_keys
    (group,) = build_grid(cfg).groups          # a per-member number: one program
    assert group.values["task.flip"].tolist() == [0.0, 0.5]
    for raw, message in [
        ({"task": {**TASK, "dimm": 7}}, "^unknown key 'task.dimm' for task 'noisy-argmax'; did you mean 'task.dim'\\?$"),
        ({"task": {**TASK, "flip": 1.0}}, "^task.flip = 1.0: must be < 1$"),
        ({"task": {**TASK, "classes": 9}}, "^task.classes = 9 > task.dim = 5$"),
        ({"task": {"dim": 3}}, "^unknown key 'task.dim' for task 'regression-1d'"),
        ({"task": TASK, "model": {"family": "transformer"}}, "^model.family = 'transformer' with task.name = "
                                                              "'noisy-argmax': this task trains the mlp family$"),
    ]:
        with pytest.raises(ConfigError, match=message):
            build_config(raw)


def _config(sweep, **sections):
    base = {"task": {**TASK, "batch_size": 32}, "model": {"width": 16}, "train": {"steps": 30, "chunk_steps": 30},
            "eval": {"points": 4}}
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    for key in sweep:       # the sweep sets it
        section, _, name = key.partition(".")
        base.get(section, {}).pop(name, None)
    return small_config(sweep, **base)


def test_classification_head_bits_and_records():
    """A zero head gives uniform logits at init: log2(classes) bits; the records are the member's own
    per-class test losses (their count-weighted mean is its test loss); the loss unit reaches the results."""
    ds = run_sweep(_config({"task.flip": [0.0, 0.6], "seed": [0, 1]}, model={"zero_init": ["head"]}), log=None)[0]
    np.testing.assert_allclose(ds.test_loss.sel(eval_step=0).values, np.log2(3), rtol=1e-6)
    assert ds.test_loss.attrs["units"] == "bits" and ds.class_loss.dims == ("flip", "seed", "eval_step", "label")
    x, y = NoisyArgmax(build_config({"task": TASK}).task).test_set(jnp.float32)
    counts = np.bincount(np.asarray(y), minlength=3)
    np.testing.assert_allclose((ds.class_loss * counts).sum("label") / counts.sum(), ds.test_loss, rtol=1e-5)
    clean, noisy = ds.final_test_loss.sel(flip=0.0), ds.final_test_loss.sel(flip=0.6)
    assert np.all(clean.values < np.log2(3)) and np.all(clean.values < noisy.values)


def test_member_number_inside_one_program_equals_it_alone():
    """flip = 0.6 inside a sweep of flips and widths (one program) equals it in a program without the other
    flip, bitwise (residual MLP, parameter-free RMSNorm, zero-initialised projections, ReLU^2)."""
    cfg = _config({"task.flip": [0.0, 0.6], "model.width": [4, 16]}, run={"max_padding_waste": 0},
                  model={"residual": True, "norm": "rmsnorm", "zero_init": ["proj"], "activation": "relu2"})
    swept = run_sweep(cfg, log=None)[0]
    (g,) = build_grid(cfg).groups
    own = g.values["task.flip"] == 0.6
    row, wide = (int(np.flatnonzero(own & (g.values["model.width"] == w))[0]) for w in (4, 16))
    alone = run_group(g.config, g.subset(np.array([row, row, wide])), log=None)   # no other flip, same padding
    np.testing.assert_array_equal(swept.test_loss.sel(flip=0.6, width=4).values, alone.test_loss[0])
    np.testing.assert_array_equal(swept.class_loss.sel(flip=0.6, width=4).values, alone.records["class_loss"][0])


def test_zero_init_starts_projections_and_head_at_zero():
    """proj: every residual block's W2 starts at zero (blocks start as identities); head: the readout; other
    parameters keep their draws, and training moves the zeroed ones."""
    sweep = {"model.width": [4, 8]}
    model = {"residual": True, "depth": 2}
    base = run_sweep(_config(sweep, model=model, eval={"points": 2, "save_params": True}), log=None)[0]
    both = run_sweep(_config(sweep, model={**model, "zero_init": ["proj", "head"]},
                             eval={"points": 2, "save_params": True}), log=None)[0]
    for name in ("w2", "w_out", "b_out"):
        assert np.all(both[f"param.init.{name}"].values == 0) and np.any(base[f"param.init.{name}"].values != 0)
        assert np.any(both[f"param.{name}"].values != 0)
    for name in ("w_in", "w1", "b1"):
        np.testing.assert_array_equal(both[f"param.init.{name}"].values, base[f"param.init.{name}"].values)
    # Swept: one program per value, labelled by its entries.
    swept = run_sweep(_config({"model.zero_init": [[], ["head", "proj"]]}, model=model), log=None)[0]
    assert swept.zero_init.values.tolist() == ["none", "head+proj"]
    np.testing.assert_allclose(swept.test_loss.sel(zero_init="head+proj").values[0], np.log2(3), rtol=1e-6)
