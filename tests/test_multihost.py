"""Multi-host: two processes (2 CPU devices each) run one sweep over a 4-device mesh."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np

import sweepjax
from sweepjax.cli import main

CONFIG = """
[task]
batch_size = 64
test_size = 101
[train]
steps = 60
chunk_steps = 20
lr = 1e-2
[eval]
points = 4
[run]
figures = false
checkpoint_steps = 20
[sweep]
seed = [0, 1, 2]
"model.width" = [4, 16]
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    procs = [subprocess.Popen([sys.executable, "-m", "sweepjax.cli", "run", str(cfg), "--out", str(tmp_path / "multi"),
                               "--distributed", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                               "--process-id", str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert main(["run", str(cfg), "--out", str(tmp_path / "single")]) == 0
    one, multi = sweepjax.load(tmp_path / "single"), sweepjax.load(tmp_path / "multi")
    np.testing.assert_allclose(multi.test_loss.values, one.test_loss.values, rtol=1e-5)
