"""Every config key changes results or is refused (DESIGN invariant 5).

The keys come from the schema (``all_keys()``), so a new key fails ``test_every_key_is_placed`` until
it is put in one of the tables below: checked by a run (CHECKED, MEMBER_SWEEPS, ADDS_VARIABLE) or
exempt with a reason and the test that covers it (EXEMPT). Runs are tiny (width 4, 4 steps) and
cached: one baseline per base config, per-member keys compared inside one program, and a persistent
compilation cache so identical programs (inits, mostly) compile once.
"""
from __future__ import annotations

import re
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
from jax.experimental.compilation_cache import compilation_cache

from sweepjax.config import TASKS, Config, ConfigError, all_keys, applies, build_config, default, dim_name, schema
from sweepjax.run import run_sweep

# Tiny sizes, each used where it has an effect (so a base never sets a key that would be refused).
TINY = {"task.batch_size": 8, "task.test_size": 8, "task.grid_size": 9, "task.vocab": 4, "task.context": 4,
        "model.width": 4, "model.heads": 1, "train.steps": 4, "train.chunk_steps": 4,
        "train.lr": 1e-2, "eval.points": 2}


def swept(axes: dict[str, list]) -> dict[str, tuple]:
    """Sweep axes as entries of a base config: ``sweep.<key>`` -> values."""
    return {f"sweep.{k}": tuple(v) for k, v in axes.items()}


# Base configs (on top of TINY).
MLP: dict = {}
TRANSFORMER = {"task.name": "markov", "model.family": "transformer"}
GRID = {"task.train_data": "grid"}
RESIDUAL = {"model.residual": True, "model.depth": 2}   # depth 2: 1/sqrt(depth) is not 1
WARMUP = {"train.schedule": "warmup_cosine"}
SGD = {"train.optimizer": "sgd"}
ADAMW = {"train.optimizer": "adamw"}
# 8 seeds: for some of them the line search must backtrack more than once within 4 steps.
LBFGS = {**GRID, "train.optimizer": "lbfgs", **swept({"train.seed": range(8)})}
ROTARY = {**TRANSFORMER, "model.positions": "rotary"}
MUP = {**TRANSFORMER, "model.parameterization": "mup"}
SPARSE = {"task.name": "sparse-parity", "task.n_tasks": 4, "task.n_bits": 6}   # test_size 8: 2 per subtask
TEACHER = {"task.name": "teacher", "task.teacher_depth": 2, "task.teacher_width": 4, "task.teacher_hidden": 4,
           **RESIDUAL}
TEACHER_MSE = {**TEACHER, "task.target": "mse"}
GRAPH = {"task.name": "graph-walk", "model.family": "transformer", "task.nodes": 12, "task.edges": 20}
TEXT = {"task.name": "text", "model.family": "transformer"}
# Paths relative to the directory of the `generators` fixture (test_key_changes_results runs there).
SAMPLED = {**TEXT, "task.source": "sampled:", "task.generator": "generator-0", "task.pool_size": 64}

# key -> (base where it acts, a non-default value[, keys that must change with it]): the run differs from the base's.
CHECKED: dict[str, tuple] = {
    "task.name": (MLP, "markov", {"model.family": "transformer"}),
    "model.family": (MLP, "transformer", {"task.name": "markov"}),
    "task.function": (MLP, "sin"),
    "task.power": (MLP, 3.0),
    "task.low": (MLP, -1.0),
    "task.high": (MLP, 1.0),
    "task.train_data": (MLP, "grid"),
    "task.batch_size": (MLP, 16),
    "task.grid_size": (GRID, 5),
    "task.test_size": (MLP, 16),
    "task.vocab": (TRANSFORMER, 6),
    "task.context": (TRANSFORMER, 6),
    "task.chain_seed": (TRANSFORMER, 1),
    "task.sparsity": (TRANSFORMER, 0.5),
    "task.temperature": (TRANSFORMER, 0.3),
    "task.graph": (GRAPH, "barabasi-albert"),
    "task.nodes": (GRAPH, 10),
    "task.edges": (GRAPH, 30),
    "task.graph_seed": (GRAPH, 1),
    "task.bias": (GRAPH, 1.0),
    "task.source": (TEXT, "bigram"),
    "task.generator": (SAMPLED, "generator-1"),  # another seed's generator: another pool
    "task.pool_size": (SAMPLED, 48),              # 4 steps of 8 read from a permutation of 48 sequences, not 64
    "model.activation": (MLP, "relu"),
    "model.residual": (MLP, True),
    "model.norm": (RESIDUAL, "rmsnorm"),
    "model.depth_scaling": (RESIDUAL, "inv_sqrt"),
    "model.init": (MLP, "normal"),
    "model.head_size": (TRANSFORMER, 2),
    "model.positions": (TRANSFORMER, "rotary"),
    "model.rope_base": (ROTARY, 2.0),          # head size 4: two frequencies (with 2 there is only base^0)
    "model.tie_embeddings": (TRANSFORMER, True),
    "model.parameterization": (TRANSFORMER, "mup"),
    "model.base_width": (MUP, 8),
    "model.zero_init": (MLP, ("head",)),
    "model.base_mlp_ratio": (MUP, 2),
    "train.optimizer": (MLP, "sgd"),
    "train.schedule": (MLP, "warmup_cosine"),  # with warmup_fraction 0: cosine
    "train.final_lr_fraction": (WARMUP, 0.5),
    "train.warmup_fraction": (WARMUP, 0.5),
    "train.decay_fraction": ({"train.schedule": "wsd"}, 0.5),   # 4 steps: 0.2 decays after the last update
    "train.lr_depth_scaling": (RESIDUAL, 3.0),
    "train.weight_decay": (ADAMW, 0.5),
    "train.momentum": (SGD, 0.9),
    "train.lbfgs_memory": (LBFGS, 1),
    "train.lbfgs_linesearch_steps": (LBFGS, 1),
    "train.steps": (MLP, 5),
    "train.precision": (MLP, "bf16"),
    "train.adam_b1": (MLP, 0.5),
    "train.adam_b2": (MLP, 0.5),
    "train.adam_eps": (MLP, 0.1),
    "train.divergence_loss": (MLP, 1e-3),      # every member flagged at step 0
    "train.divergence_factor": (MLP, 1.5),     # fresh batches of 8: the train loss soon exceeds 1.5 x the first
    "train.decay_all": ({**ADAMW, "train.weight_decay": 0.5}, True),
    "eval.points": (MLP, 3),
    "eval.every": (MLP, 1),
    "task.n_tasks": (SPARSE, 2),
    "task.n_bits": (SPARSE, 5),
    "task.k": (SPARSE, 2),
    "task.subsets_seed": (SPARSE, 1),
    "task.teacher": (TEACHER, "tied"),
    "task.teacher_depth": (TEACHER, 3),
    "task.teacher_width": (TEACHER, 5),
    "task.teacher_hidden": (TEACHER, 5),
    "task.n_classes": (TEACHER, 4),
    "task.teacher_seed": (TEACHER, 1),
    "task.target": (TEACHER, "mse"),
    "task.head_init": (TEACHER, "normal"),
    "task.student_head": (TEACHER, "teacher", {"model.head": "none"}),   # width 4 = teacher_width
    "model.input": (TEACHER, "none"),          # width 4 = teacher_width: h_0 = RMSNorm(x) instead of W x + b
    "model.head": (MLP, "linear"),
    "eval.layers": (RESIDUAL, "final"),        # adds the layer_* variables
}
# Per-member keys, checked inside one program per base: (base, {key: [first value, other value]}).
MEMBER_SWEEPS = [
    (MLP, {"train.seed": [0, 1], "task.data_seed": [-1, 7], "train.lr": [1e-2, 3e-2], "model.width": [4, 3, 2],
           "model.depth": [1, 2], "task.dataset_size": [0, 3]}),
    (TRANSFORMER, {"model.heads": [1, 2], "model.mlp_ratio": [1, 2]}),
    (SPARSE, {"task.zipf_exponent": [1.4, 0.5]}),
]
# Keys that add result variables (checked together in one run): key -> a variable it adds.
ADDS_VARIABLE = {"eval.save_predictions": "predictions", "eval.save_params": "param.w_in",
                 "eval.activations": "activation_rms"}
_SAME = "test_keys.py::test_operational_keys_leave_numbers_unchanged"
_CLI = "test_keys.py::test_run_keys_reach_the_cli"
# Keys that by design change no member's numbers: key -> (what it does, the test that covers it).
EXEMPT = {
    "train.chunk_steps": ("steps per compiled call (progress, checkpoints)", _SAME),
    "run.member_chunk": ("members per compiled call", _SAME),
    "run.shard_members": ("member axis sharded over devices", _SAME),
    "run.memory_fraction": ("memory plan: members per call", _SAME),
    "run.memory_limit_gb": ("memory plan: members per call",
                            "test_engine.py::test_memory_plan_splits_members_without_changing_results"),
    "run.max_padding_waste": ("size buckets: programs per group",
                              "test_engine.py::test_bucketing_leaves_results_unchanged"),
    "run.program_seconds": ("size buckets: the cost model's price of a program",
                            "test_grid.py::test_cost_settings_leave_results_unchanged"),
    "run.flop_rate": ("size buckets: the cost model's price of padded work",
                      "test_grid.py::test_cost_settings_leave_results_unchanged"),
    "run.compile_cache": ("compiled programs kept on disk",
                          "test_compile_cache.py::test_a_second_run_reads_its_programs_back_with_the_same_results"),
    "run.out": ("results directory", _CLI),
    "run.fit_form": ("form of the width fit after the run", _CLI),
    "run.bootstrap": ("resamples of the fit's interval", _CLI),
    "run.figures": ("figures after the run", _CLI),
    "run.checkpoint_steps": ("checkpoint interval", _CLI),
    "run.checkpoint_minutes": ("checkpoint interval", _CLI),
    "run.keep_checkpoints": ("checkpoints kept", _CLI),
}
MEMBER_KEYS = {k: v for _, axes in MEMBER_SWEEPS for k, v in axes.items()}
# Values the refusal test gives exempt keys where they have no effect (others: True).
EXEMPT_VALUES = {"run.program_seconds": 2.0, "run.flop_rate": 1e9}


@pytest.fixture(scope="module", autouse=True)
def compile_cache(tmp_path_factory):
    """A persistent compilation cache for this module: identical programs (inits, mostly) compile once."""
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    old = {n: getattr(jax.config, n) for n in names}
    for n, v in zip(names, (str(tmp_path_factory.mktemp("jax_cache")), 0, 0)):
        jax.config.update(n, v)
    compilation_cache.reset_cache()
    yield
    for n, v in old.items():
        jax.config.update(n, v)
    compilation_cache.reset_cache()


def task_of(base: dict) -> str:
    return base.get("task.name", "regression-1d")


def settings(base: dict, change: dict | None = None) -> dict[str, Any]:
    """The TINY values that act in this config and are not swept, then ``base``, then ``change`` (dotted key -> value)."""
    over = {**base, **(change or {})}
    keys = set(schema(task_of(over)).keys())
    tiny = {k: v for k, v in TINY.items() if k in keys}
    probe = Config(task=schema(task_of(over)).sections["task"]()).with_values(
        {k: v for k, v in {**tiny, **over}.items() if not k.startswith("sweep.")})
    probe.sweep = {k[len("sweep."):]: list(v) for k, v in over.items() if k.startswith("sweep.")}
    return {**{k: v for k, v in tiny.items() if k not in over and f"sweep.{k}" not in over and applies(k, probe)},
            **over}   # a TINY value beside an axis of the same key would be refused (the sweep sets it)


def config(base: dict, change: dict | None = None):
    """The validated config of ``settings(base, change)``."""
    values = settings(base, change)
    return build_config({}, [(k, list(v) if isinstance(v, tuple) else v) for k, v in values.items()])


@lru_cache(maxsize=None)
def _run(frozen: tuple):
    return run_sweep(config(dict(frozen)), log=None)[0]


def run(base: dict, change: dict | None = None):
    """Results of a tiny run (cached by its settings)."""
    return _run(tuple(sorted(settings(base, change).items())))


def changed(a, b) -> bool:
    """Whether two results differ beyond float rounding: variables, curves or divergence."""
    if set(a.data_vars) != set(b.data_vars):
        return True
    for k in ("train_loss", "test_loss", "diverged_step"):
        x, y = np.asarray(a[k].values, float), np.asarray(b[k].values, float)
        if x.shape != y.shape or not np.allclose(x, y, rtol=1e-5, atol=0, equal_nan=True):
            return True
    return False


def checked_value(key: str) -> Any:
    """The non-default value each key is checked with."""
    if key in CHECKED:
        return CHECKED[key][1]
    return MEMBER_KEYS[key][1] if key in MEMBER_KEYS else EXEMPT_VALUES.get(key, True)


def checked_task(key: str) -> str:
    """The task of the base config a key is checked in."""
    if key in CHECKED:
        return task_of(CHECKED[key][0])
    return task_of(next((b for b, a in MEMBER_SWEEPS if key in a), MLP))


def test_every_key_is_placed():
    """Each key of the schema is in exactly one table: checked by a run, or exempt with its covering test."""
    tables = [set(CHECKED), set(MEMBER_KEYS), set(ADDS_VARIABLE), set(EXEMPT)]
    assert sum(map(len, tables)) == len(set().union(*tables)), "a key is in two tables"
    assert set().union(*tables) == set(all_keys())
    for key in CHECKED.keys() | MEMBER_KEYS.keys():
        value = checked_value(key)
        assert (list(value) if isinstance(value, tuple) else value) != default(key, checked_task(key)), key
    for key, (_, test) in EXEMPT.items():
        module, name = test.split("::")
        assert f"def {name}(" in (Path(__file__).parent / module).read_text(), (key, test)


@pytest.fixture(scope="module")
def generators(tmp_path_factory):
    """The directory of SAMPLED's generators: generator-0 and generator-1, tiny transformers trained on the
    corpus (context 4, width 4, 4 steps; seeds 0 and 1), saved with their parameters."""
    from sweepjax.run import run as run_config
    root = tmp_path_factory.mktemp("generators")
    for seed in (0, 1):
        run_config({"task": {"name": "text", "context": 4, "batch_size": 8, "test_size": 8},
                    "model": {"family": "transformer", "heads": 1},
                    "train": {"steps": 4, "chunk_steps": 4, "lr": 1e-2, "seed": seed},
                    "eval": {"points": 2, "save_params": True}, "run": {"figures": False, "bootstrap": 0},
                    "sweep": {"model.width": [4]}}, out=root / f"generator-{seed}", progress=False)
    return root


@pytest.mark.parametrize("key", sorted(CHECKED))
def test_key_changes_results(key, request, monkeypatch):
    base, value, *also = CHECKED[key]
    if "task.generator" in base:
        monkeypatch.chdir(request.getfixturevalue("generators"))
    change = {key: value, **(also[0] if also else {})}
    assert applies(key, config(base)), f"{key} does not act in its base config"
    assert changed(run(base), run(base, change)), f"{key} = {value!r} left every number unchanged"


@pytest.mark.parametrize("key", sorted(MEMBER_KEYS))
def test_per_member_key_changes_results(key):
    base, axes = next((b, a) for b, a in MEMBER_SWEEPS if key in a)
    ds = run({**base, **swept(axes)})
    first = {dim_name(k): v[0] for k, v in axes.items()}
    other = {**first, dim_name(key): axes[key][1]}
    assert changed(ds.sel(first), ds.sel(other)), f"{key}: members {first} and {other} are equal"


def test_eval_keys_add_their_variables():
    ds = run(MLP, {k: True for k in ADDS_VARIABLE})
    for key, variable in ADDS_VARIABLE.items():
        assert variable in ds and variable not in run(MLP), key


# Bases tried, in order, for a config where a key has no effect.
ELSEWHERE = [MLP, TRANSFORMER, LBFGS, TEACHER_MSE, {**SPARSE, "task.n_tasks": 1}, GRAPH,
             {"run.max_padding_waste": 0.0}, TEXT]


CONDITIONAL = sorted({k for t in TASKS for k in schema(t).applies})


@pytest.mark.parametrize("key", CONDITIONAL)
def test_key_without_effect_is_refused(key):
    """Set where it does nothing, the key is refused with one line naming it, its value and the fix."""
    base = next(b for b in ELSEWHERE if key in schema(task_of(b)).keys() and not applies(key, config(b)))
    value = checked_value(key)
    with pytest.raises(ConfigError) as err:
        config(base, {key: value})
    message = str(err.value)
    assert message.startswith(f"{key} = {list(value) if isinstance(value, tuple) else value!r}: has no effect with ") and re.search(r"; remove it \(default .+\)$", message)
    assert "\n" not in message


def test_operational_keys_leave_numbers_unchanged():
    """Keys that only change how members are run (calls, chunks, devices, memory) change no number."""
    base, axes = MEMBER_SWEEPS[0]
    ops = {"run.member_chunk": 16, "run.shard_members": False, "run.memory_fraction": 0.5, "train.chunk_steps": 3}
    assert set(ops) <= {k for k, (_, test) in EXEMPT.items() if test == _SAME}
    a, b = run({**base, **swept(axes)}), run({**base, **swept(axes)}, ops)
    for k in ("train_loss", "test_loss", "diverged_step"):
        np.testing.assert_allclose(b[k].values, a[k].values, rtol=1e-5, err_msg=k)


def test_run_keys_reach_the_cli(tmp_path, monkeypatch):
    """run.out, the fit keys, figures and the checkpoint keys reach what the CLI does with them."""
    from sweepjax.cli import main
    from sweepjax.engine import checkpoint

    made = []

    class Recorder(checkpoint.Store):
        def __init__(self, *args, **kw):
            made.append(kw)
            super().__init__(*args, **kw)

    monkeypatch.setattr(checkpoint, "Store", Recorder)
    out = tmp_path / "out"
    base, axes = MEMBER_SWEEPS[0]     # the program of test_per_member_key_changes_results (compiled once)
    values = {**settings({**base, **swept(axes)}), "run.out": str(out), "run.fit_form": "power_law_offset",
              "run.bootstrap": 0, "run.figures": False, "run.checkpoint_steps": 2, "run.checkpoint_minutes": 0.5,
              "run.keep_checkpoints": 1}
    path = tmp_path / "c.toml"
    path.write_text("")
    assert main(["run", str(path)] + [f"--set={k}={json.dumps(v)}" for k, v in values.items()]) == 0  # tuples: lists
    assert (out / "results.nc").is_file() and not (out / "figures").exists()
    rows = json.loads((out / "fit.json").read_text())
    assert rows and all(r["form"] == "power_law_offset" and r["alpha_ci"] is None for r in rows)
    assert made == [{"keep": 1, "every_steps": 2, "every_minutes": 0.5}]
