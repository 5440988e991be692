"""The output directory lock: a second sweepjax process on a run's directory is refused at once."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_reliability import _wait_for_checkpoint

from sweepjax import results
from sweepjax.cli import main
from sweepjax.config import ConfigError
from sweepjax.engine.lock import LOCK_FILE, OutputLock, holder

TINY = """
[task]
batch_size = 16
test_size = 11
[model]
width = 4
[train]
steps = {steps}
chunk_steps = 50
[eval]
points = 3
[run]
checkpoint_steps = 100
figures = false
bootstrap = 0
[sweep]
seed = [0, 1]
"""


def _config(tmp_path: Path, steps: int) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY.format(steps=steps))
    return path


def _start(cfg: Path, out: Path, log: Path) -> subprocess.Popen:
    """A sweep in a subprocess; output to a file (a full pipe would stall it)."""
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, "-m", "sweepjax.cli", "run", str(cfg), "--out", str(out)],
                                stdout=f, stderr=subprocess.STDOUT)


def _wait_for(path: Path, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.05)


def test_lock_is_exclusive_and_released(tmp_path):
    out = tmp_path / "run"
    with OutputLock(out, command="sweepjax run first") as first:
        assert first.held and (out / LOCK_FILE).exists()
        assert holder(out)["pid"] == os.getpid()
        # A second open file description conflicts even within one process (flock semantics).
        with pytest.raises(ConfigError) as e:
            OutputLock(out).acquire()
        msg = str(e.value)
        assert "\n" not in msg and f"pid {os.getpid()} on " in msg and "'sweepjax run first'" in msg
        assert msg.startswith(f"{str(out)!r} is in use by another sweepjax process")
    assert not (out / LOCK_FILE).exists()  # removed on release
    with OutputLock(out) as again:  # free again
        assert again.held


def test_stale_lock_file_and_no_op_cases(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_FILE).write_text('{"pid": 1, "host": "gone", "started": "long ago", "command": "x"}\n')
    with OutputLock(out) as lock:  # a file left by a killed process does not block
        assert lock.held and holder(out)["pid"] == os.getpid()
    with OutputLock(tmp_path / "missing", create=False) as lock:  # nothing to protect; nothing created
        assert not lock.held
    assert not (tmp_path / "missing").exists()
    with OutputLock(out, enabled=False) as lock:  # multi-host processes other than 0
        assert not lock.held and not (out / LOCK_FILE).exists()


def test_overwrite_into_locked_dir_is_refused(tmp_path, capsys):
    """A fresh --overwrite run does not touch a directory another process holds (not even its checkpoints)."""
    out = tmp_path / "run"
    (out / "checkpoints" / "units").mkdir(parents=True)
    hold = subprocess.Popen([sys.executable, "-c", "import sys; from sweepjax.engine.lock import OutputLock; "
                             "l = OutputLock(sys.argv[1], command='sweepjax run other'); l.acquire(); "
                             "print('locked', flush=True); sys.stdin.read()", str(out)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert hold.stdout.readline().strip() == "locked"
        assert main(["run", str(_config(tmp_path, 100)), "--out", str(out), "--overwrite"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"pid {hold.pid} on " in err[0] and "'sweepjax run other'" in err[0], err
        assert (out / "checkpoints" / "units").is_dir()
    finally:
        hold.communicate("")
    assert main(["run", str(_config(tmp_path, 100)), "--out", str(out), "--overwrite"]) == 0  # free now
    assert not (out / "checkpoints").exists() and not (out / LOCK_FILE).exists()


def test_resume_while_running_is_refused(tmp_path):
    out, log = tmp_path / "run", tmp_path / "first.log"
    proc = _start(_config(tmp_path, 20000), out, log)
    try:
        _wait_for(out / "config.toml", proc, log)
        second = subprocess.run([sys.executable, "-m", "sweepjax.cli", "run", "--resume", str(out)],
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-3000:]
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and f"pid {proc.pid} on " in lines[0], lines
        assert proc.poll() is None  # (the first run was still going)
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text()
    assert results.load(out).sizes["seed"] == 2
    assert not (out / "checkpoints").exists() and not (out / LOCK_FILE).exists()


def test_resume_right_after_sigkill(tmp_path):
    """The OS drops a killed run's lock: --resume works at once, despite the lock file left behind."""
    out, log = tmp_path / "run", tmp_path / "first.log"
    proc = _start(_config(tmp_path, 4000), out, log)
    _wait_for_checkpoint(out, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert holder(out)["pid"] == proc.pid and not (out / "results.nc").exists()
    assert main(["run", "--resume", str(out)]) == 0
    ds = results.load(out)
    assert int(ds["eval_step"].max()) == 4000 and bool(ds["final_test_loss"].notnull().all())
    assert not (out / "checkpoints").exists() and not (out / LOCK_FILE).exists()
