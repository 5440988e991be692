"""Config schema, TOML loading, ``--set`` overrides and validation.

A config has the sections ``task``, ``model``, ``train``, ``eval``, ``run`` and ``sweep``.
Every user mistake raises :class:`ConfigError` with one line naming the key, the value and
what is allowed; nothing is compiled before the whole config has been validated.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import itertools
import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sweepjax.tasks import TASKS


class ConfigError(ValueError):
    """A user mistake in a config file or an override (reported as one line, exit code 2)."""


@dataclass
class TaskConfig:
    """Keys every task has. Each task subclasses it with its own keys (its ``Keys`` class, see
    :mod:`sweepjax.tasks`); ``Config.task`` is an instance of the chosen task's class."""
    name: str = "regression-1d"      # the task (sweepjax.tasks.TASKS); a sweep trains one task
    batch_size: int = 1024           # training samples (sequences, for token tasks) per step
    test_size: int = 1001            # samples (sequences) of the fixed test set
    data_seed: int = -1              # -1: each member's data stream follows its init seed; >= 0: one shared stream
    dataset_size: int = 0            # 0: fresh samples every step; D > 0: a fixed training set of D samples per
                                     # member, reshuffled every epoch, minibatch min(D, batch_size)


@dataclass
class ModelConfig:
    """Model family and sizes; width and depth are padded to the group maximum and masked."""
    family: str = "mlp"              # "mlp" or "transformer" (decoder-only, pre-norm)
    width: int = 32                  # hidden units (plain mlp) or residual-stream width / d_model
    depth: int = 1                   # hidden layers (plain mlp) or residual blocks / transformer layers
    activation: str = "silu"
    residual: bool = False           # mlp only (a transformer is always residual)
    mlp_ratio: int = 1               # residual blocks and transformer MLPs: hidden units = mlp_ratio * width
    norm: str = "none"               # "none", "rmsnorm" or "layernorm" (pre-norm, statistics over active units only)
    depth_scaling: str = "none"      # residual blocks: "none" or "inv_sqrt" (branch * 1/sqrt(true depth))
    init: str = "torch"              # mlp: "torch" = U(+-1/sqrt(fan_in)) weights and biases; "normal" = N(0, 1/fan_in), zero biases
    input: str = "affine"            # residual mlp: "affine" (h0 = W x + b) or "none" (h0 = norm(x): no input
                                     # layer, width = the task's input size)
    head: str = "affine"             # mlp readout: "affine" (W h + b), "linear" (W h, no bias) or "none" (the
                                     # outputs are the final normed stream: width = the task's output size)
    # transformer only
    heads: int = 4                   # attention heads (ignored when head_size > 0)
    head_size: int = 0               # > 0: fixed head size, heads = width / head_size; 0: head size = width / heads
    positions: str = "learned"       # "learned" position embeddings or "rotary" (RoPE on queries and keys)
    rope_base: float = 10000.0       # rotary frequency base
    tie_embeddings: bool = False     # readout = token embedding transposed
    parameterization: str = "sp"     # "sp" (standard) or "mup" (maximal update, Adam rules, relative to base_width)
    base_width: int = 64             # muP: width at which muP and SP coincide (multiplier m = width / base_width)
    zero_init: list = field(default_factory=list)  # parameters that start at zero: "proj" (each block's output
                                     # projections), "head" (the readout); e.g. ["proj", "head"]
    base_mlp_ratio: int = 0          # muP: MLP ratio of the base model (0: each member's own mlp_ratio)


@dataclass
class TrainConfig:
    """Optimization."""
    seed: int = 0                    # init seed (sweep axis name: "seed")
    optimizer: str = "adam"          # adam | adamw | sgd | lbfgs
    lr: float = 1e-3                 # peak learning rate (ignored by lbfgs, which uses a line search)
    lr_depth_scaling: float = 0.0    # c > 0: each member's peak lr is lr * c / sqrt(its true depth) (0: off)
    schedule: str = "constant"       # constant | cosine | warmup_cosine | linear | wsd (over each member's steps)
    final_lr_fraction: float = 0.0   # cosine/linear/wsd schedules end at lr * final_lr_fraction
    warmup_fraction: float = 0.0     # warmup_cosine: fraction of steps of linear warmup
    decay_fraction: float = 0.2      # wsd: constant lr, then linear decay over this fraction of the member's steps
    weight_decay: float = 0.0        # adamw only
    momentum: float = 0.0            # sgd only
    lbfgs_memory: int = 10           # lbfgs history size
    lbfgs_linesearch_steps: int = 30 # lbfgs: most backtracking steps per iteration (a hard bound)
    steps: int = 1000                # training steps (per member: a swept value stays inside one program)
    chunk_steps: int = 500           # steps per jitted chunk (progress, future checkpoints)
    precision: str = "float32"       # float32 | float64 (runs under jax x64) | bf16 (bf16 matmuls; float32 params and optimizer state)
    adam_b1: float = 0.9             # adam/adamw first-moment decay
    adam_b2: float = 0.999           # adam/adamw second-moment decay
    adam_eps: float = 1e-8           # adam/adamw epsilon
    divergence_loss: float = 1e10    # a member whose train loss is non-finite or above this is flagged and frozen
    divergence_factor: float = 1e4   # ... or above this many times its own initial train loss (0: rule off; raise
                                     # it where models start near-perfect and may rise early, e.g. tiny targets)
    decay_all: bool = False          # adamw: also decay biases, norm gains and embeddings (default: matrices only)


@dataclass
class EvalConfig:
    """What is measured and kept."""
    points: int = 30                 # test evaluations at log-spaced steps (plus step 0 and the final step)
    save_predictions: bool = False   # keep each member's final predictions on the test grid
    save_params: bool = False        # keep each member's final parameters (padded, zeros outside true size)
    activations: bool = False        # record activation sizes (RMS over active units, on the test set) at each evaluation
    every: int = 0                   # > 0: also evaluate every this many steps (dense enough for best_test_loss)
    layers: str = "off"              # residual mlp: layer measures of the stream (angles, norms, per-layer loss) on
                                     # a probe batch: "off", "final" (each member's last step) or "every" evaluation


@dataclass
class RunConfig:
    """Where and how the sweep runs."""
    out: str = ""                    # results directory ("" -> runs/<config name>)
    member_chunk: int = 0            # members per compiled call and device (0 = as many as fit in memory)
    shard_members: bool = True      # shard the member axis over all visible devices
    memory_fraction: float = 0.8     # share of device memory the member chunks may fill
    memory_limit_gb: float = 0.0     # device memory to plan for (0: ask the device / host)
    max_padding_waste: float = 1.5   # size buckets (grid.bucket) minimise the estimated seconds, none running more
                                     # than this x the FLOPs its members need (0: one program per group; inf: no
                                     # bound, the cost model alone decides)
    program_seconds: float = 0.0     # bucket cost model: seconds a program costs outside its training loop (0:
                                     # measured once per machine and cached; the saved config records the value used)
    flop_rate: float = 0.0           # bucket cost model: model FLOP/s of the training loop (0: measured likewise)
    compile_cache: bool = True       # keep compiled programs on disk (sweepjax.engine.compile_cache): a rerun,
                                     # resume or other-values run of a sweep skips compiling them
    fit_form: str = "power_law"      # form fitted to median final test loss vs width after the run
    bootstrap: int = 1000            # bootstrap resamples (over seeds) for the exponent's interval
    figures: bool = True             # make the study's figures after the run
    checkpoint_steps: int = 0        # checkpoint every this many steps (0: by time only)
    checkpoint_minutes: float = 10.0 # checkpoint at least this often, in minutes of training (0: off)
    keep_checkpoints: int = 2        # how many recent checkpoints to keep


SECTIONS: dict[str, type] = {
    "task": TaskConfig, "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig, "run": RunConfig,
}

# Allowed values of string keys.
CHOICES: dict[str, tuple[str, ...]] = {   # task.name: any name in sweepjax.tasks.TASKS
    # model.family: any family of sweepjax.models.FAMILIES
    "model.activation": ("silu", "relu", "relu2", "gelu", "tanh"),
    "model.norm": ("none", "rmsnorm", "layernorm"),
    "model.positions": ("learned", "rotary"),
    "model.parameterization": ("sp", "mup"),
    "model.depth_scaling": ("none", "inv_sqrt"),
    "model.init": ("torch", "normal"),
    "model.input": ("affine", "none"),
    "model.head": ("affine", "linear", "none"),
    "train.optimizer": ("adam", "adamw", "sgd", "lbfgs"),
    "train.schedule": ("constant", "cosine", "warmup_cosine", "linear", "wsd"),
    "train.precision": ("float32", "float64", "bf16"),
    "run.fit_form": ("power_law", "power_law_offset"),
    "model.zero_init": ("proj", "head"),     # a list of these
    "eval.layers": ("off", "final", "every"),
}

# Lower bounds of numeric keys: (bound, inclusive).
MINIMUM: dict[str, tuple[float, bool]] = {
    "task.batch_size": (1, True), "task.test_size": (2, True), "task.data_seed": (-1, True),
    "task.dataset_size": (0, True), "eval.every": (0, True),
    "model.width": (1, True), "model.depth": (1, True), "model.mlp_ratio": (1, True),
    "train.seed": (0, True), "train.lr": (0, False), "train.lr_depth_scaling": (0, True), "train.final_lr_fraction": (0, True),
    "train.warmup_fraction": (0, True), "train.decay_fraction": (0, False), "train.weight_decay": (0, True),
    "train.momentum": (0, True),
    "train.lbfgs_memory": (1, True), "train.steps": (1, True), "train.chunk_steps": (1, True),
    "train.divergence_loss": (0, False), "eval.points": (1, True), "run.member_chunk": (0, True),
    "run.bootstrap": (0, True), "run.max_padding_waste": (0, True), "run.checkpoint_steps": (0, True),
    "run.checkpoint_minutes": (0, True), "run.keep_checkpoints": (1, True), "run.memory_fraction": (0, False),
    "run.memory_limit_gb": (0, True), "run.program_seconds": (0, True), "run.flop_rate": (0, True),
    "model.heads": (1, True), "model.head_size": (0, True),
    "model.rope_base": (1, False), "model.base_width": (1, True), "train.adam_b1": (0, True),
    "train.adam_b2": (0, True), "train.adam_eps": (0, True), "model.base_mlp_ratio": (0, True),
    "train.lbfgs_linesearch_steps": (1, True), "train.divergence_factor": (0, True),
}
MAXIMUM: dict[str, float] = {
    "train.final_lr_fraction": 1.0, "train.warmup_fraction": 1.0, "train.decay_fraction": 1.0, "train.momentum": 1.0,
    "model.width": 2**20, "model.depth": 4096, "train.steps": 10**9, "task.batch_size": 10**8,
    "task.test_size": 10**7, "task.dataset_size": 10**9, "model.mlp_ratio": 64, "run.memory_fraction": 1.0,
    "model.heads": 4096, "model.head_size": 2**16,
    "model.base_mlp_ratio": 64, "train.lbfgs_linesearch_steps": 1000,
}
# Float keys that may be inf (no bound).
UNBOUNDED = ("run.max_padding_waste",)
# Upper bounds that are exclusive.
BELOW: dict[str, float] = {"train.adam_b1": 1.0, "train.adam_b2": 1.0}

# Keys a resumed run may change (with --allow-change): they do not change any member's numbers.
RESUME_SAFE_KEYS = ("run.out", "run.compile_cache", "run.fit_form", "run.bootstrap", "run.figures", "run.checkpoint_steps",
                    "run.checkpoint_minutes", "run.keep_checkpoints", "train.chunk_steps")

# Sweep axis aliases: short name -> full key.
AXIS_ALIASES = {"seed": "train.seed", "data_seed": "task.data_seed"}
# Keys whose sweep values are numbers inside one compiled program (everything else is structural);
# a task adds its own (its ``MEMBER_KEYS``): see :func:`member_keys`.
PER_MEMBER_KEYS = ("train.seed", "task.data_seed", "model.width", "model.depth", "train.lr", "model.heads",
                   "model.mlp_ratio", "train.steps", "task.dataset_size")


@dataclass
class Config:
    """A fully resolved config: one value per key, plus the sweep axes (key -> list of values)."""
    task: TaskConfig = field(default_factory=lambda: schema(DEFAULT_TASK).sections["task"]())
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
    sweep: dict[str, list] = field(default_factory=dict)
    name: str = "sweep"

    def get(self, key: str) -> Any:
        """Value of a dotted key such as ``"model.width"``."""
        section, name = key.split(".")
        return getattr(getattr(self, section), name)

    @property
    def schema(self) -> "Schema":
        """The keys and rules of this config's task."""
        return schema(self.task.name)

    def with_values(self, values: dict[str, Any]) -> "Config":
        """A copy with some dotted keys replaced (used to build one member's config)."""
        new = dataclasses.replace(self, **{s: dataclasses.replace(getattr(self, s)) for s in SECTIONS})
        for key, value in values.items():
            section, name = key.split(".")
            setattr(getattr(new, section), name, list(value) if isinstance(value, list) else value)
        return new

    def to_dict(self) -> dict:
        """Plain nested dict (TOML-serialisable) of the resolved config."""
        out = {s: dataclasses.asdict(getattr(self, s)) for s in SECTIONS}
        out["sweep"] = {k: list(v) for k, v in self.sweep.items()}
        return out


DEFAULT_TASK = "regression-1d"


@dataclass(frozen=True)
class Schema:
    """Every key of a config that trains ``task``, with the rules of its values: the tables above
    (CHOICES, MINIMUM, ...) plus the task's own (a task class's tables, keyed ``task.<key>``)."""
    task: str
    sections: dict[str, type]
    choices: dict[str, tuple]
    minimum: dict[str, tuple[float, bool]]
    maximum: dict[str, float]
    below: dict[str, float]
    applies: dict[str, tuple]
    why: dict[str, str]
    member_keys: tuple[str, ...]

    def keys(self) -> list[str]:
        """Every valid dotted key."""
        return [f"{s}.{f.name}" for s, cls in self.sections.items() for f in fields(cls)]

    def field_type(self, key: str) -> Any:
        section, name = key.split(".")
        return {f.name: f.type for f in fields(self.sections[section])}[name]

    def default(self, key: str) -> Any:
        section, name = key.split(".")
        return getattr(self.sections[section](), name)


@functools.lru_cache(maxsize=None)
def schema(task: str) -> Schema:
    """The :class:`Schema` of configs training ``task`` (imports the task's module)."""
    from sweepjax.models import FAMILIES
    from sweepjax.tasks import task_class
    cls = task_class(task)
    choices = {**CHOICES, "model.family": tuple(FAMILIES), **cls.CHOICES}
    predicting = {"task.name": tuple(name for name in TASKS if task_class(name).PREDICTIONS)}
    applies = {**APPLIES, "eval.save_predictions": (predicting,), **cls.APPLIES}
    return Schema(task, {**SECTIONS, "task": cls.Keys}, choices, {**MINIMUM, **cls.MINIMUM}, {**MAXIMUM, **cls.MAXIMUM},
                  {**BELOW, **cls.BELOW}, applies, {**_WHY, **cls.WHY}, PER_MEMBER_KEYS + tuple(cls.MEMBER_KEYS))


def all_keys(task: str | None = None) -> list[str]:
    """Every valid dotted key of a config training ``task`` (None: of any task)."""
    names = [task] if task else list(TASKS)
    return list(dict.fromkeys(k for t in names for k in schema(t).keys()))


def member_keys(cfg: "Config") -> tuple[str, ...]:
    """Keys whose swept values are numbers inside one compiled program: :data:`PER_MEMBER_KEYS` and the task's."""
    return cfg.schema.member_keys


def _fail(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{key} = {value!r}: {allowed}")


def _unknown(key: str, valid: list[str], task: str | None = None) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(valid)}"
    where = f" for task {task!r}" if task and key.removeprefix("sweep.").startswith("task.") else ""
    return ConfigError(f"unknown key {key!r}{where}{hint}")


def coerce(key: str, value: Any, sch: Schema) -> Any:
    """Check one value's type and range for ``key``; return it converted (int -> float where a float is due)."""
    typ = sch.field_type(key)
    if typ in ("list", list):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _fail(key, value, f"must be a list of strings, from: {', '.join(sch.choices[key])}")
        bad = [v for v in value if v not in sch.choices[key]]
        if bad or len(set(value)) != len(value):
            raise _fail(key, value, f"allowed: distinct entries from {', '.join(sch.choices[key])}")
        return sorted(value)
    if typ in ("bool", bool):
        if not isinstance(value, bool):
            raise _fail(key, value, "must be true or false")
    elif typ in ("int", int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _fail(key, value, "must be an integer")
    elif typ in ("float", float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(key, value, "must be a number")
        value = float(value)
        if not math.isfinite(value) and not (key in UNBOUNDED and value == math.inf):
            raise _fail(key, value, "must be finite")
    elif typ in ("str", str):
        if not isinstance(value, str):
            raise _fail(key, value, "must be a string")
        if key in sch.choices and value not in sch.choices[key]:
            raise _fail(key, value, f"allowed: {', '.join(sch.choices[key])}")
    if key in sch.minimum:
        bound, inclusive = sch.minimum[key]
        if value < bound or (value == bound and not inclusive):
            raise _fail(key, value, f"must be {'>=' if inclusive else '>'} {bound:g}")
    if key in sch.maximum and value > sch.maximum[key]:
        raise _fail(key, value, f"must be <= {sch.maximum[key]:g}")
    if key in sch.below and value >= sch.below[key]:
        raise _fail(key, value, f"must be < {sch.below[key]:g}")
    return value


def _expand_axis(key: str, spec: Any, sch: Schema) -> list:
    """Sweep axis values from a list or a generator table ({range}, {logspace}, {powers_of_two})."""
    if isinstance(spec, list):
        values = spec
    elif isinstance(spec, dict):
        if len(spec) != 1:
            raise _fail(f"sweep.{key}", spec, "a table needs exactly one of range, logspace, powers_of_two")
        (kind, args), = spec.items()
        ok_args = isinstance(args, list) and all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
        if kind == "range" and ok_args and len(args) == 2 and all(isinstance(a, int) for a in args):
            values = list(range(args[0], args[1]))
        elif kind == "powers_of_two" and ok_args and len(args) == 2 and all(isinstance(a, int) and a >= 1 for a in args):
            lo, hi = (int(math.log2(a)) for a in args)
            if 2**lo != args[0] or 2**hi != args[1]:
                raise _fail(f"sweep.{key}", spec, "powers_of_two bounds must be powers of two")
            values = [2**e for e in range(lo, hi + 1)]
        elif kind == "logspace" and ok_args and len(args) == 3 and args[0] > 0 and args[1] > 0 and isinstance(args[2], int) and args[2] >= 1:
            lo, hi, n = args
            values = [float(lo * (hi / lo) ** (i / max(n - 1, 1))) for i in range(n)]
            if sch.field_type(key) in ("int", int):
                values = sorted(set(int(round(v)) for v in values))
        else:
            raise _fail(f"sweep.{key}", spec, "use range = [start, stop) of ints, logspace = [lo, hi, n] or powers_of_two = [lo, hi]")
    else:
        raise _fail(f"sweep.{key}", spec, "a sweep axis is a list of values or a generator table")
    if not values:
        raise _fail(f"sweep.{key}", spec, "a sweep axis needs at least one value")
    values = [coerce(key, v, sch) for v in values]
    if len(set(map(repr, values))) != len(values):
        raise _fail(f"sweep.{key}", spec, "a sweep axis must not repeat values")
    return values


def _flatten(table: dict, prefix: str = "") -> dict[str, Any]:
    """{'model': {'width': [..]}} -> {'model.width': [..]} (TOML nests unquoted dotted keys)."""
    out = {}
    for k, v in table.items():
        full = f"{prefix}{k}"
        if isinstance(v, dict) and k in SECTIONS and not prefix:
            out.update(_flatten(v, f"{k}."))
        else:
            out[full] = v
    return out


def dim_name(key: str) -> str:
    """Results dimension name of a sweep key: its last component (``model.width`` -> ``width``)."""
    return key.split(".")[-1]


def parse_override(text: str) -> tuple[str, Any]:
    """``section.key=value`` -> (key, value); the value is read as TOML, falling back to a bare string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected section.key=value")
    key, raw = (s.strip() for s in text.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def build_config(raw: dict, overrides: list[tuple[str, Any]] = (), name: str = "sweep",
                 on_cpu: bool = False, combinations: bool = True) -> Config:
    """Validate a raw TOML dict plus overrides into a :class:`Config`.

    ``[on_cpu]`` entries (``"section.key" = value``) are applied when ``on_cpu`` is true, before
    the command-line overrides, so one config can describe both the GPU-sized and the CPU-sized sweep.
    ``combinations = False`` checks each key alone but leaves :func:`check_combinations` to the caller
    (for a config that is completed before it runs, as the coordinate check adds the muP sweep).
    """
    if not isinstance(raw, dict):
        raise ConfigError("config must be a TOML table")
    raw = dict(raw)
    sweep_raw = raw.pop("sweep", {})
    cpu_raw = raw.pop("on_cpu", {})
    for top in raw:
        if top not in SECTIONS:
            raise _unknown(top, list(SECTIONS) + ["sweep", "on_cpu"])
        if not isinstance(raw[top], dict):
            raise _fail(top, raw[top], "must be a table ([section])")
    for what, table in (("sweep", sweep_raw), ("on_cpu", cpu_raw)):
        if not isinstance(table, dict):
            raise _fail(what, table, "must be a table ([section])")
    values = _flatten(raw)
    for key, value in (list(_flatten(cpu_raw).items()) if on_cpu else []) + list(overrides):
        if key.startswith("sweep.") and value == []:   # drop the axis (from [on_cpu] or --set only)
            dropped = key[len("sweep."):]
            flat = _flatten(sweep_raw)
            full = lambda k: AXIS_ALIASES.get(k, k)
            if full(dropped) not in map(full, flat):
                raise ConfigError(f"{key} = []: drops a sweep axis, but the sweep has no axis {dropped!r} "
                                  f"(axes: {', '.join(flat) or 'none'})")
            sweep_raw = {k: v for k, v in flat.items() if full(k) != full(dropped)}
        elif key.startswith("sweep."):
            sweep_raw = {**sweep_raw, key[len("sweep."):]: value}
        else:
            values[key] = value
    if "name" in _flatten(sweep_raw).get("task", {}) or "task.name" in _flatten(sweep_raw):
        raise ConfigError("sweep.task.name: a sweep trains one task (each task has its own keys); run one sweep per task")
    task = values.get("task.name", DEFAULT_TASK)
    if task not in TASKS:
        raise _fail("task.name", task, f"allowed: {', '.join(TASKS)}")
    sch = schema(task)
    valid = sch.keys()
    cfg = Config(name=name, task=sch.sections["task"]())
    for key, value in values.items():
        if key not in valid:
            raise _unknown(key, valid, task)
        section, attr = key.split(".")
        setattr(getattr(cfg, section), attr, coerce(key, value, sch))
    for key, spec in _flatten(sweep_raw).items():
        full = AXIS_ALIASES.get(key, key)
        if full not in valid:
            raise _unknown(f"sweep.{key}", [f"sweep.{k}" for k in valid + list(AXIS_ALIASES)], task)
        if full in cfg.sweep:
            raise ConfigError(f"sweep.{key}: axis given twice")
        cfg.sweep[full] = _expand_axis(full, spec, sch)
    dims = [dim_name(k) for k in cfg.sweep]
    if len(set(dims)) != len(dims):
        raise ConfigError(f"sweep axes {list(cfg.sweep)} share a short name; results dims must be unique")
    if combinations:
        check_combinations(cfg)
    return cfg


def check_combinations(cfg: Config) -> None:
    """Refuse combinations of values that cannot work together, and keys that would do nothing."""
    for key in cfg.sweep:
        if cfg.get(key) != cfg.schema.default(key):   # a single value given beside the axis would be saved and ignored
            raise ConfigError(f"{key} = {cfg.get(key)!r} and sweep.{key} = {cfg.sweep[key]}: the sweep sets "
                              f"{key}, the single value would be ignored; remove one (to change the axis from "
                              f"[on_cpu] or --set, set \"sweep.{key}\")")
        if key.startswith(("eval.", "run.")):
            raise ConfigError(f"sweep.{key}: eval and run keys apply to the whole sweep (one evaluation "
                              f"schedule, one results file); set a single value")
    from sweepjax.tasks import task_class
    task = task_class(cfg.task.name)
    if "lbfgs" in axis(cfg, "train.optimizer") and (problem := task.not_full_batch(cfg)):
        setting, fix = problem
        raise ConfigError(f"train.optimizer = 'lbfgs' with {setting}: L-BFGS needs a fixed full batch; {fix}")
    task.check(cfg)
    _check_family(cfg)
    _check_applies(cfg)
    _check_mlp_io(cfg)
    if 0 < cfg.run.max_padding_waste < 1:
        raise ConfigError(f"run.max_padding_waste = {cfg.run.max_padding_waste}: must be 0 (no bucketing) or >= 1")


def axis(cfg: Config, key: str) -> list:
    """The values ``key`` takes in the sweep (its one value when it is not swept)."""
    return list(cfg.sweep.get(key, [cfg.get(key)]))


def _check_family(cfg: Config) -> None:
    """Model family, task and their options must fit together (transformers need whole heads)."""
    from sweepjax.tasks import task_class
    families = task_class(cfg.task.name).FAMILIES
    for family in axis(cfg, "model.family"):
        if family not in families:
            raise ConfigError(f"model.family = {family!r} with task.name = {cfg.task.name!r}: this task trains "
                              f"the {' or '.join(families)} family")
    for zero in axis(cfg, "model.zero_init"):
        if "proj" in zero and axis(cfg, "model.family") == ["mlp"] and axis(cfg, "model.residual") == [False]:
            raise ConfigError(f"model.zero_init = {zero}: 'proj' zero-initialises the output projections of "
                              f"residual blocks; a plain MLP has none (set model.residual = true, or drop 'proj')")
        if "head" in zero and axis(cfg, "model.family") == ["transformer"] and axis(cfg, "model.tie_embeddings") == [True]:
            raise ConfigError(f"model.zero_init = {zero} with model.tie_embeddings = true: the readout is the "
                              f"token embedding; a zero head would zero the embeddings too (drop 'head')")
    if "transformer" not in axis(cfg, "model.family"):
        return
    if "mup" in axis(cfg, "model.parameterization"):
        bad = [o for o in axis(cfg, "train.optimizer") if o not in ("adam", "adamw")]
        if bad:
            raise ConfigError(f"model.parameterization = 'mup' with train.optimizer = {bad[0]!r}: the muP rules "
                              f"here are the Adam ones; use adam or adamw")
    rotary = "rotary" in axis(cfg, "model.positions")
    for width in axis(cfg, "model.width"):
        for heads in axis(cfg, "model.heads") if not cfg.model.head_size else [None]:
            size = cfg.model.head_size or width // heads
            if cfg.model.head_size and width % cfg.model.head_size:
                raise ConfigError(f"model.width = {width} with model.head_size = {cfg.model.head_size}: width must "
                                  f"be a multiple of the head size")
            if heads is not None and width % heads:
                raise ConfigError(f"model.width = {width} with model.heads = {heads}: width must be a multiple of "
                                  f"heads (or set model.head_size)")
            if rotary and size % 2:
                raise ConfigError(f"model.positions = 'rotary' with head size {size} (width {width}): rotary "
                                  f"positions need an even head size")


def _check_mlp_io(cfg: Config) -> None:
    """An MLP without input layer or head keeps the task's vector sizes as its stream width."""
    from sweepjax.tasks import task_class
    if "mlp" not in axis(cfg, "model.family"):
        return
    traced = member_keys(cfg)   # per-member numbers cannot change shapes
    swept = {k[len("task."):]: v for k, v in cfg.sweep.items() if k.startswith("task.") and k not in traced}
    ios = [task_class(cfg.task.name).model_io(dataclasses.replace(cfg.task, **dict(zip(swept, combo))))
           for combo in itertools.product(*swept.values())]    # every value of a swept task key
    for key, size, what in (("model.input", "in_dim", "input"), ("model.head", "out_dim", "output")):
        if "none" not in axis(cfg, key):
            continue
        for io, width in itertools.product(ios, axis(cfg, "model.width")):
            if width != io[size]:
                raise ConfigError(f"{key} = 'none' with model.width = {width}: without that layer the stream is "
                                  f"the task's {what} of size {io[size]}; set model.width = {io[size]}"
                                  + (" in every group (a swept task key changes it)" if len(ios) > 1 else ""))
        if False in axis(cfg, "model.residual"):
            raise ConfigError(f"{key} = 'none' with model.residual = false: only the residual MLP (a stream of "
                              f"fixed width) can do without it")
    for zero in axis(cfg, "model.zero_init"):
        if "head" in zero and "none" in axis(cfg, "model.head"):
            raise ConfigError(f"model.zero_init = {zero} with model.head = 'none': there is no head to zero")


# ---- keys that act only in some configs (DESIGN invariant 5: a key does what it says or is refused) ----

@dataclass(frozen=True)
class Above:
    """In a condition of :data:`APPLIES`: every value above ``bound``."""
    bound: float

    def __contains__(self, value: Any) -> bool:
        return value > self.bound


@dataclass(frozen=True)
class Prefix:
    """In a condition of :data:`APPLIES`: every string that starts with ``prefix``."""
    prefix: str

    def __contains__(self, value: Any) -> bool:
        return isinstance(value, str) and value.startswith(self.prefix)


# A condition: key -> the values it must take (a tuple, Above or Prefix); all of them must hold.
Condition = dict[str, "tuple | Above | Prefix"]
_MLP: Condition = {"model.family": ("mlp",)}
_RESIDUAL_MLP: Condition = {"model.family": ("mlp",), "model.residual": (True,)}
_TRANSFORMER: Condition = {"model.family": ("transformer",)}
_MUP: Condition = {**_TRANSFORMER, "model.parameterization": ("mup",)}
_STEPPED: Condition = {"train.optimizer": ("adam", "adamw", "sgd")}   # not lbfgs (line search)
_ADAM: Condition = {"train.optimizer": ("adam", "adamw")}
_LBFGS: Condition = {"train.optimizer": ("lbfgs",)}

# Where a key has an effect: in a config that meets ANY of its conditions. Keys not listed act in
# every config. A task adds entries for its own keys (its ``APPLIES``). A key set to a non-default value, or swept, is refused when no structural group of
# the sweep meets any of its conditions (checked over every combination of the condition keys' values).
APPLIES: dict[str, tuple[Condition, ...]] = {
    "model.residual": (_MLP,),
    "model.init": (_MLP,),
    "model.input": (_RESIDUAL_MLP,),
    "model.head": (_MLP,),
    "eval.layers": (_RESIDUAL_MLP,),
    **{f"model.{k}": (_RESIDUAL_MLP, _TRANSFORMER) for k in ("mlp_ratio", "norm", "depth_scaling")},
    **{f"model.{k}": (_TRANSFORMER,) for k in ("head_size", "positions", "tie_embeddings", "parameterization")},
    "model.heads": ({**_TRANSFORMER, "model.head_size": (0,)},),
    "model.rope_base": ({**_TRANSFORMER, "model.positions": ("rotary",)},),

    "model.base_width": (_MUP,),
    "model.base_mlp_ratio": (_MUP,),
    "train.lr": (_STEPPED,),
    "train.lr_depth_scaling": (_STEPPED,),
    "train.schedule": (_STEPPED,),
    "train.final_lr_fraction": ({**_STEPPED, "train.schedule": ("cosine", "warmup_cosine", "linear", "wsd")},),
    "train.warmup_fraction": ({**_STEPPED, "train.schedule": ("warmup_cosine",)},),
    "train.decay_fraction": ({**_STEPPED, "train.schedule": ("wsd",)},),
    "train.momentum": ({"train.optimizer": ("sgd",)},),
    "train.weight_decay": ({"train.optimizer": ("adamw",)},),
    "train.decay_all": ({"train.optimizer": ("adamw",), "train.weight_decay": Above(0)},),
    **{f"train.{k}": (_ADAM,) for k in ("adam_b1", "adam_b2", "adam_eps")},
    **{f"train.{k}": (_LBFGS,) for k in ("lbfgs_memory", "lbfgs_linesearch_steps")},
    **{f"run.{k}": ({"run.max_padding_waste": Above(0)},) for k in ("program_seconds", "flop_rate")},
}
# Why, where it helps the reader of the error.
_WHY = {
    "train.lr": "L-BFGS takes its step length from a line search",
    "train.schedule": "L-BFGS takes its step length from a line search",
    "model.heads": "heads = width / head_size",
    "run.program_seconds": "each structural group is one program, there is no split to cost",
    "run.flop_rate": "each structural group is one program, there is no split to cost",
    "eval.save_predictions": "predictions are kept for tasks whose members combine into ensembles (a task's PREDICTIONS)",
}


def default(key: str, task: str = DEFAULT_TASK) -> Any:
    """The default value of ``key`` in configs training ``task``."""
    return schema(task).default(key)


def applies(key: str, cfg: Config) -> bool:
    """Whether ``key`` has an effect in at least one structural group of ``cfg``'s sweep (see :data:`APPLIES`)."""
    conditions = cfg.schema.applies.get(key)
    if conditions is None:
        return True
    keys = list(dict.fromkeys(k for c in conditions for k in c))
    for values in itertools.product(*(axis(cfg, k) for k in keys)):
        group = dict(zip(keys, values))
        if any(all(group[k] in allowed for k, allowed in c.items()) for c in conditions):
            return True
    return False


def _show(key: str, values: Any) -> str:
    if isinstance(values, Above):
        return f"{key} > {values.bound:g}"
    if isinstance(values, Prefix):
        return f"{key} = '{values.prefix}...'"
    return f"{key} = {values[0]!r}" if len(values) == 1 else f"{key} in {list(values)}"


def _check_applies(cfg: Config) -> None:
    """Refuse a key that is set (non-default or swept) where it would have no effect."""
    sch = cfg.schema
    for key, conditions in sch.applies.items():
        if (key not in cfg.sweep and cfg.get(key) == sch.default(key)) or applies(key, cfg):
            continue
        keys = dict.fromkeys(k for c in conditions for k in c)
        blocking = [k for k in keys if any(v not in c[k] for c in conditions if k in c for v in axis(cfg, k))]
        where = ", ".join(_show(k, axis(cfg, k)) for k in blocking)
        only = "; or ".join(" and ".join(_show(k, allowed) for k, allowed in c.items()) for c in conditions)
        value = f"sweep.{key} = {cfg.sweep[key]}" if key in cfg.sweep else f"{key} = {cfg.get(key)!r}"
        why = f": {sch.why[key]}" if key in sch.why else ""
        raise ConfigError(f"{value}: has no effect with {where} (only with {only}){why}; remove it "
                          f"(default {sch.default(key)!r})")


def read_toml(path: str | Path) -> dict:
    """The raw table of a TOML config file (ConfigError, one line, if missing, not UTF-8 or not TOML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} not found")
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {str(path)!r} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {e}") from None


def load_config(path: str | Path, overrides: list[str] = (), on_cpu: bool = False, combinations: bool = True) -> Config:
    """Read, override and validate a TOML config file."""
    path = Path(path)
    raw = read_toml(path)
    return build_config(raw, [parse_override(o) for o in overrides], name=path.stem, on_cpu=on_cpu,
                        combinations=combinations)


def differences(a: Config, b: Config) -> dict[str, tuple[Any, Any]]:
    """Keys (``section.key`` or ``sweep.key``) whose values differ: key -> (value in a, value in b)."""
    da, db = a.to_dict(), b.to_dict()
    out = {}
    for section in da.keys() | db.keys():
        for key in da.get(section, {}).keys() | db.get(section, {}).keys():
            va, vb = da.get(section, {}).get(key), db.get(section, {}).get(key)
            if va != vb:
                out[f"{section}.{key}"] = (va, vb)
    return dict(sorted(out.items()))


def to_toml(cfg: Config) -> str:
    """The resolved config as TOML text (saved beside the results)."""
    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, float):
            return repr(v)
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return str(v)
    lines = [f"# resolved config of sweep {cfg.name!r}"]
    for section, table in cfg.to_dict().items():
        lines.append(f"\n[{section}]")
        lines += [f'"{k}" = {fmt(v)}' if "." in k else f"{k} = {fmt(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"
