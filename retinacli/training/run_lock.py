"""One training run per output folder: the lock file `.retina-train.lock`.

`retina train` holds an exclusive `fcntl.flock` on `<output_dir>/.retina-train.lock` for the
whole run and writes its pid and host name into it. The kernel drops the lock when the process
ends, however it ends (kill -9 included), so:

- a second run on the same folder finds the lock held and is refused, naming the pid (and host)
  written in the file;
- a lock file whose process is gone is not held: the next run takes it over and says whose it
  was.

flock is advisory and per host: on a network filesystem shared by several machines it may not
exclude a run on another machine (the file still names the host, so the message says where).
Where `fcntl` does not exist (Windows) the lock is only the file's content, checked for a live
pid.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from retinacli.errors import UsageError

LOCK_NAME = ".retina-train.lock"


@dataclass(frozen=True)
class LockOwner:
    """What a lock file says: the pid and host of the run that wrote it."""

    pid: int | None
    host: str

    def describe(self) -> str:
        pid = f"pid {self.pid}" if self.pid is not None else "an unknown pid"
        return f"{pid} on {self.host}" if self.host else pid


class RunLock:
    """The lock of one output folder. `acquire()` returns the previous owner when it took over a
    lock left by a run that is gone (None otherwise), and raises UsageError when a live run
    holds it. `release()` (or leaving the `with` block) frees it; the file stays, naming no one."""

    def __init__(self, output_dir: str | os.PathLike[str]) -> None:
        self.path = Path(output_dir) / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> LockOwner | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            previous = _read_owner(fd)
            if not _try_lock(fd, previous):
                raise UsageError(
                    f"{self.path.parent}: another `retina train` is using this output folder "
                    f"({previous.describe() if previous else 'its pid is not written yet'}); wait "
                    "for it to finish or stop it, or choose another --output-dir"
                )
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        if previous is not None and previous.pid is not None and previous.pid != os.getpid():
            return previous
        return None

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _read_owner(fd: int) -> LockOwner | None:
    text = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
    if not text:
        return None
    pid = int(text[0]) if text[0].isdigit() else None
    return LockOwner(pid=pid, host=text[1] if len(text) > 1 else "")


def _try_lock(fd: int, previous: LockOwner | None) -> bool:
    try:
        import fcntl
    except ImportError:  # no flock: a pid on this host that still runs holds the lock
        return previous is None or previous.pid is None or not _alive_here(previous)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _alive_here(owner: LockOwner) -> bool:
    if owner.host and owner.host != socket.gethostname():
        return True  # cannot tell: assume it runs
    try:
        os.kill(owner.pid or 0, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
