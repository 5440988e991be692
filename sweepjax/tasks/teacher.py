"""Task ``teacher``: students learn a fixed random residual teacher (the inverse-depth study, Liu et al. 2026).

The teacher is a residual network of ``teacher_width`` (32) and ``teacher_depth`` (128) pre-norm blocks
h <- h + W2 relu(W1 RMSNorm(h) + b1)^2 with ``teacher_hidden`` (128) hidden units, W2 without bias,
parameter-free RMSNorm; h_0 = RMSNorm(x), x ~ N(0, I). Every Linear has PyTorch's default init
U(+-1/sqrt(fan_in)); every output projection W2 is multiplied by 1/sqrt(teacher_depth); the head
(teacher_width -> n_classes, no bias) reads RMSNorm(h_L). It is built on the device from
``task.teacher_seed`` (one program per seed), with ``teacher = "independent"`` layers or ``"tied"``: all
layers share layer 0's weights, the 1/sqrt(depth) scaling applied before tying (a "smooth dynamics"
teacher).

Targets (``task.target``):

* ``"kl"``: y = the teacher's logits; the loss is KL(softmax(y / T) || softmax(student logits)) in nats,
  summed over classes, at the member's ``task.temperature`` T (a per-member number: a temperature sweep is
  one program). With ``student_head = "own"`` the student learns its own head and is not divided by T
  (the authors' exp-9-1); with ``"teacher"`` the student has no head (``model.head = "none"``), its
  normed final state goes through the teacher's frozen head and is divided by T too (their long tied
  runs, exp-9-3, whose head is ``head_init = "normal"``: N(0, 1/width));
* ``"mse"``: y = RMSNorm(h_L) of the teacher; the student has no head (``model.head = "none"``) and the
  loss is the squared error averaged over the ``teacher_width`` components.

The inputs do not depend on the member's numbers (``SHARED_BATCH``): members with the same data seed see
the same batch, drawn -- and pushed through the teacher -- once per step. The test set is ``test_size``
inputs from a key of ``teacher_seed`` alone, the same for every member. The loss floor is 0 (the teacher
is deterministic, so a student that represents it reaches 0): no floor is subtracted in the fits.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from sweepjax.config import TaskConfig
from sweepjax.losses import kl_divergence, squared_error
from sweepjax.models.common import ACTIVATIONS, normalize
from sweepjax.tasks.base import Task

TEST_FOLD = 2**31 - 1     # fold_in index of the test inputs' key (beyond every training step)
TEACHER_FOLD = 2**31 - 2  # fold_in index of the teacher weights' key: never a training step's key (fold_in(data
                          # key, step)), even where data_seed = teacher_seed


@dataclass
class Keys(TaskConfig):
    """Config keys of ``teacher``."""
    teacher: str = "independent"     # "independent" layers, or "tied": every layer shares layer 0's weights
    teacher_depth: int = 128         # blocks of the teacher
    teacher_width: int = 32          # its residual stream (= the input size, and the output size with target "mse")
    teacher_hidden: int = 128        # hidden units of each block's MLP
    n_classes: int = 128             # classes of its head (target "kl")
    teacher_seed: int = 0            # seed of the teacher's weights and of the test inputs
    target: str = "kl"               # "kl" (teacher softmax at temperature) or "mse" (teacher's final normed state)
    temperature: float = 1.0         # target "kl": T of the teacher's softmax (per member)
    head_init: str = "uniform"       # the teacher's head: "uniform" U(+-1/sqrt(width)) (PyTorch's default) or
                                     # "normal" N(0, 1/width) (the authors' frozen-head runs)
    student_head: str = "own"        # target "kl": "own" (the student learns its head; only the teacher is divided
                                     # by T) or "teacher" (the student's normed final state goes through the
                                     # teacher's frozen head and both logits are divided by T; model.head = "none")
    test_size: int = 4096            # test inputs


def rms_norm(h: jax.Array) -> jax.Array:
    """Parameter-free RMSNorm over the last axis: the students' norm (:func:`sweepjax.models.common.normalize`)
    with every unit active, so a student can match the teacher exactly."""
    n = h.shape[-1]
    return normalize(h, jnp.ones((n,), h.dtype), n, "rmsnorm")


def teacher_params(cfg: Keys) -> dict[str, jax.Array]:
    """The teacher's weights: ``w1`` (L, W, H), ``b1`` (L, H), ``w2`` (L, H, W) (already scaled by
    1/sqrt(L)), ``head`` (W, n_classes); with ``teacher = "tied"`` every layer is a copy of layer 0."""
    L, W, H = cfg.teacher_depth, cfg.teacher_width, cfg.teacher_hidden
    k1, kb, k2, kh = jax.random.split(jax.random.fold_in(jax.random.key(cfg.teacher_seed), TEACHER_FOLD), 4)
    layers = 1 if cfg.teacher == "tied" else L
    u = lambda key, shape, fan_in: jax.random.uniform(key, shape, jnp.float32, -1.0, 1.0) / jnp.sqrt(fan_in)
    p = {"w1": u(k1, (layers, W, H), W), "b1": u(kb, (layers, H), W),
         "w2": u(k2, (layers, H, W), H) / jnp.sqrt(float(L))}
    if cfg.teacher == "tied":
        p = {k: jnp.broadcast_to(v, (L,) + v.shape[1:]) for k, v in p.items()}
    p["head"] = (u(kh, (W, cfg.n_classes), W) if cfg.head_init == "uniform"
                 else jax.random.normal(kh, (W, cfg.n_classes), jnp.float32) / jnp.sqrt(float(W)))
    return p


def teacher_states(params: dict, x: jax.Array) -> jax.Array:
    """The teacher's residual stream h_0 .. h_L on inputs ``x`` (B, W): (L + 1, B, W)."""
    act = ACTIVATIONS["relu2"]

    def block(h, p):
        w1, b1, w2 = p
        h = h + act(rms_norm(h) @ w1 + b1) @ w2
        return h, h

    h0 = rms_norm(x)
    _, hs = jax.lax.scan(block, h0, (params["w1"], params["b1"], params["w2"]))
    return jnp.concatenate([h0[None], hs], axis=0)


class Teacher(Task):
    """Students learn a fixed random residual teacher (see the module docstring)."""
    Keys = Keys
    FAMILIES = ("mlp",)
    MEMBER_KEYS = ("task.temperature",)
    SHARED_BATCH = True
    CHOICES = {"task.teacher": ("independent", "tied"), "task.target": ("kl", "mse"),
               "task.head_init": ("uniform", "normal"), "task.student_head": ("own", "teacher")}
    MINIMUM = {"task.teacher_depth": (1, True), "task.teacher_width": (1, True), "task.teacher_hidden": (1, True),
               "task.n_classes": (2, True), "task.teacher_seed": (0, True), "task.temperature": (0, False)}
    MAXIMUM = {"task.teacher_depth": 4096, "task.teacher_width": 2**14, "task.teacher_hidden": 2**16,
               "task.n_classes": 2**20}
    APPLIES = {f"task.{k}": ({"task.target": ("kl",)},) for k in ("temperature", "n_classes", "head_init", "student_head")}
    WHY = {k: "the MSE target is the teacher's final state, not its softmax" for k in APPLIES}
    PREDICTIONS = "outputs"   # target "mse": the students' final normed states; "kl": their class probabilities
    STUDY = "sweepjax.analysis.depth"

    def __init__(self, cfg: Keys):
        super().__init__(cfg)
        self.params = teacher_params(cfg)

    @classmethod
    def check(cls, cfg) -> None:
        from sweepjax.config import ConfigError, axis
        frozen_head = "kl" in axis(cfg, "task.target") and "teacher" in axis(cfg, "task.student_head")
        if frozen_head and axis(cfg, "model.head") != ["none"]:
            raise ConfigError(f"task.student_head = 'teacher' with model.head = {cfg.model.head!r}: the teacher's "
                              f"frozen head reads the student's final normed state; set model.head = 'none'")
        if cfg.eval.save_predictions and len(axis(cfg, "task.target")) > 1:
            raise ConfigError("eval.save_predictions with sweep.task.target over both targets: MSE students keep "
                              "outputs and KL students probabilities, which share no results variable; run each "
                              "target as its own sweep")
        if len(axis(cfg, "task.student_head")) > 1:
            raise ConfigError("sweep.task.student_head: 'own' and 'teacher' need different model heads; run one sweep each")

    @classmethod
    def model_io(cls, keys: Keys) -> dict[str, int]:
        own_logits = keys.target == "kl" and keys.student_head == "own"
        return {"in_dim": keys.teacher_width, "out_dim": keys.n_classes if own_logits else keys.teacher_width}

    @classmethod
    def loss_unit(cls, keys: Keys) -> str:
        return "nats" if keys.target == "kl" else "squared error"

    def init_input(self, dtype) -> jax.Array:
        return jnp.zeros((1, self.cfg.teacher_width), dtype)

    def states(self, x: jax.Array) -> jax.Array:
        """The teacher's residual stream on ``x``: (teacher_depth + 1, B, teacher_width)."""
        return teacher_states(self.params, x.astype(jnp.float32))

    def targets(self, x: jax.Array, dtype) -> jax.Array:
        """The teacher's logits (target "kl") or final normed state (target "mse") on inputs ``x``."""
        h = rms_norm(self.states(x)[-1])
        return (h @ self.params["head"] if self.cfg.target == "kl" else h).astype(dtype)

    def examples(self, keys: jax.Array, m: dict, dtype) -> tuple[jax.Array, jax.Array]:
        x = jax.vmap(lambda k: jax.random.normal(k, (self.cfg.teacher_width,), dtype))(keys)
        return x, self.targets(x, dtype)

    def train_batch(self, data_key: jax.Array, step: jax.Array, m: dict, dtype) -> tuple[jax.Array, jax.Array]:
        """A fresh batch of ``step``: x ~ N(0, I) drawn at once from (data key, step), and the teacher's targets."""
        x = jax.random.normal(jax.random.fold_in(data_key, step), (self.cfg.batch_size, self.cfg.teacher_width), dtype)
        return x, self.targets(x, dtype)

    def test_set(self, dtype) -> tuple[jax.Array, jax.Array]:
        key = jax.random.fold_in(jax.random.key(self.cfg.teacher_seed), TEST_FOLD)
        x = jax.random.normal(key, (self.cfg.test_size, self.cfg.teacher_width), dtype)
        return x, self.targets(x, dtype)

    @classmethod
    def predictions(cls, keys: Keys) -> str:
        return "outputs" if keys.target == "mse" else "probabilities"

    def student_logits(self, outputs: jax.Array, m: dict) -> jax.Array:
        """The student's class logits: its own head's outputs, or its normed state through the teacher's
        frozen head, divided by the temperature as the teacher's are (``student_head = "teacher"``)."""
        if self.cfg.student_head == "teacher":
            return outputs.astype(jnp.float32) @ self.params["head"] / m["temperature"]
        return outputs

    def losses(self, outputs: jax.Array, y: jax.Array, m: dict) -> jax.Array:
        if self.cfg.target == "kl":
            return kl_divergence(self.student_logits(outputs, m), y, m["temperature"])
        return squared_error(outputs, y)

    def distributions(self, outputs: jax.Array, y: jax.Array, m: dict) -> tuple[jax.Array, jax.Array]:
        """Target "kl": the student's log-probabilities and the teacher's distribution at the member's temperature."""
        logits = self.student_logits(outputs, m).astype(jnp.float32)
        return jax.nn.log_softmax(logits), jax.nn.softmax(y.astype(jnp.float32) / m["temperature"])
