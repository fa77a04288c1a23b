"""Small real filesystems for tests of full disks: a tmpfs and a loop-mounted ext4 image.

Mounting needs root (or CAP_SYS_ADMIN); where it is refused the test is skipped with the reason.
Every mount is unmounted in the fixture's teardown, and the teardown fails the test if a mount is
left behind."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

_TIMEOUT_S = 60


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=_TIMEOUT_S)


def _is_mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mounts", encoding="utf-8") as fh:
        return any(line.split()[1] == target for line in fh if len(line.split()) > 1)


def _mount(cmd: list[str], point: Path) -> None:
    if os.name != "posix" or not Path("/proc/self/mounts").exists():
        pytest.skip("mounting a test filesystem needs Linux")
    if shutil.which(cmd[0]) is None:
        pytest.skip(f"{cmd[0]} is not installed")
    try:
        res = _run(cmd)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a test filesystem: {exc}")
    if res.returncode != 0:
        pytest.skip(f"mounting a test filesystem is not permitted here: {res.stderr.strip()}")


def _unmount(point: Path) -> None:
    if not _is_mounted(point):
        return
    res = _run(["umount", str(point)])
    if res.returncode != 0:
        _run(["umount", "-l", str(point)])  # busy: detach now, freed when the last user goes
    assert not _is_mounted(point), f"could not unmount {point}: {res.stderr.strip()}"


def fill(folder: Path, leave_bytes: int = 0) -> Path:
    """Fill ``folder``'s filesystem with one file, then free ``leave_bytes`` of it; returns the
    filler (delete it to free the space)."""
    filler = folder / "filler.bin"
    chunk = b"\xa5" * 65536
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        while True:
            try:
                if os.write(fd, chunk) <= 0:
                    break
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2]
        size = os.fstat(fd).st_size
        os.ftruncate(fd, max(0, size - leave_bytes))
        os.fsync(fd)
    finally:
        os.close(fd)
    return filler


@contextmanager
def mounted_tmpfs(point: Path, size_mib: int, *options: str):
    """A fresh tmpfs of size_mib mounted on point (created) for the block; yields point."""
    point.mkdir(exist_ok=True)
    _mount(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size_mib}m", *options]), "tmpfs",
            str(point)], point)
    try:
        yield point
    finally:
        _unmount(point)


@contextmanager
def mounted_ext4(point: Path, size_mib: int):
    """A fresh ext4 of size_mib (no reserved blocks) in an image beside point, loop-mounted on
    point (created) for the block; yields point."""
    image = point.with_name(point.name + ".img")
    point.mkdir(exist_ok=True)
    with open(image, "wb") as fh:
        fh.truncate(size_mib << 20)
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 is not installed")
    res = _run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)])
    if res.returncode != 0:
        pytest.skip(f"mkfs.ext4 failed: {res.stderr.strip()}")
    _mount(["mount", "-o", "loop", str(image), str(point)], point)
    try:
        yield point
    finally:
        _unmount(point)


@contextmanager
def mounted(kind: str, point: Path, size_mib: int):
    """mounted_tmpfs or mounted_ext4 by name, for tests parametrised over both."""
    with (mounted_tmpfs if kind == "tmpfs" else mounted_ext4)(point, size_mib) as fs:
        yield fs


@pytest.fixture
def tmpfs(tmp_path):
    """A fresh 4 MiB tmpfs; yields its mount point."""
    with mounted_tmpfs(tmp_path / "tmpfs", 4, "mode=0755") as point:
        yield point


@pytest.fixture
def readonly_fs(tmp_path):
    """A read-only tmpfs (permissions bind even for root there); yields its mount point."""
    with mounted_tmpfs(tmp_path / "rofs", 1, "ro") as point:
        yield point


@pytest.fixture
def ext4(tmp_path):
    """A fresh 8 MiB ext4 filesystem on a loop device (no reserved blocks); yields its mount point."""
    with mounted_ext4(tmp_path / "ext4", 8) as point:
        yield point


@pytest.fixture(params=["tmpfs", "ext4"])
def small_fs(request):
    """Each small filesystem in turn (a folder on it, so lost+found stays out of the way)."""
    root = request.getfixturevalue(request.param)
    folder = root / "out"
    folder.mkdir()
    return folder
