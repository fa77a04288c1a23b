"""Free space on the output's disk: the distinct error a full disk raises, how free space is told
to people, and the check a run makes before computing a scene whose output could not be written.

A full disk (``ENOSPC``) and a full quota (``EDQUOT``) are the one write failure the user fixes
by freeing space, so they get their own class, :class:`DiskFull` (reason ``disk_full``); every
other OS error while writing is a plain :class:`OutputError` (reason ``write_failed``)."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from .errors import OutputError
from .status import Reason

# Room kept free beyond an output's own size before a scene is computed (bytes): the manifest
# line, the settings record and the summary that follow an output need a few KiB each, and a
# filesystem's own bookkeeping (indirect blocks, journal) a little more. Generous on purpose: a
# scene skipped for want of 1 MiB is cheaper than one computed and then not written.
ROOM_MARGIN_BYTES = 1 << 20

# errno values that mean "no room" (EDQUOT is missing on Windows).
_FULL_ERRNOS = frozenset(e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if e is not None)


class DiskFull(OutputError):
    """The output's disk (or the user's quota) is full; ``free_bytes`` is what was left (None
    when it could not be read). Workers turn it into a scene failure with reason ``disk_full``."""

    reason = Reason.DISK_FULL

    def __init__(self, message: str, folder: Path, free_bytes: int | None):
        self.folder = Path(folder)
        self.free_bytes = free_bytes
        super().__init__(message)


def is_disk_full(exc: BaseException) -> bool:
    """True for the OS errors that mean the disk or the quota is full."""
    return isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS


def free_bytes(folder: str | os.PathLike) -> int | None:
    """Bytes an unprivileged writer may still use on ``folder``'s filesystem; None if unknown
    (the nearest existing ancestor is asked, so a folder not made yet works too)."""
    path = Path(os.path.abspath(folder))
    while True:
        try:
            return shutil.disk_usage(path).free
        except FileNotFoundError:
            if path.parent == path:
                return None
            path = path.parent
        except OSError:
            return None


def format_bytes(n: int) -> str:
    """``n`` bytes for people: ``0 B``, ``812 KiB``, ``12.3 MiB``, ``1.2 GiB``."""
    if n < 1024:
        return f"{n} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024.0
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if n >= 100 or unit == "KiB" else f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def ensure_room(folder: str | os.PathLike, nbytes: int, what: str) -> None:
    """Raise :class:`DiskFull` naming the free space when ``what`` (``nbytes``) cannot fit.

    Call it before computing a scene: an output that cannot be written is not worth computing."""
    free = free_bytes(folder)
    if free is not None and nbytes + ROOM_MARGIN_BYTES > free:
        raise DiskFull(f"{what} needs about {format_bytes(nbytes + ROOM_MARGIN_BYTES)} but only "
                       f"{format_bytes(free)} is free on {folder}; free some space and run again "
                       "(finished outputs are kept)", Path(folder), free)


def output_error(path: str | os.PathLike, exc: OSError, doing: str = "write") -> OutputError:
    """The :class:`OutputError` for an OS error while writing ``path``: :class:`DiskFull` naming
    the free space when the disk or quota is full, else the OS's own words."""
    path = Path(path)
    what = exc.strerror or str(exc) or type(exc).__name__
    if is_disk_full(exc):
        free = free_bytes(path.parent)
        told = "free space unknown" if free is None else f"{format_bytes(free)} free"
        return DiskFull(f"cannot {doing} {path}: {what} ({told} on {path.parent}); free some "
                        "space and run again (finished outputs are kept)", path.parent, free)
    return OutputError(f"cannot {doing} {path}: {what}")


__all__ = ["DiskFull", "ROOM_MARGIN_BYTES", "is_disk_full", "free_bytes", "format_bytes",
           "ensure_room", "output_error"]
