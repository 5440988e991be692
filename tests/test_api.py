"""The Python API: ``sweepjax.run`` (the function the CLI calls), ``sweepjax.load``, and a light import."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import sweepjax
from sweepjax.cli import main
from sweepjax.config import ConfigError

CONFIG = """
[task]
batch_size = 16
test_size = 11
[train]
steps = 1000
chunk_steps = 10
lr = 1e-2
[eval]
points = 4
[run]
bootstrap = 20
[sweep]
seed = [0, 1]
"model.width" = [2, 4, 8]
[on_cpu]
"train.steps" = 20
"""
RAW = tomllib.loads(CONFIG)
SET = ["train.lr=0.02"]
ON_CPU = __import__("jax").default_backend() == "cpu"


def _lr(ds: xr.Dataset) -> float:
    return tomllib.loads(ds.attrs["sweepjax_config"])["train"]["lr"]


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """The CLI on the TOML file (with --set), counting how often the grid is built."""
    import sweepjax.grid
    tmp = tmp_path_factory.mktemp("cli")
    path = tmp / "tiny.toml"
    path.write_text(CONFIG)
    calls = []
    build = sweepjax.grid.build_grid
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sweepjax.grid, "build_grid", lambda cfg: calls.append(1) or build(cfg))
        assert main(["run", str(path), "--out", str(tmp / "out"), "--set", SET[0]]) == 0
    return tmp / "out", len(calls)


def test_cli_builds_the_grid_once(cli_run):
    assert cli_run[1] == 1


def test_in_memory_run_equals_cli_and_writes_nothing(cli_run, tmp_path, monkeypatch):
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir(), tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    ds = sweepjax.run(RAW, set=SET, progress=False)       # set as a list of "section.key=value"
    assert list(cwd.iterdir()) == [] and list(tmp.iterdir()) == [] and not Path("runs").exists()
    ref = sweepjax.load(cli_run[0])
    np.testing.assert_array_equal(ds.test_loss.values, ref.test_loss.values)   # bitwise on CPU
    np.testing.assert_array_equal(ds.train_loss.values, ref.train_loss.values)
    assert _lr(ds) == 0.02 and list(ds.width.values) == [2, 4, 8] and ds.sizes["seed"] == 2
    if ON_CPU:   # [on_cpu] applied, as in the CLI
        assert int(ds.eval_step.max()) == 20


def test_run_into_a_directory_writes_what_the_cli_writes(cli_run, tmp_path, capsys):
    out = tmp_path / "api"
    ds = sweepjax.run(RAW, set={"train.lr": 0.02}, out=out)   # set as a dict of Python values
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in cli_run[0].iterdir())
    assert {"results.nc", "config.toml", "manifest.json", "fit.json", "figures"} <= {p.name for p in out.iterdir()}
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(p.name for p in (cli_run[0] / "figures").iterdir())
    assert json.loads((out / "fit.json").read_text()) == json.loads((cli_run[0] / "fit.json").read_text())
    body = lambda d: (d / "config.toml").read_text().splitlines()[1:]   # line 0 names the sweep (file stem / "sweep")
    assert body(out) == body(cli_run[0])
    assert json.loads((out / "manifest.json").read_text())["command"].startswith("sweepjax.run(")
    printed = capsys.readouterr()
    assert f"results: {out}/" in printed.out and "sweep 'sweep': 6 members" in printed.err
    xr.testing.assert_identical(sweepjax.load(out), ds)
    np.testing.assert_array_equal(ds.test_loss.values, sweepjax.load(cli_run[0]).test_loss.values)
    assert _lr(ds) == 0.02
    with pytest.raises(ConfigError, match="already holds results"):
        sweepjax.run(RAW, out=out, progress=False)


def test_interrupt_then_resume_through_the_api(cli_run, tmp_path):
    from sweepjax.engine.checkpoint import Interrupted
    out = tmp_path / "api"
    with pytest.raises(Interrupted) as stopped:
        sweepjax.run(RAW, set=SET, out=out, progress=False, should_stop=lambda: True)
    assert stopped.value.out == out and (out / "checkpoints").is_dir() and not (out / "results.nc").exists()
    with pytest.raises(ConfigError, match="unfinished sweep"):
        sweepjax.run(RAW, set=SET, out=out, progress=False)
    with pytest.raises(ConfigError, match=r"train.lr \(saved 0.02, now 0.01\)"):
        sweepjax.run(RAW, out=out, resume=True, progress=False)
    ds = sweepjax.run(None, out=out, resume=True, progress=False)   # the saved config
    np.testing.assert_array_equal(ds.test_loss.values, sweepjax.load(cli_run[0]).test_loss.values)
    assert not (out / "checkpoints").exists()


@pytest.mark.parametrize("config, overrides, message", [
    ({"model": {"widht": 4}}, None, "model.widht"),
    ({"train": {"lr": -1.0}}, None, "train.lr"),
    ({}, ["train.lr"], "expected section.key=value"),
    ({}, {"model.depth": 0}, "model.depth"),
    ({"sweep": {"seed": []}}, None, "sweep.seed|seed"),
    ("no/such/config.toml", None, "not found"),
])
def test_bad_config_raises_one_line_config_error(config, overrides, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message) as err:
        sweepjax.run(config, set=overrides, progress=False)
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})


def test_import_sweepjax_does_not_import_jax():
    got = _fresh_python("import sys, sweepjax; assert callable(sweepjax.run); "
                        "assert 'jax' not in sys.modules, 'jax imported'; "
                        "sweepjax.load; assert 'jax' in sys.modules")   # load is there, imported on use
    assert got.returncode == 0, got.stderr[-2000:]


def test_help_does_not_import_jax():
    got = _fresh_python("import atexit, sys, runpy\n"
                        "atexit.register(lambda: print('JAX IMPORTED' if 'jax' in sys.modules else 'NO JAX'))\n"
                        "sys.argv = ['sweepjax', '--help']\n"
                        "runpy.run_module('sweepjax.cli', run_name='__main__')\n")
    assert got.returncode == 0 and "usage: sweepjax" in got.stdout, got.stderr[-2000:]
    assert got.stdout.strip().endswith("NO JAX"), got.stdout[-500:]


def test_notebook_values_and_bad_inputs(tmp_path):
    """numpy arrays and scalars, tuples and ranges in a ``set`` dict are the TOML values they stand for;
    a config that is neither a path nor a dict is a one-line ConfigError; ``out=False`` is ``None``."""
    import numpy as np

    import sweepjax
    from sweepjax.config import ConfigError
    base = {"task": {"batch_size": 16, "test_size": 11}, "train": {"steps": 3}, "eval": {"points": 2}}
    a = sweepjax.run(base, set={"sweep.model.width": np.array([2, 4]), "sweep.seed": range(2),
                                "train.lr": np.float32(1e-2)}, out=False, progress=False)
    b = sweepjax.run(base, set={"sweep.model.width": [2, 4], "sweep.seed": [0, 1], "train.lr": float(np.float32(1e-2))},
                     progress=False)
    np.testing.assert_array_equal(a.test_loss.values, b.test_loss.values)
    for bad in (123, [1, 2]):
        with pytest.raises(ConfigError, match="a TOML file's path or a dict"):
            sweepjax.run(bad, progress=False)
