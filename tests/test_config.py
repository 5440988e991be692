"""Config validation: every class of user mistake gives one line naming the key, and exit code 2."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sweepjax.cli import main
from fractions import Fraction
from pathlib import Path

import numpy as np

from sweepjax.config import ConfigError, build_config, load_config, parse_override, to_toml
from sweepjax.tasks.regression import grids_share_point

BAD = {
    "unknown key": ("[model]\nwidht = 4\n", "did you mean 'model.width'"),
    "unknown section": ("[modle]\nwidth = 4\n", "did you mean 'model'"),
    "unknown sweep key": ('[sweep]\n"model.widths" = [2, 4]\n', "did you mean 'sweep.model.width'"),
    "wrong type": ('[model]\nwidth = "big"\n', "model.width = 'big': must be an integer"),
    "bool for int": ("[train]\nsteps = true\n", "train.steps = True: must be an integer"),
    "width < 1": ("[model]\nwidth = 0\n", "model.width = 0: must be >= 1"),
    "negative lr": ("[train]\nlr = -0.1\n", "train.lr = -0.1: must be > 0"),
    "bad choice": ('[model]\nactivation = "swish"\n', "allowed: silu, relu, relu2, gelu, tanh"),
    "empty axis": ('[sweep]\n"model.width" = []\n', "needs at least one value"),
    "bad axis value": ('[sweep]\n"model.width" = [4, -2]\n', "model.width = -2: must be >= 1"),
    "repeated axis value": ("[sweep]\nseed = [1, 1]\n", "must not repeat"),
    "bad generator": ('[sweep]\n"model.width" = {powers_of_two = [3, 64]}\n', "powers of two"),
    "incompatible": ('[task]\ntrain_data = "fresh"\n[train]\noptimizer = "lbfgs"\n', "needs a fixed full batch"),
    "interval": ("[task]\nlow = 2.0\nhigh = -2.0\n", "need low < high"),
    "not toml": ("[model\nwidth = 4\n", "is not valid TOML"),
    "section not table": ("model = 3\n", "model = 3: must be a table"),
    "huge": ("[model]\nwidth = 100000000\n", "must be <= "),
    "negative steps": ("[train]\nsteps = -5\n", "train.steps = -5: must be >= 1"),
    "negative batch": ("[task]\nbatch_size = -1\n", "task.batch_size = -1: must be >= 1"),
    "zero depth": ("[model]\ndepth = 0\n", "model.depth = 0: must be >= 1"),
    "nan lr": ("[train]\nlr = nan\n", "must be finite"),
    "inf loss cap": ("[train]\ndivergence_loss = inf\n", "must be finite"),
    "list for scalar": ("[model]\nwidth = [4, 8]\n", "must be an integer"),
    "table for scalar": ("[model]\nwidth = {a = 1}\n", "must be an integer"),
    "deeply nested junk": ("[model]\nwidth = {a = {b = {c = {d = [[[1]]]}}}}\n", "must be an integer"),
    "nested junk in sweep": ('[sweep]\n"model.width" = {a = {b = 1}}\n', "use range = [start, stop)"),
    "axis not a list": ('[sweep]\n"model.width" = 8\n', "a list of values or a generator"),
    "string axis values": ('[sweep]\n"model.width" = ["8"]\n', "must be an integer"),
    "empty range": ("[sweep]\nseed = {range = [5, 5]}\n", "needs at least one value"),
    "bad logspace": ('[sweep]\n"train.lr" = {logspace = [-1, 1, 3]}\n', "logspace"),
    "bad activation in sweep": ('[sweep]\n"model.activation" = ["silu", "swish"]\n', "allowed: silu"),
    "fraction above one": ("[train]\nwarmup_fraction = 1.5\n", "must be <= 1"),
    "unknown optimizer": ('[train]\noptimizer = "adamax"\n', "allowed: adam, adamw, sgd, lbfgs"),
    "padding waste below one": ("[run]\nmax_padding_waste = 0.5\n", "must be 0 (no bucketing) or >= 1"),
    "sweep of lbfgs with fresh data": ('[sweep]\n"train.optimizer" = ["adam", "lbfgs"]\n', "needs a fixed full batch"),
    "sweep section not table": ("sweep = [1, 2]\n", "sweep = [1, 2]: must be a table"),
    "top-level scalar": ("width = 4\n", "unknown key 'width'"),
    "too big for memory": ('[model]\nresidual = true\nwidth = 1048576\nmlp_ratio = 64\ndepth = 4096\n', "GiB, more than"),
    "momentum without sgd": ("[train]\nmomentum = 0.9\n",
                             "train.momentum = 0.9: has no effect with train.optimizer = 'adam' (only with "
                             "train.optimizer = 'sgd'); remove it (default 0.0)"),
    "swept momentum without sgd": ('[sweep]\n"train.momentum" = [0.5, 0.9]\n',
                                   "sweep.train.momentum = [0.5, 0.9]: has no effect"),
    "mup for an mlp": ('[model]\nparameterization = "mup"\n', "has no effect with model.family = 'mlp'"),
    "lr with lbfgs": ('[task]\ntrain_data = "grid"\ntest_size = 1000\n[train]\noptimizer = "lbfgs"\nlr = 0.01\n',
                      "train.lr = 0.01: has no effect with train.optimizer = 'lbfgs'"),
    "batch size with grid data": ('[task]\ntrain_data = "grid"\ntest_size = 1000\nbatch_size = 64\n',
                                  "task.batch_size = 64: has no effect with task.train_data = 'grid'"),
    "test grid on training grid": ('[task]\ntrain_data = "grid"\ngrid_size = 201\ntest_size = 1001\n',
                                   "use task.test_size = 1000"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_config_one_line_exit_2(name, tmp_path, capsys):
    text, expected = BAD[name]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code = main(["run", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and "\n" not in err, err
    assert expected in err, err
    assert not (tmp_path / "out").exists()


def test_bad_override_and_missing_file(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text("[model]\nwidth = 4\n")
    assert main(["run", str(good), "--set", "train.lr=-1"]) == 2
    assert "train.lr = -1.0: must be > 0" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_corpus_is_large():
    assert len(BAD) >= 30


def test_unwritable_output_dir(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere; the permission check cannot fire")
    good = tmp_path / "good.toml"
    good.write_text("[model]\nwidth = 4\n")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    assert main(["run", str(good), "--out", str(locked / "out")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_output_under_a_file(tmp_path, capsys):
    """An --out whose parent is a file cannot be created: one line, exit 2."""
    good = tmp_path / "good.toml"
    good.write_text("[model]\nwidth = 4\n")
    (tmp_path / "file").write_text("x")
    assert main(["run", str(good), "--out", str(tmp_path / "file" / "out")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_non_utf8_and_output_is_a_file(tmp_path, capsys):
    bad = tmp_path / "bytes.toml"
    bad.write_bytes(b"[model]\nwidth = \xff\xfe\n")
    assert main(["run", str(bad)]) == 2
    assert "not UTF-8" in capsys.readouterr().err
    good = tmp_path / "good.toml"
    good.write_text("[model]\nwidth = 4\n")
    (tmp_path / "file").write_text("x")
    assert main(["run", str(good), "--out", str(tmp_path / "file")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_console_script_no_traceback(tmp_path):
    """The installed command itself: one line on stderr, exit 2."""
    path = tmp_path / "bad.toml"
    path.write_text("[train]\nlr = -1\n")
    proc = subprocess.run([sys.executable, "-m", "sweepjax.cli", "run", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: train.lr = -1.0: must be > 0"]


def test_overrides_generators_and_on_cpu(tmp_path):
    raw = {"model": {"depth": 2}, "sweep": {"model.width": {"powers_of_two": [2, 16]}, "seed": {"range": [0, 3]},
                                            "train.lr": {"logspace": [1e-3, 1e-1, 3]}},
           "on_cpu": {"train.steps": 7, "sweep.seed": [0]}}
    cfg = build_config(raw, [parse_override("train.steps=11")], on_cpu=True)
    assert cfg.sweep["model.width"] == [2, 4, 8, 16]
    assert cfg.sweep["train.seed"] == [0]          # [on_cpu] replaced the axis
    assert cfg.train.steps == 11                   # --set wins over [on_cpu]
    assert cfg.sweep["train.lr"] == pytest.approx([1e-3, 1e-2, 1e-1])
    gpu = build_config(raw, on_cpu=False)
    assert gpu.sweep["train.seed"] == [0, 1, 2] and gpu.train.steps == 1000
    # The resolved config round-trips through its TOML text.
    path = tmp_path / "resolved.toml"
    path.write_text(to_toml(cfg))
    again = load_config(path)
    assert again.to_dict() == cfg.to_dict()


MARKOV = {"task": {"name": "markov"}, "model": {"family": "transformer"}}
GRID = {"task": {"train_data": "grid", "test_size": 1000}}
# Known keys that would do nothing in these configs (pinned here, independently of config.APPLIES).
DEAD = [
    ({"model": {"parameterization": "mup"}}, "model.parameterization"),
    ({**GRID, "train": {"optimizer": "lbfgs", "lr": 0.1}}, "train.lr"),
    ({**GRID, "train": {"optimizer": "lbfgs", "schedule": "cosine"}}, "train.schedule"),
    ({"model": {"family": "transformer", "head_size": 8, "heads": 2}, "task": {"name": "markov"}}, "model.heads"),
    ({"train": {"weight_decay": 0.1}}, "train.weight_decay"),
    ({"train": {"optimizer": "sgd", "adam_b2": 0.99}}, "train.adam_b2"),
    ({"train": {"optimizer": "adamw", "decay_all": True}}, "train.decay_all"),
    ({"train": {"lbfgs_memory": 3}}, "train.lbfgs_memory"),
    ({"train": {"final_lr_fraction": 0.1}}, "train.final_lr_fraction"),
    ({"train": {"schedule": "cosine", "warmup_fraction": 0.1}}, "train.warmup_fraction"),
    ({"task": {"grid_size": 101}}, "task.grid_size"),
    ({"model": {"mlp_ratio": 4, "norm": "rmsnorm"}}, "model.mlp_ratio"),
    ({"model": {"depth_scaling": "inv_sqrt"}}, "model.depth_scaling"),
    ({"model": {"rope_base": 100.0}}, "model.rope_base"),
    ({"model": {"family": "transformer", "rope_base": 100.0}, "task": {"name": "markov"}}, "model.rope_base"),
    ({**MARKOV, "model": {"family": "transformer", "residual": True}}, "model.residual"),
    ({**MARKOV, "model": {"family": "transformer", "init": "normal"}}, "model.init"),
    ({"model": {"family": "transformer", "base_width": 16}, "task": {"name": "markov"}}, "model.base_width"),
    ({"task": {"train_data": "grid", "test_size": 1000, "dataset_size": 10}}, "task.dataset_size"),
    ({"task": {"train_data": "grid", "test_size": 1000, "data_seed": 3}}, "task.data_seed"),
]


@pytest.mark.parametrize("raw, key", DEAD, ids=[key for _, key in DEAD])
def test_key_that_does_nothing_is_refused(raw, key):
    with pytest.raises(ConfigError, match=rf"^{key} = .*: has no effect with .* \(only with .*; remove it \(default .*\)$"):
        build_config(raw)


# A key of another task: refused as unknown for this task, with the nearest key of this one.
FOREIGN = [
    ({"task": {"name": "markov", "power": 3.0}, "model": {"family": "transformer"}}, "task.power", "markov"),
    ({"task": {"vocab": 8}}, "task.vocab", "regression-1d"),
    ({"task": {"temperature": 0.5}}, "task.temperature", "regression-1d"),
    ({"task": {"contxt": 8, "name": "markov"}, "model": {"family": "transformer"}}, "task.contxt", "markov"),
    ({"task": {"name": "markov"}, "model": {"family": "transformer"}, "sweep": {"task.grid_size": [3, 5]}},
     "sweep.task.grid_size", "markov"),
]


@pytest.mark.parametrize("raw, key, task", FOREIGN, ids=[key for _, key, _ in FOREIGN])
def test_key_of_another_task_is_refused(raw, key, task):
    with pytest.raises(ConfigError, match=rf"^unknown key '{key}' for task '{task}'; did you mean '[a-z._]+'\?$"):
        build_config(raw)


def test_task_name_is_not_swept_and_must_exist():
    with pytest.raises(ConfigError, match="^sweep.task.name: a sweep trains one task"):
        build_config({"sweep": {"task.name": ["regression-1d", "markov"]}})
    with pytest.raises(ConfigError, match="^task.name = 'markv': allowed: regression-1d, markov"):
        build_config({"task": {"name": "markv"}})


def test_zero_init_is_refused_where_it_would_do_nothing():
    with pytest.raises(ConfigError, match=r"^model.zero_init = \['head'\] with model.tie_embeddings = true"):
        build_config({**MARKOV, "model": {"family": "transformer", "tie_embeddings": True, "zero_init": ["head"]}})
    with pytest.raises(ConfigError, match=r"^model.zero_init = \['proj'\]: 'proj' zero-initialises"):
        build_config({"model": {"zero_init": ["proj"]}})
    with pytest.raises(ConfigError, match=r"^model.zero_init = \['head', 'hed'\]: allowed"):
        build_config({"model": {"zero_init": ["head", "hed"]}})
    assert build_config({"model": {"zero_init": ["proj", "head"], "residual": True}}).model.zero_init == ["head", "proj"]


def test_key_acting_in_one_group_of_the_sweep_is_accepted():
    """momentum acts in the sgd group of an optimizer sweep; decay_all in the adamw group with weight decay."""
    cfg = build_config({"train": {"momentum": 0.9}, "sweep": {"train.optimizer": ["adam", "sgd"]}})
    assert cfg.train.momentum == 0.9
    build_config({"train": {"optimizer": "adamw", "decay_all": True}, "sweep": {"train.weight_decay": [0.0, 0.1]}})
    build_config({"model": {"mlp_ratio": 2}, "sweep": {"model.residual": [False, True]}})
    with pytest.raises(ConfigError, match="has no effect"):
        build_config({"train": {"momentum": 0.9}, "sweep": {"train.optimizer": ["adam", "adamw"]}})


def test_grids_share_a_point_iff_the_formula_says_so():
    """Brute force over (grid_size, test_size): training point k/a = test midpoint (2i + 1)/(2T) in exact
    arithmetic iff grids_share_point; the task's float64 grids agree; test_size = grid_size - 1 always works."""
    from sweepjax.tasks.regression import Regression1D
    for g in range(2, 66):
        a = g - 1
        train = {Fraction(k, a) for k in range(g)}
        for t in range(2, 66):
            shared = any(Fraction(2 * i + 1, 2 * t) in train for i in range(t))
            assert grids_share_point(g, t) == shared, (g, t)
        assert not grids_share_point(g, a)
    import jax
    with jax.enable_x64(True):
        for g, t in [(201, 1001), (201, 1000), (1001, 2001), (1001, 2000), (9, 12), (9, 8), (5, 6)]:
            cfg = build_config({"task": {"low": -2.0, "high": 3.0}}).task
            cfg.grid_size, cfg.test_size = g, t
            task = Regression1D(cfg)
            x_train = np.asarray(task.grid(g, np.float64))[:, 0]
            x_test = np.asarray(task.test_set(np.float64)[0])[:, 0]
            gap = np.min(np.abs(x_train[:, None] - x_test[None, :]))
            assert (gap < 1e-12) == grids_share_point(g, t), (g, t, gap)
            np.testing.assert_allclose(x_test, -2.0 + (np.arange(t) + 0.5) * 5.0 / t)


def test_shipped_configs_are_valid(tmp_path, monkeypatch):
    """Every config in configs/ validates, GPU-sized and with its [on_cpu] sizes, from a fresh directory: the only
    refusal allowed is that of a config whose data another run makes first (the language ladder's generators)."""
    monkeypatch.chdir(tmp_path)
    for path in sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml")):
        for on_cpu in (False, True):
            try:
                load_config(path, on_cpu=on_cpu)
            except ConfigError as e:
                assert path.name == "language_ladder.toml" and "train the generators first" in str(e), (path, e)


@pytest.mark.parametrize("raw, on_cpu", [
    ({"train": {"steps": 3}, "sweep": {"train.steps": [4, 8]}}, False),
    ({"sweep": {"train.steps": [4, 8]}, "on_cpu": {"train.steps": 3}}, True),
    ({"model": {"width": 16}, "sweep": {"model.width": [4, 8]}}, False),
])
def test_a_swept_key_given_a_single_value_too_is_refused(raw, on_cpu):
    """The sweep sets the key, so a single value given beside it (in its section, [on_cpu] or --set)
    would be validated, saved and ignored: refused, pointing at the sweep axis."""
    with pytest.raises(ConfigError, match=r"the sweep sets .* would be ignored; remove one .*set \"sweep\."):
        build_config(raw, on_cpu=on_cpu)


@pytest.mark.parametrize("key", ["eval.points", "run.bootstrap"])
def test_eval_and_run_keys_cannot_be_swept(key):
    """A swept eval.points gave every group its own eval_step axis and crashed when the results were
    assembled; eval and run keys belong to the whole sweep."""
    with pytest.raises(ConfigError, match=rf"^sweep.{key}: eval and run keys apply to the whole sweep"):
        build_config({"sweep": {key: [3, 5]}})
