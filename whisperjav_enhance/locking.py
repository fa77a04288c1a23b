"""Cross-process locks on files: who holds an OUT_DIR, who is downloading a model.

The lock is the operating system's (``flock`` on POSIX, ``msvcrt.locking`` on Windows) on a small
file that also names its holder (pid, host, purpose, start time), so a second process can say who
is in the way. The OS drops the lock when its holder dies, however it dies, so a lock file left by
a killed run is free: it is taken over without any guesswork about stale pids.

    with hold(out_dir / ".whisperjav-enhance.lock", "enhance run"):   # LockBusy if held
        ...
    with hold(cache / "model.lock", "download", wait_s=600):          # waits for the holder
        ...
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from .errors import EnhanceError
from .safeio import open_regular, write_all

# How often a waiting process tries the lock again.
POLL_S = 0.2
# How long a lock held by someone who has written nothing is waited for before it counts as busy:
# a dry run takes the lock for an instant to see whether it is free, and a run writes its details
# right after taking it.
ANONYMOUS_HOLDER_GRACE_S = 2.0
# The holder's details are one short JSON object.
HOLDER_MAX_BYTES = 4096


class LockBusy(EnhanceError):
    """Another live process holds the lock; ``holder`` is what it wrote into the lock file."""

    def __init__(self, path: Path, holder: dict, purpose: str):
        self.path = Path(path)
        self.holder = dict(holder)
        who = describe_holder(holder)
        super().__init__(f"{purpose}: {path} is held by {who}; wait for it to finish, or stop it")


def describe_holder(holder: dict) -> str:
    """One line for people: the holder's purpose, pid, host and start time."""
    if not holder:
        return "another process (it has not written its details yet)"
    parts = [holder.get("purpose") or "another process"]
    if holder.get("pid"):
        parts.append(f"pid {holder['pid']}")
    if holder.get("host"):
        parts.append(f"on {holder['host']}")
    if holder.get("started"):
        parts.append(f"since {holder['started']}")
    return ", ".join(str(p) for p in parts)


def _read_holder(fd: int) -> dict:
    """What the lock file open at ``fd`` says about its holder ({} when empty or unreadable)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, HOLDER_MAX_BYTES).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextmanager
def hold(path: str | os.PathLike, purpose: str, wait_s: float = 0.0) -> Iterator[dict]:
    """Hold the lock at ``path`` for the block; yields what was written as the holder.

    ``wait_s`` 0 raises :class:`LockBusy` at once when another process holds it (after a short
    grace when the holder has written nothing yet: a dry run looking, or a run starting);
    otherwise the lock is tried every ``POLL_S`` until ``wait_s`` have passed. The lock file is
    opened without following a link and refused when it is not a regular file (a pipe would block
    the open); it is left in place on exit (removing it would race with a process that has just
    opened it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_regular(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + max(0.0, wait_s)
        graced = False
        while not _try_lock(fd):
            holder = _read_holder(fd)
            if time.monotonic() >= deadline:
                if holder or graced:
                    raise LockBusy(path, holder, purpose)
                deadline, graced = time.monotonic() + ANONYMOUS_HOLDER_GRACE_S, True
            time.sleep(POLL_S)
        holder = {"purpose": purpose, "pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        _write_holder(fd, holder)
        try:
            yield holder
        finally:
            try:  # an empty file reads as "no holder"; a failure here must not keep the lock
                os.ftruncate(fd, 0)
            except OSError:
                pass
            _unlock(fd)
    finally:
        os.close(fd)


def live_holder(path: str | os.PathLike) -> dict | None:
    """Who holds the lock at ``path`` now (what it wrote), or None when nobody does; creates and
    writes nothing (a dry run asks this). The lock is taken for an instant to see whether it is
    free, which :func:`hold`'s grace for holders that have written nothing covers."""
    try:
        fd = open_regular(path, os.O_RDONLY)
    except OSError:
        return None  # no lock file, or not one a run could use (the run itself will say)
    try:
        if _try_lock(fd):
            _unlock(fd)
            return None
        return _read_holder(fd)
    finally:
        os.close(fd)


def _write_holder(fd: int, holder: dict) -> None:
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    write_all(fd, json.dumps(holder).encode("utf-8"))


# -- the one per-platform part -------------------------------------------------------------------
# Windows locks byte ranges, and a locked range cannot be read by others: the lock covers one byte
# far past the holder's details (locking past the end of a file is allowed), so they stay readable.
_WINDOWS_LOCK_OFFSET = 1 << 20
if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        except OSError:
            pass
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


__all__ = ["hold", "live_holder", "LockBusy", "describe_holder"]
