"""Atomic file replacement: a file under its final name is always complete.

Data goes to a temporary file in the destination folder (same filesystem, so the rename is
atomic), is flushed to disk, given the permissions a new file would get, then renamed over the
final path. On any failure the temporary file is removed, and OS errors become
:class:`OutputError` naming the path. Temporary names start with ``.`` and end in ``.partial``
so a later run can recognise and remove what a killed one left behind."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError

PARTIAL_SUFFIX = ".partial"


def is_partial_file(path: Path) -> bool:
    """True for the temporary names :func:`atomic_file` uses (for clean-up after a crash)."""
    return path.name.startswith(".") and path.name.endswith(PARTIAL_SUFFIX)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None):
    """Yield an open temporary file that replaces ``path`` when the block exits cleanly."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=PARTIAL_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write into {path.parent}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, mode, encoding=encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; outputs get the permissions any new file would (umask).
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise
