"""Long runs: checkpoints, kill-and-resume, Ctrl-C, resume refusals, atomic writes."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from sweepjax import results
from sweepjax.cli import main

CONFIG = """
[task]
batch_size = 64
test_size = 101
[train]
steps = 4000
chunk_steps = 50
lr = 1e-2
[eval]
points = 8
[run]
checkpoint_steps = 100
figures = false
[sweep]
seed = [0, 1, 2]
"model.depth" = [1, 3]
"""


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "long.toml"
    path.write_text(CONFIG)
    return path


def _start(cfg: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sweepjax.cli", "run", str(cfg), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_checkpoint(out: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    state = out / "checkpoints" / "state"
    t0 = time.time()
    while time.time() - t0 < timeout:
        if state.exists() and any(p.name.isdigit() for p in state.iterdir()):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("no checkpoint appeared")


def _same_results(a: Path, b: Path) -> None:
    da, db = results.load(a), results.load(b)
    for k in ("train_loss", "test_loss", "final_test_loss", "diverged", "diverged_step"):
        np.testing.assert_array_equal(da[k].values, db[k].values, err_msg=k)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the same config."""
    tmp = tmp_path_factory.mktemp("ref")
    out = tmp / "ref"
    assert main(["run", str(_config(tmp)), "--out", str(out)]) == 0
    assert not (out / "checkpoints").exists()  # cleaned up once results are safe
    return out


def test_sigkill_then_resume_is_bitwise_identical(tmp_path, reference):
    out = tmp_path / "run"
    proc = _start(_config(tmp_path), out)
    _wait_for_checkpoint(out, proc)
    time.sleep(random.uniform(0.0, 1.5))  # land somewhere inside a later chunk
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "results.nc").exists()
    # A fresh run into the same directory is refused: it holds an unfinished sweep.
    assert main(["run", str(_config(tmp_path)), "--out", str(out)]) == 2
    assert main(["run", "--resume", str(out)]) == 0
    _same_results(out, reference)


def test_sigint_writes_checkpoint_and_resumes(tmp_path, reference):
    out = tmp_path / "run"
    proc = _start(_config(tmp_path), out)
    _wait_for_checkpoint(out, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"sweepjax run --resume {out}" in err
    assert "Traceback" not in err
    assert main(["run", "--resume", str(out)]) == 0
    _same_results(out, reference)


def test_resume_with_changed_config_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    results.save_config(__import__("sweepjax.config", fromlist=["x"]).load_config(_config(tmp_path)), out)
    (out / "checkpoints").mkdir()
    assert main(["run", "--resume", str(out), "--set", "train.lr=0.5", "--set", "run.bootstrap=10"]) == 2
    err = capsys.readouterr().err
    assert "train.lr (saved 0.01, now 0.5)" in err and "run.bootstrap" in err
    assert main(["run", "--resume", str(out), "--set", "train.lr=0.5", "--allow-change", "train.lr"]) == 2
    assert "would change results" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no sweep to resume" in capsys.readouterr().err


def test_atomic_write_keeps_previous_file(tmp_path, monkeypatch):
    """A crash in the middle of writing results leaves the previous results file intact."""
    from sweepjax.config import build_config
    cfg = build_config({})
    old = xr.Dataset({"final_test_loss": ("seed", np.array([1.0, 2.0]))})
    results.save(old, cfg, tmp_path, {})

    def crash(self, path, **kw):
        Path(path).write_bytes(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", crash)
    with pytest.raises(OSError):
        results.save(xr.Dataset({"final_test_loss": ("seed", np.array([9.0]))}), cfg, tmp_path, {})
    monkeypatch.undo()
    np.testing.assert_array_equal(results.load(tmp_path)["final_test_loss"].values, [1.0, 2.0])
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_atomic_write_gives_the_permissions_of_a_plain_open(tmp_path):
    """Results are readable by others under the usual umask (mkstemp alone would make them 0600)."""
    from sweepjax.files import atomic_write
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.txt", lambda p: p.write_text("x"))
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
