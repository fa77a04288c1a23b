"""Atomic file replacement: a file under its final name is always complete.

Data goes to a temporary file in the destination folder (same filesystem, so the rename is
atomic), is flushed to disk, then renamed over the final path. On any failure the temporary file
is removed and OS errors become :class:`OutputError` naming the path (:class:`DiskFull` when the
disk or quota is full). New files get the permissions any new file would (the umask applies).

Where the folder lies below a ``root`` (OUT_DIR), every folder between them is opened without
following links (see :mod:`.safeio`), and the temporary is created and renamed through that
folder's descriptor: a sub-folder swapped for a symlink mid-run cannot redirect the output.

Temporary names (:func:`temporary_name`): ``.<stem prefix>~<hash of the final name>.<random>.partial``.
The hash ties a temporary to exactly one output, so :func:`remove_partials` can remove a crashed
writer's temporaries for its unfinished outputs and nothing else; the stem prefix (for people) is
shortened so the temporary is never longer than the final name, in bytes, characters or UTF-16
units, unless the final name is shorter than :data:`NAME_FLOOR`: any name that fits as an output
fits as its temporary."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from .diskspace import DiskFull, output_error  # DiskFull: re-exported
from .errors import OutputError
from .safeio import HAVE_DIR_FD, check_not_redirected, make_folders_below, open_folder

PARTIAL_SUFFIX = ".partial"
# Length every filesystem an OUT_DIR may live on accepts for one name (eCryptfs, the shortest
# in use, takes 143 bytes): temporaries of short names may be this long, never longer.
NAME_FLOOR = 64
_HASH_CHARS = 12     # 48 bits of the final name's SHA-256: no two outputs of a folder share it
_RANDOM_CHARS = 6    # new per attempt (creation is exclusive and retried on a clash)
_CREATE_TRIES = 100

__all__ = ["atomic_file", "atomic_fd", "is_partial_file", "temporary_name", "partial_matcher",
           "find_partials", "remove_partials", "PARTIAL_SUFFIX", "DiskFull"]


def is_partial_file(path: Path) -> bool:
    """True for any temporary name an atomic write uses (this version's or an older one's)."""
    return path.name.startswith(".") and path.name.endswith(PARTIAL_SUFFIX)


def _name_hash(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]


def _lengths(name: str) -> tuple[int, int, int]:
    """A name's length as filesystems count it: UTF-8 bytes (POSIX), UTF-16 units (NTFS, exFAT),
    characters."""
    return (len(name.encode("utf-8", "surrogatepass")),
            len(name.encode("utf-16-le", "surrogatepass")) // 2, len(name))


def _temp_prefix(final_name: str) -> str:
    """``.<stem prefix>~<hash>``: the part of a temporary name fixed by its final name."""
    stem = Path(final_name).stem or final_name
    tag = "~" + _name_hash(final_name)
    tail = 1 + _RANDOM_CHARS + len(PARTIAL_SUFFIX)  # ".<random>.partial", ASCII in every measure
    limits = [max(n, NAME_FLOOR) for n in _lengths(final_name)]
    for keep in range(len(stem), -1, -1):
        candidate = "." + stem[:keep] + tag
        if all(n + tail <= lim for n, lim in zip(_lengths(candidate), limits)):
            return candidate
    raise AssertionError("unreachable: the bare tag is shorter than NAME_FLOOR")


def temporary_name(final_name: str, random_part: str | None = None) -> str:
    """A temporary name for ``final_name`` (see the module docstring)."""
    rand = random_part if random_part is not None else secrets.token_hex(_RANDOM_CHARS // 2)
    assert len(rand) == _RANDOM_CHARS
    return f"{_temp_prefix(final_name)}.{rand}{PARTIAL_SUFFIX}"


def partial_matcher(output_path: str | os.PathLike) -> re.Pattern:
    """Pattern that fullmatches exactly the temporary names of ``output_path``: this version's
    (``.<prefix>~<hash>.<random>.partial``) and those older versions left
    (``.<stem>.<random>.partial``), so an upgrade still cleans up after a crash before it."""
    name = Path(output_path).name
    current = re.escape(_temp_prefix(name) + ".") + f"[0-9a-f]{{{_RANDOM_CHARS}}}"
    legacy = re.escape("." + Path(name).stem + ".") + r"[^.]+"
    return re.compile(f"(?:{current}|{legacy})" + re.escape(PARTIAL_SUFFIX))


def find_partials(output_paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The temporaries of these outputs present on disk (for clean-up after a crash)."""
    by_dir: dict[Path, list[re.Pattern]] = {}
    for p in output_paths:
        out = Path(p)
        by_dir.setdefault(out.parent, []).append(partial_matcher(out))
    found = []
    for folder, patterns in by_dir.items():
        try:
            names = [e.name for e in os.scandir(folder) if not e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for name in names:
            if name.endswith(PARTIAL_SUFFIX) and any(p.fullmatch(name) for p in patterns):
                found.append(folder / name)
    return sorted(found)


def remove_partials(output_paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Delete the temporaries of these outputs; returns what went. Temporaries of other outputs
    in the same folders are left alone, so a live writer's are safe while it is not one of
    ``output_paths`` (whole-folder clean-up belongs under the run's lock, see outdir.py)."""
    removed = []
    for path in find_partials(output_paths):
        try:
            os.unlink(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def _relative_parts(folder: Path, root: Path | None) -> tuple[Path, tuple[str, ...]]:
    """(root to open as named, folder parts below it opened without following links)."""
    if root is None:
        return folder, ()
    root = Path(os.path.abspath(root))
    try:
        rel = folder.relative_to(root)
    except ValueError:
        raise OutputError(f"{folder} is outside the output folder {root}") from None
    assert ".." not in rel.parts
    return root, rel.parts


@contextmanager
def atomic_fd(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Iterator[int]:
    """Yield the descriptor of a new temporary file that replaces ``path`` when the block exits
    cleanly; ``root`` (OUT_DIR) bounds the folders that are never followed through links."""
    path = Path(os.path.abspath(path))
    base, parts = _relative_parts(path.parent, None if root is None else Path(root))
    try:
        base.mkdir(parents=True, exist_ok=True)  # the root (or the folder when no root) as named
    except OSError as exc:
        raise output_error(base, exc, "make the folder") from exc
    if HAVE_DIR_FD:
        with _posix_target(base, parts, path) as (fd, commit):
            yield fd
            commit()
    else:
        with _portable_target(base, path) as (fd, commit):
            yield fd
            commit()


@contextmanager
def _posix_target(base: Path, parts: tuple[str, ...], path: Path):
    dir_fd = open_folder(base, parts, create=True)
    try:
        tmp, fd = _create_temp(path, lambda name, flags: os.open(name, flags, 0o666, dir_fd=dir_fd))

        def commit():
            os.fsync(fd)
            os.replace(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

        with _cleanup(path, fd, lambda: os.unlink(tmp, dir_fd=dir_fd)):
            yield fd, commit
    finally:
        os.close(dir_fd)


@contextmanager
def _portable_target(base: Path, path: Path):  # the one Windows path
    """Windows: no directory descriptors, so the folders are checked for links right before the
    rename (a narrow race remains between the check and the rename)."""
    make_folders_below(base, path.parent)
    check_not_redirected(base, path.parent)
    tmp, fd = _create_temp(path, lambda name, flags: os.open(path.parent / name, flags, 0o666))

    def commit():
        os.fsync(fd)
        check_not_redirected(base, path.parent)
        os.replace(path.parent / tmp, path)

    with _cleanup(path, fd, lambda: os.unlink(path.parent / tmp)):
        yield fd, commit


def _create_temp(path: Path, opener) -> tuple[str, int]:
    flags = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0))
    for _ in range(_CREATE_TRIES):
        tmp = temporary_name(path.name)
        try:
            return tmp, opener(tmp, flags)
        except FileExistsError:
            continue
        except OSError as exc:
            raise output_error(path, exc, "create a temporary file for") from exc
    raise OutputError(f"cannot create a temporary file for {path}: {_CREATE_TRIES} names taken")


@contextmanager
def _cleanup(path: Path, fd: int, unlink):
    """Close ``fd`` at the end; on any failure remove the temporary and translate OS errors."""
    closed = False
    try:
        yield
        closed = True
        os.close(fd)
    except BaseException as exc:
        if not closed:
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            unlink()
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise output_error(path, exc) from exc
        raise


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None,
                root: str | os.PathLike | None = None):
    """Yield an open temporary file object that replaces ``path`` when the block exits cleanly."""
    assert "w" in mode, "atomic_file writes new files"
    with atomic_fd(path, root) as fd:
        with os.fdopen(fd, mode, encoding=encoding, closefd=False) as fh:
            yield fh
            fh.flush()

