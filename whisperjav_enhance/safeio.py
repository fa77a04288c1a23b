"""Opening files and folders of OUT_DIR so that nothing is written through a link or into a pipe,
and appending records so that a file never holds part of one.

- :func:`open_regular` opens a file without following a link at its name (unless asked to, for
  inputs) and without blocking on a FIFO, and refuses anything that is not a regular file (a
  manifest that is a symlink to some other file, a summary path that is a device).
- :func:`open_folder` opens a folder below a root one component at a time, each without
  following links (POSIX: ``O_NOFOLLOW|O_DIRECTORY`` relative to the parent's descriptor), so a
  sub-folder swapped for a symlink cannot redirect a later create or rename made through the
  returned descriptor.
- :func:`append_whole` appends bytes and, when the write fails (a full disk), cuts the file back
  to where it was, so appended records are whole or absent.

The protections that need POSIX descriptors have one Windows path each (most users are on
Windows): :func:`_open_regular_windows` and :func:`check_not_redirected`, which test for links
right before acting (a narrow race, documented where they are used); what counts as a link there
is :func:`_is_junction`'s."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .diskspace import output_error
from .errors import OutputError

# True where files and folders can be opened relative to a folder's descriptor without following
# links, and renamed between such descriptors (Linux, macOS, the BSDs); False on Windows.
HAVE_DIR_FD = (os.name == "posix" and hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY")
               and {os.open, os.mkdir, os.rename, os.unlink} <= os.supports_dir_fd)  # rename: replace too

# Flags every open here adds: binary mode (Windows) and no inheritance by child processes
# (O_CLOEXEC on POSIX, O_NOINHERIT on Windows); 0 where the platform has no such flag.
O_BINARY = getattr(os, "O_BINARY", 0)
O_CLOEXEC = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOINHERIT", 0)
# The reparse tag of a junction (stat has it on Windows only; the value is Windows' own).
_MOUNT_POINT_TAG = getattr(stat, "IO_REPARSE_TAG_MOUNT_POINT", 0xA0000003)


class NotRegularFile(OSError):
    """The path names a folder, a pipe, a device or a socket where a regular file was expected."""


class IsLink(OSError):
    """The path is a symbolic link (or a junction) where links are never followed."""


def is_link(path: str | os.PathLike) -> bool:
    """True for a symbolic link, and on Windows for a junction too (both lead elsewhere)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISLNK(st.st_mode) or _is_junction(st)


def _is_junction(st: os.stat_result) -> bool:  # the one Windows test (always False on POSIX)
    """Windows: a junction (a mount-point reparse point) redirects like a link. Other reparse
    points are ordinary files and folders to us (OneDrive placeholders, deduplicated files):
    refusing them would refuse a user's own folders. shutil.rmtree draws the same line."""
    attributes = getattr(st, "st_file_attributes", 0)  # only Windows has these two fields
    return bool(attributes & stat.FILE_ATTRIBUTE_REPARSE_POINT) and \
        getattr(st, "st_reparse_tag", 0) == _MOUNT_POINT_TAG


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular(path: str | os.PathLike, flags: int, mode: int = 0o666, *,
                 follow_links: bool = False) -> int:
    """``os.open`` for a regular file that is never a link, never blocks and is never a pipe;
    the descriptor returned blocks as usual.

    Raises :class:`IsLink` when ``path`` is a symbolic link (unless ``follow_links``: for inputs,
    a link to a scene is a scene), :class:`NotRegularFile` when it is (or leads to) a
    folder/pipe/device/socket, and the OS's error otherwise. ``mode`` applies when created (the
    umask applies as for any new file)."""
    if not HAVE_DIR_FD:
        return _open_regular_windows(path, flags, mode, follow_links)
    nofollow = 0 if follow_links else os.O_NOFOLLOW
    try:
        # O_NONBLOCK: opening a FIFO for reading would wait for a writer; a regular file ignores it.
        fd = os.open(path, flags | nofollow | os.O_NONBLOCK | O_CLOEXEC, mode)
    except OSError as exc:
        if nofollow and exc.errno in (errno.ELOOP, errno.EMLINK) and is_link(path):
            raise IsLink(errno.ELOOP, "is a symbolic link", str(path)) from None
        if exc.errno == errno.EISDIR:
            raise NotRegularFile(errno.EISDIR, "is a folder", str(path)) from None
        raise
    return _checked_regular(fd, path)


def _checked_regular(fd: int, path) -> int:
    """``fd`` once it is known to be a regular file, blocking again (closed and raised if not)."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(errno.EINVAL, f"is {file_kind(st.st_mode)}", str(path))
        if HAVE_DIR_FD:
            import fcntl

            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_regular_windows(path, flags: int, mode: int, follow_links: bool) -> int:  # Windows
    """Windows has no O_NOFOLLOW: refuse a link found right before the open (a narrow race), and
    a non-regular file right after it (Windows has no FIFOs in the file namespace)."""
    if not follow_links and is_link(path):
        raise IsLink(errno.ELOOP, "is a symbolic link", str(path))
    if os.path.isdir(path):
        raise NotRegularFile(errno.EISDIR, "is a folder", str(path))
    return _checked_regular(os.open(path, flags | O_BINARY | O_CLOEXEC, mode), path)


def describe_open_error(path, exc: OSError, what: str) -> str:
    """One line for people about why ``what`` at ``path`` could not be opened."""
    if isinstance(exc, IsLink):
        return (f"{what} {path} is a symbolic link; it is never written through a link (it could "
                "lead outside the output folder or onto an input): remove the link")
    if isinstance(exc, NotRegularFile):
        return f"{what} {path} {exc.strerror}, not a regular file; remove it or choose another path"
    return f"cannot open {what} {path}: {exc.strerror or exc}"


def open_folder(root: str | os.PathLike, parts: tuple[str, ...] | list[str], create: bool) -> int:
    """Descriptor of ``root/parts...`` (POSIX), created when missing if ``create``.

    ``root`` itself is opened as named (the user chose it; it may be a link); each of ``parts``
    is opened relative to its parent without following links, so a part that is or becomes a
    link makes this fail instead of leading elsewhere. Raises :class:`OutputError`."""
    assert HAVE_DIR_FD, "open_folder needs POSIX directory descriptors"
    dir_flags = os.O_RDONLY | os.O_DIRECTORY | O_CLOEXEC
    try:
        fd = os.open(root, dir_flags)
    except OSError as exc:
        raise output_error(root, exc, "open the folder") from exc
    where = Path(root)
    try:
        for part in parts:
            assert part not in ("", ".", "..") and "/" not in part, f"bad path part {part!r}"
            where = where / part
            child = _open_child_folder(fd, part, where, create, dir_flags)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_child_folder(parent_fd: int, part: str, where: Path, create: bool, dir_flags: int) -> int:
    """Open ``part`` below ``parent_fd``, making it first if allowed."""
    try:
        try:
            child = os.open(part, dir_flags | os.O_NOFOLLOW, dir_fd=parent_fd)
        except FileNotFoundError:
            if not create:
                raise
            try:
                os.mkdir(part, 0o777, dir_fd=parent_fd)
            except FileExistsError:
                pass  # made meanwhile by a neighbouring worker
            child = os.open(part, dir_flags | os.O_NOFOLLOW, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise OutputError(f"{where} is a symbolic link or not a folder; outputs are never "
                              "written through links (it could lead outside the output folder)"
                              ) from exc
        raise output_error(where, exc, "make the folder") from exc
    return child


def parts_below(root: str | os.PathLike, folder: str | os.PathLike) -> tuple[Path, tuple[str, ...]]:
    """(``root`` absolute, the names leading from it down to ``folder``); ``()`` when ``folder``
    is ``root``. :class:`OutputError` when ``folder`` is not ``root`` or below it (compared
    lexically: what lies below is then opened or checked without following links)."""
    root_abs, folder_abs = Path(os.path.abspath(root)), Path(os.path.abspath(folder))
    try:
        rel = folder_abs.relative_to(root_abs)
    except ValueError:
        raise OutputError(f"{folder_abs} is outside the output folder {root_abs}") from None
    assert ".." not in rel.parts  # abspath normalised them away
    return root_abs, rel.parts


def make_folders_below(root: str | os.PathLike, folder: str | os.PathLike) -> None:
    """Create ``folder`` below ``root`` one level at a time, refusing a link on the way (the
    path-based counterpart of :func:`open_folder`, where :data:`HAVE_DIR_FD` is False)."""
    where, parts = parts_below(root, folder)
    for part in parts:
        where = where / part
        if is_link(where):
            raise OutputError(f"{where} is a link; outputs are never written through links "
                              "(it could lead outside the output folder)")
        try:
            where.mkdir(exist_ok=True)
        except OSError as exc:
            raise output_error(where, exc, "make the folder") from exc


def check_not_redirected(root: str | os.PathLike, folder: str | os.PathLike) -> None:
    """Raise :class:`OutputError` unless ``folder`` is ``root`` or lies below it through real
    folders only (no link or junction on the way). The path-based check used where
    :data:`HAVE_DIR_FD` is False, made right before a rename (a narrow race remains there)."""
    root_abs, parts = parts_below(root, folder)
    where = root_abs
    for part in parts:
        where = where / part
        if is_link(where) or not where.is_dir():
            raise OutputError(f"{where} is a link or not a folder; outputs are never written "
                              "through links (it could lead outside the output folder)")
    if not where.resolve().is_relative_to(root_abs.resolve()):
        raise OutputError(f"{where} leads outside the output folder {root_abs}")


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte (``os.write`` may write fewer than asked, e.g. as the disk fills)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # pragma: no cover - a regular file never returns 0 for a non-empty write
            raise OSError(errno.EIO, "the file accepted no data")
        view = view[n:]


def append_whole(fd: int, data: bytes, path: str | os.PathLike) -> None:
    """Append ``data`` to the file open at ``fd`` (with ``O_APPEND``) all or nothing.

    On failure the file is cut back to its size before the call, so a reader never meets part of
    a record, and :class:`OutputError` (:class:`~.diskspace.DiskFull` for a full disk) is raised.
    Single writer assumed (the run holds OUT_DIR's lock)."""
    size = os.fstat(fd).st_size
    try:
        write_all(fd, data)
    except OSError as exc:
        try:
            os.ftruncate(fd, size)  # shrinking needs no free space
        except OSError:
            pass
        raise output_error(path, exc, "append to") from exc


__all__ = ["HAVE_DIR_FD", "O_BINARY", "O_CLOEXEC", "NotRegularFile", "IsLink", "is_link",
           "file_kind", "open_regular", "describe_open_error", "open_folder", "parts_below",
           "make_folders_below", "check_not_redirected", "write_all", "append_whole"]
