"""Atomic file replacement: a file under its final name is always complete.

Data goes to a temporary file in the destination folder (same filesystem, so the rename is
atomic), is flushed to disk, then renamed over the final path; on POSIX the folder is flushed
after the rename too, so the new name survives a power cut (Windows has no call that flushes a
folder). On any failure the temporary file is removed and OS errors become
:class:`OutputError` naming the path (:class:`DiskFull` when the disk or quota is full). New files
get the permissions any new file would (the umask applies).

Where the folder lies below a ``root`` (OUT_DIR), every folder between them is opened without
following links (see :mod:`.safeio`), and the temporary is created and renamed through that
folder's descriptor: a sub-folder swapped for a symlink mid-run cannot redirect the output.

Temporary names (:func:`temporary_name`): ``.<stem prefix>~<hash of the final name>.<random>.partial``.
The hash ties a temporary to exactly one output, so :func:`remove_partials` can remove a crashed
writer's temporaries for its unfinished outputs and nothing else; the stem prefix (for people) is
shortened so the temporary is never longer than the final name, in bytes, characters or UTF-16
units, unless the final name is shorter than :data:`NAME_FLOOR`: any name that fits as an output
fits as its temporary. Older versions named them ``.<stem>.<8 of [a-z0-9_]>.partial``
(tempfile.mkstemp's); those are still recognised, so an upgrade cleans up after a crash before it.
Clean-up never goes through a link: on POSIX it scans and unlinks through one descriptor of each
folder, on Windows it checks the folders first (see :func:`remove_partials`)."""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

from .diskspace import DiskFull, output_error  # DiskFull: re-exported
from .errors import OutputError
from .safeio import (HAVE_DIR_FD, O_BINARY, O_CLOEXEC, check_not_redirected, make_folders_below,
                     open_folder, parts_below)

PARTIAL_SUFFIX = ".partial"
# Length every filesystem an OUT_DIR may live on accepts for one name (eCryptfs, the shortest
# in use, takes 143 bytes): temporaries of short names may be this long, never longer.
NAME_FLOOR = 64
_HASH_CHARS = 12     # 48 bits of the final name's SHA-256: no two outputs of a folder share it
_RANDOM_CHARS = 6    # new per attempt (creation is exclusive and retried on a clash)
_CREATE_TRIES = 100
# The random part of older versions' temporaries: tempfile.mkstemp's names (8 characters drawn
# from tempfile._RandomNameSequence.characters).
_LEGACY_RANDOM = "[a-z0-9_]{8}"
# errno values of a folder fsync on filesystems that cannot flush folders (some network and FUSE
# filesystems): the rename has happened and stands.
_NO_FOLDER_FSYNC = frozenset({errno.EINVAL, errno.ENOTSUP,
                              getattr(errno, "EOPNOTSUPP", errno.ENOTSUP)})

__all__ = ["atomic_file", "atomic_fd", "temporary_name", "partial_matcher", "find_partials",
           "remove_partials", "PARTIAL_SUFFIX", "DiskFull"]


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
    (``.<stem>.<8 of [a-z0-9_]>.partial``), so an upgrade still cleans up after a crash before it."""
    name = Path(output_path).name
    current = re.escape(_temp_prefix(name) + ".") + f"[0-9a-f]{{{_RANDOM_CHARS}}}"
    legacy = re.escape("." + Path(name).stem + ".") + _LEGACY_RANDOM
    return re.compile(f"(?:{current}|{legacy})" + re.escape(PARTIAL_SUFFIX))


def find_partials(output_paths: Iterable[str | os.PathLike],
                  root: str | os.PathLike | None = None) -> list[Path]:
    """The temporaries of these outputs present on disk (for clean-up after a crash); ``root``
    (OUT_DIR) as for :func:`remove_partials`."""
    found = []
    for folder, names, _unlink in _partials_by_folder(output_paths, root):
        found.extend(folder / name for name in names)
    return sorted(found)


def remove_partials(output_paths: Iterable[str | os.PathLike],
                    root: str | os.PathLike | None = None) -> list[Path]:
    """Delete the temporaries of these outputs; returns what went. Temporaries of other outputs
    in the same folders are left alone, so a live writer's are safe while it is not one of
    ``output_paths`` (whole-folder clean-up belongs under the run's lock, see outdir.py).

    Each folder is scanned and its temporaries unlinked through one descriptor of it (POSIX),
    reached from ``root`` (OUT_DIR) without following links, so a sub-folder swapped for a link
    leads nowhere; without ``root`` only a link at the folder itself is refused. A folder that is
    missing, a link or outside ``root`` holds none of our temporaries and is skipped."""
    removed = []
    for folder, names, unlink in _partials_by_folder(output_paths, root):
        for name in names:
            try:
                unlink(name)
                removed.append(folder / name)
            except OSError:
                pass
    return sorted(removed)


def _partials_by_folder(output_paths, root) -> Iterator[tuple[Path, list[str], Callable[[str], None]]]:
    """(folder, names of the outputs' temporaries in it, unlink(name) in that same folder)."""
    by_dir: dict[Path, list[re.Pattern]] = {}
    for p in output_paths:
        out = Path(os.path.abspath(p))
        by_dir.setdefault(out.parent, []).append(partial_matcher(out))
    for folder, patterns in by_dir.items():
        try:
            base, parts = parts_below(root, folder) if root is not None else \
                (folder.parent, (folder.name,) if folder.name else ())
            fd, names = _scan_folder(base, parts, folder)
        except (OSError, OutputError):  # missing, unreadable, a link, outside root
            continue
        try:
            names = [n for n in names if n.endswith(PARTIAL_SUFFIX)
                     and any(p.fullmatch(n) for p in patterns)]
            if fd is not None:
                yield folder, names, lambda name, fd=fd: os.unlink(name, dir_fd=fd)
            else:
                yield folder, names, lambda name, folder=folder: os.unlink(folder / name)
        finally:
            if fd is not None:
                os.close(fd)


def _scan_folder(base: Path, parts: tuple[str, ...], folder: Path) -> tuple[int | None, list[str]]:
    """(descriptor of ``folder`` or None on Windows, names of what in it is not a folder)."""
    if HAVE_DIR_FD:
        fd = open_folder(base, parts, create=False)
        try:
            return fd, [e.name for e in os.scandir(fd) if not e.is_dir(follow_symlinks=False)]
        except BaseException:
            os.close(fd)
            raise
    check_not_redirected(base, folder)  # the one Windows path: checked, then scanned by name
    return None, [e.name for e in os.scandir(folder) if not e.is_dir(follow_symlinks=False)]


@contextmanager
def atomic_fd(path: str | os.PathLike, root: str | os.PathLike | None = None) -> Iterator[int]:
    """Yield the descriptor of a new temporary file that replaces ``path`` when the block exits
    cleanly; ``root`` (OUT_DIR) bounds the folders that are never followed through links."""
    path = Path(os.path.abspath(path))
    base, parts = (path.parent, ()) if root is None else parts_below(root, path.parent)
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
            _flush_folder(dir_fd)

        with _cleanup(path, fd, lambda: os.unlink(tmp, dir_fd=dir_fd)):
            yield fd, commit
    finally:
        os.close(dir_fd)


def _flush_folder(dir_fd: int) -> None:
    """Flush the rename just made in the folder ``dir_fd`` (one fsync per output): until then a
    power cut could leave the old name, or none, though the data itself was flushed."""
    try:
        os.fsync(dir_fd)
    except OSError as exc:
        if exc.errno not in _NO_FOLDER_FSYNC:
            raise


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
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | O_BINARY | O_CLOEXEC
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

