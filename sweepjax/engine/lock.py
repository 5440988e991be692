"""An exclusive lock on a run's output directory, so that two sweepjax processes never write one run.

``with OutputLock(out): ...`` takes an OS file lock (``flock(LOCK_EX | LOCK_NB)``) on
``<out>/.sweepjax.lock`` and holds it until the block ends. A second process that tries to lock the
same directory is refused at once with a :class:`~sweepjax.config.ConfigError` naming the holder
(pid, host, start time and command line, which the holder writes into the lock file). The OS drops
the lock when the holding process dies, even by SIGKILL, so a killed run can be resumed right away;
the stale holder details left in the file are simply overwritten by the next holder. The lock file
is removed when the block ends (after the directory is released, a leftover file is harmless).

The lock is advisory and only between sweepjax processes. Multi-host runs: only process 0 locks
(``enabled=False`` elsewhere); the other processes may be on other hosts sharing the filesystem and
rely on process 0. Whether a lock taken on one host is seen by another host depends on the
filesystem: local disks and NFSv4 do; some network filesystems (e.g. NFS mounted with ``nolock``,
Lustre without ``-o flock``) only lock per host or not at all (then a warning is printed and the
run goes on unlocked).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from sweepjax.config import ConfigError

LOCK_FILE = ".sweepjax.lock"


class OutputLock:
    """Exclusive lock on the output directory ``out`` while in the ``with`` block.

    ``create``: make ``out`` (and its parents) if missing. A directory that does not exist (and is
    not to be created, or cannot be) is not locked: there is nothing in it to protect, and the
    caller's own checks report the problem. ``enabled=False`` makes the lock a no-op (multi-host
    processes other than 0).
    """

    def __init__(self, out: str | Path, *, create: bool = True, enabled: bool = True, command: str | None = None):
        self.dir = Path(out)
        self.path = self.dir / LOCK_FILE
        self.create, self.enabled = create, enabled
        self.command = command or " ".join(["sweepjax"] + sys.argv[1:])
        self.fd: int | None = None

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise ConfigError naming the process that holds it."""
        if not self.enabled or self.fd is not None:
            return
        if self.create:
            try:
                self.dir.mkdir(parents=True, exist_ok=True)
            except OSError:
                return
        if not self.dir.is_dir():
            return
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as e:
                raise ConfigError(f"cannot write to output directory {str(self.dir)!r}: {e.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise ConfigError(self._busy()) from None
                print(f"warning: cannot lock {str(self.dir)!r} ({e.strerror}); nothing stops a second "
                      f"sweepjax process from using it at the same time", file=sys.stderr)
                return
            # The previous holder may have removed the file between our open() and flock(): then we
            # locked a file nobody else will see, so lock the file now at that path instead.
            try:
                st, now = os.fstat(fd), os.stat(self.path)
                if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        self.fd = fd
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": self.command}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(info) + "\n").encode())

    def release(self) -> None:
        """Remove the lock file and drop the lock (in that order, so no one locks a removed file)."""
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def _busy(self) -> str:
        where = f"{str(self.dir)!r} is in use by another sweepjax process"
        info = holder(self.dir)
        if info:
            where += (f" (pid {info.get('pid', '?')} on {info.get('host', '?')}, started "
                      f"{info.get('started', '?')}, {info.get('command', '?')!r})")
        return f"{where}; wait for it or stop it"


def holder(out: str | Path) -> dict | None:
    """Details the process holding (or that last held) the lock of ``out`` wrote, or None."""
    try:
        info = json.loads((Path(out) / LOCK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None
