"""The files of a results directory: their names, and the one way sweepjax writes them.

Every file sweepjax writes into a results directory (results, config, manifest, fit, finished
checkpoint units) goes through :func:`atomic_write`: written to a temporary file in the same
directory and renamed into place, so an interrupted write leaves the previous file intact and a
reader never sees half a file. Imports nothing from sweepjax (and no JAX), so the command line, the
results store and the engine's checkpoints can all use it.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

RESULTS_FILE = "results.nc"      # the xarray Dataset (NetCDF4, h5netcdf)
CONFIG_FILE = "config.toml"      # the fully resolved config (written first, so a run can resume)
MANIFEST_FILE = "manifest.json"  # versions, devices, timings, command
FIT_FILE = "fit.json"            # scaling fits (width; depth for the teacher task)
FIGURES_DIR = "figures"
CHECKPOINT_DIR = "checkpoints"   # state of an unfinished sweep (removed once its results are saved)
DATA_FILE = "data.json"          # hashes of the tasks' data (text corpus, generators), checked on resume


def cache_dir() -> Path:
    """Where sweepjax keeps what it can rebuild but would rather not (measured calibrations, compiled programs,
    the text corpus): ``$XDG_CACHE_HOME/sweepjax``, ``~/.cache/sweepjax`` by default."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sweepjax"


def _umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` with a temporary path beside ``path``, then rename it onto ``path``.

    The rename is atomic (same directory, ``os.replace``); if ``write`` raises, the temporary file
    is removed and ``path`` keeps its previous content. The file gets the permissions of a plain
    ``open()`` (0666 less the umask), not mkstemp's private 0600, so shared results stay readable.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
