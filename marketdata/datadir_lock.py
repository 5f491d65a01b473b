"""One platform per data dir: the ownership lock `marketdata up` takes before it starts anything.

The lock is an exclusive ``fcntl.flock`` on ``<data dir>/run/up.lock``. The kernel releases it when
the holder's file descriptor closes, so also when the holder is killed: a lock left by a dead `up`
never blocks the next one. The descriptor is not inherited by child processes (Python's default).
The holder writes who it is into the file (PID, start time, command line), so a second `up` can say
which process owns the data dir, and `marketdata status` can tell whether a platform is running.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import orjson

LOCK_NAME = "up.lock"


def lock_path(data_dir: Path) -> Path:
    return data_dir / "run" / LOCK_NAME


@dataclass
class Holder:
    """Who holds (or last held) the lock, as the holder wrote it."""
    pid: int | None
    started: str
    command: str

    def describe(self) -> str:
        return f"PID {self.pid}, started {self.started or '?'}, command: {self.command or '?'}"


class DataDirLocked(Exception):
    """Another live process owns the data dir."""

    def __init__(self, data_dir: Path, holder: Holder):
        self.data_dir, self.holder = data_dir, holder
        super().__init__(f"data dir {data_dir} is owned by another marketdata up ({holder.describe()}); "
                         "stop it first, or point MARKETDATA_HOME at another data dir")


def _read_holder(path: Path) -> Holder:
    try:
        raw = orjson.loads(path.read_bytes())
        return Holder(raw.get("pid"), raw.get("started", ""), raw.get("command", ""))
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return Holder(None, "", "")


def _own_command_line() -> str:
    try:
        import psutil
        return " ".join(psutil.Process().cmdline())
    except Exception:  # noqa: BLE001 - best effort: what Python saw
        return " ".join([sys.executable, *sys.argv])


class DataDirLock:
    """``acquire()`` takes the lock or raises :class:`DataDirLocked`; ``release()`` (or the
    holder's exit) frees it."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.path = lock_path(self.data_dir)
        self._fd: int | None = None

    def acquire(self) -> "DataDirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        for attempt in range(5):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # `status` probes with a shared lock for an instant; a real holder keeps it.
                if attempt == 4:
                    os.close(fd)
                    raise DataDirLocked(self.data_dir, _read_holder(self.path)) from None
                time.sleep(0.05)
        me = {"pid": os.getpid(),
              "started": datetime.fromtimestamp(time.time(), timezone.utc).isoformat(timespec="seconds"),
              "command": _own_command_line()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, orjson.dumps(me) + b"\n", 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)      # closing drops the flock; the file stays, naming the last holder
            self._fd = None

    def __enter__(self) -> "DataDirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def current_holder(data_dir: Path) -> Holder | None:
    """The live process holding the data dir's lock, or None when no platform owns it. Probes with
    a shared lock, so it never blocks and never takes the data dir from anyone."""
    path = lock_path(Path(data_dir))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(path)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
