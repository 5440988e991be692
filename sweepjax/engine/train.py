"""Train one group of members as one compiled program.

Every member's parameters and optimizer state are stacked on a leading member axis; the step is
vmapped over it. The host loops over chunks of steps, each chunk one jitted loop, so progress can
be shown between chunks. Evaluation happens inside the loop at the scheduled steps (a ``cond`` on
the shared step counter), writing into per-member curve buffers carried in the state.

The number of training steps is a per-member number: the loop runs to the longest run among the
members, each member's lr schedule spans its own steps, and a member whose last step has passed is
frozen (parameters, optimizer state and flags untouched) while the others go on. Evaluations follow
one schedule shared by the whole sweep (:func:`eval_steps`): step 0, log-spaced steps up to the
sweep's longest run, and every run length in the sweep; a member is evaluated at each of those
steps up to its own last step and holds NaN after it.
"""
from __future__ import annotations

import contextlib
import hashlib
import sys
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from sweepjax.analysis.depth import LAYER_METRICS, layer_metrics
from sweepjax.config import Config, axis, to_toml
from sweepjax.engine.checkpoint import Interrupted
from sweepjax.engine.memory import plan_member_chunk
from sweepjax.engine.optim import make_optimizer, member_lr, needs_value_fn
from sweepjax.grid import Group
from sweepjax.models import dtypes, family, make_model, member_sizes, padded_sizes
from sweepjax.tasks import dataset, make_task
from sweepjax.tasks.base import weighted_mean


def eval_steps(steps, points: int, every: int = 0) -> np.ndarray:
    """Steps at which the test loss is measured (the results' ``eval_step``), for runs of ``steps`` steps
    (one number, or every value of a swept ``train.steps``): 0, ``points`` log-spaced steps up to the
    longest run, every multiple of ``every`` (when > 0), and each run's final step. A member is
    evaluated at those up to its own final step."""
    runs = np.atleast_1d(np.asarray(steps, dtype=np.int64))
    longest = int(runs.max())
    logs = np.round(np.logspace(0, np.log10(longest), points)).astype(int) if longest >= 1 else []
    regular = np.arange(0, longest + 1, every) if every else []
    return np.unique(np.concatenate([[0], logs, regular, runs])).astype(int)


def sweep_eval_steps(cfg: Config) -> np.ndarray:
    """:func:`eval_steps` of a sweep: shared by all its groups, so every member fits one ``eval_step`` axis."""
    return eval_steps(axis(cfg, "train.steps"), cfg.eval.points, cfg.eval.every)


def precision(cfg: Config):
    """Context in which the group runs: x64 on for float64 configs."""
    return jax.enable_x64(True) if cfg.train.precision == "float64" else contextlib.nullcontext()


def tree_all_finite(tree) -> jax.Array:
    """True when every entry of every leaf is finite."""
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


@dataclass
class GroupOutput:
    """Host-side results of one group, each array with the group's members first."""
    train_loss: np.ndarray       # (n, n_eval)
    test_loss: np.ndarray        # (n, n_eval)
    diverged: np.ndarray         # (n,) bool
    diverged_step: np.ndarray    # (n,) int, -1 if never
    converged_step: np.ndarray   # (n,) int: L-BFGS step at which the member was frozen as converged, -1 if never
    predictions: dict | None     # eval.save_predictions: see GroupProgram.predict; None otherwise
    activations: np.ndarray | None  # (n, n_eval, n_probes) activation RMS at each evaluation, or None
    records: dict[str, np.ndarray]  # the task's RECORDS: name -> (n, n_eval, *its shape)
    layers: np.ndarray | None    # eval.layers: (n, n_eval or 1, len(LAYER_METRICS), max depth + 1), or None
    params: dict | None          # leaf name -> (n, *padded shape) or None; "init." names: at init
    compile_s: float
    run_s: float
    final_test_loss: np.ndarray | None = None  # (n,) test loss at each member's own last step (NaN if diverged)


class GroupProgram:
    """The compiled training program of one group (fixed padded sizes and member-chunk size).

    ``data`` = (fresh, fixed): whether some member draws fresh batches (``task.dataset_size`` = 0) and
    whether some member trains on a fixed set (> 0); a group with both computes both and each member
    keeps its own. For a task with ``SHARED_BATCH``, fresh batches are drawn once per step for each
    distinct data seed among the members and each member takes its own seed's batch.
    """

    def __init__(self, cfg: Config, padded: dict[str, int], data: tuple[bool, bool] = (True, False)):
        self.cfg = cfg
        self.dtype = dtypes(cfg)[0]
        self.task = make_task(cfg.task)
        self.fresh, self.fixed = data
        self.record_shapes = self.task.record_shapes()
        self.family = family(cfg)
        self.model = make_model(cfg, padded)
        self.probes = self.family.PROBES if cfg.eval.activations else ()
        self.shared = self.task.SHARED_BATCH and self.fresh
        # eval.layers: the layer measures of each member, on a layer axis as long as the sweep's deepest member
        # (residual MLP groups; the others of a sweep over model.residual hold NaN, see run_group)
        self.layer_slots = layer_slots(cfg) if cfg.model.family == "mlp" and cfg.model.residual else 0
        self.layer_count = max(axis(cfg, "model.depth")) + 1
        self.steps = sweep_eval_steps(cfg)   # shared by every group of the sweep (one eval_step axis)
        self.final_slot = jnp.asarray(np.isin(self.steps, axis(cfg, "train.steps")))   # some member's last step
        # The member axis is sharded over all devices (a no-op on one device).
        self.n_devices = jax.device_count() if cfg.run.shard_members else 1
        mesh = Mesh(np.array(jax.devices()[: self.n_devices]), ("members",))
        self.sharded, rep = NamedSharding(mesh, P("members")), NamedSharding(mesh, P())
        self._chunk = jax.jit(self._run_chunk, donate_argnums=0,
                              in_shardings=(self.sharded, self.sharded, rep, rep, rep, rep), out_shardings=self.sharded)
        self._compiled: dict[tuple, object] = {}   # (member-chunk size, distinct data seeds) -> compiled chunk loop
        self._init = jax.jit(jax.vmap(self._init_member), in_shardings=self.sharded, out_shardings=self.sharded)
        self._predict = jax.jit(jax.vmap(self._predict_member), in_shardings=self.sharded, out_shardings=self.sharded)

    # ---- one member -------------------------------------------------------------------------
    def _apply(self, params, x, m, probes=False, layers=False):
        if layers:
            return self.model.apply({"params": params}, x, m["sizes"], layers=True)
        return self.model.apply({"params": params}, x, m["sizes"], probes)

    def _init_member(self, m: dict) -> dict:
        x0 = self.task.init_input(self.dtype)
        params = self.model.init({"params": jax.random.key(m["seed"])}, x0, m["sizes"])["params"]
        n_eval = len(self.steps)
        probes = {"activations": jnp.full((n_eval, len(self.probes)), jnp.nan, self.dtype)} if self.probes else {}
        records = {"records": {k: jnp.full((n_eval, *shape), jnp.nan, self.dtype)
                               for k, shape in self.record_shapes.items()}} if self.record_shapes else {}
        layers = ({"layers": jnp.full((self.layer_slots, len(LAYER_METRICS), self.layer_count), jnp.nan, self.dtype)}
                  if self.layer_slots else {})
        return {
            **probes,
            **records,
            **layers,
            "params": params,
            "opt": self._optimizer(m).init(params),
            "init_loss": jnp.full((), jnp.nan, self.dtype),
            "diverged": jnp.zeros((), bool),
            "converged": jnp.zeros((), bool),
            "converged_step": jnp.full((), -1, jnp.int32),
            "fresh": jnp.ones((), bool),
            "diverged_step": jnp.full((), -1, jnp.int32),
            "train_loss": jnp.full((n_eval,), jnp.nan, self.dtype),
            "test_loss": jnp.full((n_eval,), jnp.nan, self.dtype),
        }

    def _test_chunks(self):
        """The test set split into equal chunks of at most a training batch (when it divides evenly)."""
        x, y = self.task.test_set(self.dtype)
        n, b = x.shape[0], self.cfg.task.batch_size
        c = b if n > b and n % b == 0 else n
        return x.reshape(n // c, c, *x.shape[1:]), y.reshape(n // c, c, *y.shape[1:])

    def _test_losses(self, params, m):
        """Per-example losses on the whole test set (in its order), evaluated chunk by chunk."""
        xs, ys = self._test_chunks()
        return jax.lax.map(lambda xy: self.task.losses(self._apply(params, xy[0], m), xy[1], m["task"]), (xs, ys)).reshape(-1)

    def _shared_batches(self, t: jax.Array, seeds: jax.Array):
        """``SHARED_BATCH`` tasks: the fresh batch of step ``t`` of each data seed in ``seeds`` (sorted,
        distinct), outside the member vmap: computed once whatever the number of members."""
        if not self.shared:
            return None
        return jax.vmap(lambda seed: self.task.train_batch(jax.random.key(seed), t, {}, self.dtype))(seeds)

    def _train_batch(self, t: jax.Array, m: dict, shared=None):
        """(x, y, weights) of step ``t``: fresh examples, or a minibatch of the member's fixed training set
        (:mod:`sweepjax.tasks.dataset`); weights are None when every row counts. ``shared``: (seeds,
        batches) of :meth:`_shared_batches`, from which the member takes its data seed's batch."""
        key = jax.random.key(m["data_seed"])
        if self.fresh:
            if shared is not None:
                seeds, batches = shared
                x, y = jax.tree.map(lambda a: a[jnp.searchsorted(seeds, m["data_seed"])], batches)
            else:
                x, y = self.task.train_batch(key, t, m["task"], self.dtype)
            if not self.fixed:
                return x, y, None
        index, valid = dataset.minibatch(key, t, self.cfg.task.batch_size, m["dataset_size"])
        xd, yd = self.task.examples(dataset.sample_keys(key, index), m["task"], self.dtype)
        if not self.fresh:
            return xd, yd, valid
        fixed = m["dataset_size"] > 0
        pick = lambda a, b: jnp.where(fixed, a, b)
        return pick(xd, x), pick(yd, y), pick(valid, jnp.ones_like(valid))

    def _probe(self, params, m):
        """Activation RMS values (``PROBES`` order) on the first test chunk."""
        xs, _ = self._test_chunks()
        stats = self._apply(params, xs[0], m, probes=True)[1]
        return jnp.stack([stats[k] for k in self.probes]).astype(self.dtype)

    def _layers(self, params, m):
        """The :data:`LAYER_METRICS` of the member on the probe batch (the first test chunk), (K, max depth + 1);
        the per-layer loss is the mean loss of each h_l read out through the final norm and head."""
        xs, ys = self._test_chunks()
        _, aux = self._apply(params, xs[0], m, layers=True)
        losses = jax.vmap(lambda out: jnp.mean(self.task.losses(out, ys[0], m["task"])))(aux["readouts"])
        values = layer_metrics(aux["states"], m["sizes"]["depth"], losses, self.layer_count - 1)
        return values.astype(self.dtype)

    def _optimizer(self, m: dict) -> optax.GradientTransformation:
        return make_optimizer(self.cfg.train, m["lr"], self.family.DECAYED, steps=m["steps"])

    def _step_member(self, state: dict, t: jax.Array, slot: jax.Array, m: dict, shared=None) -> dict:
        tc = self.cfg.train
        tx = self._optimizer(m)
        x, y, weights = self._train_batch(t, m, shared)

        def loss_of(p):
            return weighted_mean(self.task.losses(self._apply(p, x, m), y, m["task"]), weights)

        params, opt = state["params"], state["opt"]
        # Steps 0..steps-1 update; step ``steps`` only evaluates the final parameters; after it the member is
        # frozen (nothing in its state changes) while members with longer runs go on.
        live, trains = t <= m["steps"], t < m["steps"]
        converged, restart = state["converged"], jnp.zeros((), bool)
        if needs_value_fn(tc):
            loss, grads = optax.value_and_grad_from_state(loss_of)(params, state=opt)
            updates, new_opt = tx.update(grads, opt, params, value=loss, grad=grads, value_fn=loss_of)
            # A line search that finds no decrease drops its step and restarts the L-BFGS memory; when even
            # a restarted memory (a scaled gradient step) finds none, the member is flat at rounding level:
            # it has converged and is frozen (``converged_step``).
            restart = optax.tree_utils.tree_get(new_opt, "value") >= loss
            converged = converged | (restart & state["fresh"] & live)
            updates = jax.tree.map(lambda u: jnp.where(restart, jnp.zeros_like(u), u), updates)
            new_opt = jax.tree.map(lambda a, b: jnp.where(restart, a, b), tx.init(params), new_opt)
        else:
            loss, grads = jax.value_and_grad(loss_of)(params)
            updates, new_opt = tx.update(grads, opt, params)
        scales = self.family.lr_multipliers(self.cfg.model, params, m["sizes"])
        if scales is not None:  # per-tensor learning rates (muP)
            updates = jax.tree.map(lambda u, f: u * f.astype(u.dtype), updates, scales)
        new_params = optax.apply_updates(params, updates)

        # A member whose loss is non-finite, above the absolute limit or above divergence_factor x its
        # own initial loss, or whose update would leave non-finite parameters, is flagged and frozen.
        init_loss = jnp.where(t == 0, loss, state["init_loss"])
        relative = (tc.divergence_factor > 0) & (init_loss > 0) & (loss > tc.divergence_factor * init_loss)
        blown_up = (loss > tc.divergence_loss) | relative
        diverged = state["diverged"] | (live & (~jnp.isfinite(loss) | blown_up))
        params_ok = tree_all_finite(new_params)
        accept = ~diverged & ~converged & params_ok & trains
        nan = jnp.full((), jnp.nan, self.dtype)

        def record(s):
            # The evaluation schedule is shared (so the cond stays a cond under vmap); a member writes only
            # up to its own last step, its later entries stay NaN.
            put = lambda buf, v: buf.at[slot].set(jnp.where(live, jnp.where(diverged, nan, v), buf[slot]))
            test_losses = self._test_losses(params, m)
            out = {**s, "train_loss": put(s["train_loss"], loss),
                   "test_loss": put(s["test_loss"], self.task.test_loss(test_losses, m["task"]))}
            if self.probes:
                out["activations"] = put(s["activations"], self._probe(params, m))
            if self.record_shapes:
                values = self.task.records(test_losses, lambda x: self._apply(params, x, m), m["task"])
                out["records"] = {k: put(s["records"][k], values[k].astype(self.dtype)) for k in self.record_shapes}
            if self.layer_slots:   # "every": at each evaluation; "final": at the member's own last step only
                every = self.cfg.eval.layers == "every"
                at = slot if every else 0
                write = live if every else t == m["steps"]
                buf = s["layers"]
                values = self._layers(params, m) if every else jax.lax.cond(   # computed only at final steps
                    self.final_slot[slot], lambda: self._layers(params, m), lambda: jnp.full(buf.shape[1:], nan))
                out["layers"] = buf.at[at].set(jnp.where(write & ~diverged, values,
                                                         jnp.where(write, nan, buf[at])))
            return out

        state = jax.lax.cond(slot >= 0, record, lambda s: s, state)
        keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(accept, a, b), new, old)
        diverged = diverged | (~params_ok & trains)
        return {**state,
                "params": keep(new_params, params),
                "opt": keep(new_opt, opt),
                "init_loss": init_loss,
                "diverged": diverged,
                "converged": converged,
                "converged_step": jnp.where(converged & (state["converged_step"] < 0), t, state["converged_step"]),
                "fresh": jnp.where(accept, restart, state["fresh"]),
                "diverged_step": jnp.where(diverged & (state["diverged_step"] < 0), t, state["diverged_step"])}

    def _predict_member(self, params, m):
        x, y = self.task.test_set(self.dtype)
        out = self._apply(params, x, m)
        kept = {"validation_loss": self._validation_loss(params, m)}
        if self.task.predictions(self.cfg.task) == "probabilities":
            log_probs, target = self.task.distributions(out, y, m["task"])
            return {**kept, "predictions": log_probs, "test_target": target,
                    "test_weight": self.task.test_weights(m["task"])}
        return {**kept, "predictions": out[:, 0] if out.shape[-1] == 1 else out}

    def _validation_loss(self, params, m):
        """Mean loss on ``test_size`` fresh examples of the member's own data distribution, drawn from its data
        key at a fold no training step, training set or test set uses (``dataset.VALIDATION_FOLD``):
        independent of the test set, for choosing members (best-K ensembles) without looking at it."""
        n, b = self.cfg.task.test_size, self.cfg.task.batch_size
        c = b if n > b and n % b == 0 else n
        keys = jax.random.split(jax.random.fold_in(jax.random.key(m["data_seed"]), dataset.VALIDATION_FOLD), n)

        def chunk_losses(k):
            x, y = self.task.examples(k, m["task"], self.dtype)
            return self.task.losses(self._apply(params, x, m), y, m["task"])

        return jnp.mean(jax.lax.map(chunk_losses, keys.reshape(n // c, c))).astype(self.dtype)

    # ---- the member axis --------------------------------------------------------------------
    def _run_chunk(self, state: dict, members: dict, seeds: jax.Array, evals: jax.Array, start: jax.Array,
                   end: jax.Array) -> dict:
        step = jax.vmap(self._step_member, in_axes=(0, None, None, 0, None))

        def body(t, s):
            i = jnp.minimum(jnp.searchsorted(evals, t), evals.shape[0] - 1)
            shared = (seeds, self._shared_batches(t, seeds)) if self.shared else None
            return step(s, t, jnp.where(evals[i] == t, i, -1), members, shared)   # slot in the curves, -1: none
        return jax.lax.fori_loop(start, end, body, state)

    def members(self, group: Group, idx: np.ndarray) -> dict:
        """Device arrays of the per-member numbers for members ``idx`` of ``group``."""
        v = {k: a[idx] for k, a in group.values.items()}
        sch = self.cfg.schema
        traced = lambda k: np.asarray(v[k], np.int32 if sch.field_type(k) in ("int", int) else self.dtype)
        return jax.device_put({
            "seed": np.asarray(v["train.seed"], np.uint32),
            "data_seed": np.asarray(v["task.data_seed"], np.uint32),
            "lr": member_lr(self.cfg.train, v["train.lr"], v["model.depth"]).astype(self.dtype),
            "steps": np.asarray(v["train.steps"], np.int32),
            "dataset_size": np.asarray(v["task.dataset_size"], np.int32),
            "task": {k.split(".", 1)[1]: traced(k) for k in self.task.MEMBER_KEYS},
            "sizes": {k: np.asarray(a, np.int32) for k, a in member_sizes(self.cfg, v).items()},
        }, self.sharded)

    def init(self, members: dict) -> dict:
        """The stacked initial state of the members."""
        return self._init(members)

    def train(self, state: dict, members: dict, longest: int, start: int = 0,
              after_chunk=None) -> tuple[dict, float, float]:
        """Train from ``state`` at step ``start`` through step ``longest`` (the longest run among ``members``);
        returns (final state, compile s, run s).

        ``after_chunk(next_step, total, elapsed_s, state)`` is called after every chunk (progress,
        checkpoints); it may raise to stop the run.
        """
        tc = self.cfg.train
        evals = jnp.asarray(self.steps, jnp.int32)
        total = longest + 1  # the extra step only evaluates the final parameters
        t0 = time.perf_counter()
        n = members["seed"].shape[0]
        # the distinct data seeds, whose batches a SHARED_BATCH task draws once per step
        seeds = jnp.asarray(np.unique(to_host(members["data_seed"])) if self.shared else np.zeros(1, np.uint32))
        if (n, seeds.shape[0]) not in self._compiled:
            self._compiled[n, seeds.shape[0]] = self._chunk.lower(state, members, seeds, evals, jnp.int32(0),
                                                                  jnp.int32(1)).compile()
        chunk, compile_s = self._compiled[n, seeds.shape[0]], time.perf_counter() - t0
        t0 = time.perf_counter()
        for begin in range(start, total, tc.chunk_steps):
            end = min(begin + tc.chunk_steps, total)
            state = chunk(state, members, seeds, evals, jnp.int32(begin), jnp.int32(end))
            jax.block_until_ready(state["diverged"])
            if after_chunk:
                after_chunk(end, total, time.perf_counter() - t0, state)
        return state, compile_s, time.perf_counter() - t0

    def predict(self, params: dict, members: dict) -> dict[str, np.ndarray]:
        """Final predictions on the test set: ``predictions`` (n, test_size) (scalar outputs) or (n, test_size,
        outputs); for a task whose members combine by probabilities, (n, test_size[, positions], classes)
        log-probabilities, with each member's ``test_target`` and ``test_weight`` (see Task.distributions)."""
        return {k: to_host(v) for k, v in self._predict(params, members).items()}


def layer_slots(cfg: Config) -> int:
    """Evaluations ``eval.layers`` keeps per member: 0 (off), 1 (final) or every evaluation."""
    return {"off": 0, "final": 1, "every": len(sweep_eval_steps(cfg))}[cfg.eval.layers]


def to_host(x: jax.Array) -> np.ndarray:
    """A device array as numpy, gathered from every process when it is sharded across hosts."""
    if x.is_fully_addressable:
        return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def host_params(params: dict, n: int, prefix: str = "") -> dict[str, np.ndarray]:
    """Leaf name -> host array of the first ``n`` members (names like ``w_in``, ``b_in``)."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {prefix + jax.tree_util.keystr(p, simple=True, separator="."): to_host(v)[:n] for p, v in flat}


def run_group(cfg: Config, group: Group, log=sys.stderr, store=None, name: str = "g0",
              should_stop=lambda: False, programs: dict | None = None) -> GroupOutput:
    """Train every member of ``group``, in member chunks of ``run.member_chunk`` (0 = as many as fit in memory).

    Each member chunk loops to the longest run among its members (``train.steps`` is per member). The last
    chunk is filled up with copies of its last member (results discarded), so every chunk has the same shape
    (a multiple of the device count: members are sharded over devices) and the program compiles once. With a
    checkpoint ``store``, finished chunks are skipped on resume, the chunk in progress restarts from its latest
    checkpoint, and ``should_stop()`` turning true makes the run checkpoint and raise :class:`Interrupted`.
    ``programs`` (a dict shared by the groups of one sweep) reuses the compiled program of an earlier
    group with the same structure and padded sizes: buckets split only by step count compile once.
    """
    padded = padded_sizes(group.sizes())
    n = group.size
    with precision(cfg):
        sizes = group.values["task.dataset_size"]
        data = (bool((sizes == 0).any()), bool((sizes > 0).any()))
        key = (to_toml(cfg), tuple(sorted(padded.items())), data)
        program = programs.get(key) if programs is not None else None
        if program is None:
            program = GroupProgram(cfg, padded, data)
            if programs is not None:
                programs[key] = program
        nd = program.n_devices
        size = nd * plan_member_chunk(cfg, -(-n // nd), padded)  # a multiple of the device count
        parts: list[dict] = []
        compile_s = run_s = 0.0
        # Which members a unit holds, at which padded sizes and chunk size, in its name: a resume whose split (or
        # chunking) differs finds no unit of the old one and recomputes, never loading a unit into other members.
        held = repr((group.index.tolist(), sorted(padded.items()), size))
        fingerprint = hashlib.sha256(held.encode()).hexdigest()[:12]
        for c0 in range(0, n, size):
            idx = np.arange(c0, min(c0 + size, n))
            unit = f"{name}_{fingerprint}_m{c0}"
            done = store.load_unit(unit) if store else None
            if done is not None:
                parts.append(done)
                continue
            padded = np.concatenate([idx, np.full(size - len(idx), idx[-1])])
            members = program.members(group, padded)
            longest = int(group.values["train.steps"][idx].max())
            state, start = program.init(members), 0
            host = {}
            if cfg.eval.save_params:
                host.update(host_params(state["params"], len(idx), prefix="params/init."))
            if store and (restored := store.restore(unit, state)):
                state, start = restored
                if log:
                    print(f"[{group.label()}] resuming members {c0 + 1}-{c0 + len(idx)} at step {start}", file=log)
            label = f"[{group.label()}] members {c0 + 1}-{c0 + len(idx)}/{n}"

            def after_chunk(step, total, elapsed, state, label=label, start=start):
                if log:
                    rate = (step - start) / max(elapsed, 1e-9)
                    eta = (total - step) / max(rate, 1e-9)
                    print(f"\r{label} step {step - 1}/{total - 1}  {rate * size:,.0f} member-steps/s  ETA {eta:5.0f}s",
                          end="" if step < total else "\n", file=log, flush=True)
                if store and step < total and (should_stop() or store.due(step)):
                    store.save(unit, step, state)
                    if should_stop():
                        if log:
                            print(file=log)
                        raise Interrupted(f"stopped at step {step} of {label}")

            state, c_s, r_s = program.train(state, members, longest, start, after_chunk)
            compile_s = compile_s or c_s
            run_s += r_s
            host.update({k: to_host(state[k])[: len(idx)]
                         for k in ("train_loss", "test_loss", "diverged", "diverged_step", "converged_step", "activations",
                                   "layers")
                         if k in state})
            host.update({f"records/{k}": to_host(v)[: len(idx)] for k, v in state.get("records", {}).items()})
            # A diverged member's frozen parameters are its last finite ones, not a result: NaN them.
            failed = lambda a: np.where(host["diverged"].reshape((-1,) + (1,) * (a.ndim - 1)), np.nan, a)
            if cfg.eval.save_predictions:
                kept = {k: v[: len(idx)] for k, v in program.predict(state["params"], members).items()}
                host.update({f"predict/{k}": failed(v) if k in ("predictions", "validation_loss") else v
                             for k, v in kept.items()})
            if cfg.eval.save_params:
                host.update({k: failed(v) for k, v in host_params(state["params"], len(idx), prefix="params/").items()})
            if store:
                store.save_unit(unit, host)
            parts.append(host)
    cat = lambda k: np.concatenate([p[k] for p in parts]) if k in parts[0] else None
    params = {k[len("params/"):]: cat(k) for k in parts[0] if k.startswith("params/")} or None
    predictions = {k[len("predict/"):]: cat(k) for k in parts[0] if k.startswith("predict/")} or None
    records = {k[len("records/"):]: cat(k) for k in parts[0] if k.startswith("records/")}
    layers = cat("layers")
    if layers is None and cfg.eval.layers != "off":   # a plain-MLP group of a sweep over model.residual
        layers = np.full((n, layer_slots(cfg), len(LAYER_METRICS), program.layer_count), np.nan)
    test_loss = cat("test_loss")
    last = np.searchsorted(program.steps, group.values["train.steps"])   # each member's own last step
    return GroupOutput(cat("train_loss"), test_loss, cat("diverged"), cat("diverged_step"),
                       cat("converged_step"), predictions, cat("activations"), records, layers, params,
                       compile_s, run_s,
                       test_loss[np.arange(n), last])
