"""What an OUT_DIR holds besides the outputs, and the rules that keep it one run's at a time.

- **The run lock**, ``OUT_DIR/.whisperjav-enhance.lock`` (:func:`hold_out_dir`): an OS lock held
  for the whole run and naming its holder (pid, host, start time). A second run on the same
  folder is refused with :class:`OutDirBusy` (a ConfigError: exit code 2) naming the first; the
  lock of a run that died (however it died) is free and simply taken over (see locking.py).
- **Temporaries** are removed only under the lock (:func:`remove_stale_temporaries`), so a second
  run can never delete a live run's temporary: it is refused before it gets that far.
- **Settings records**, ``OUT_DIR/.whisperjav-enhance.outputs.jsonl`` (:class:`OutputRecords`,
  :mod:`.fingerprints`): what produced each output, so a rerun skips only outputs made with the
  same settings.
- **The summary path** (:func:`check_summary_path`), checked before any work with the rules of
  outputs: never an input, the manifest, an output, a folder, a link or a pipe.

The manifest and summary themselves are written by manifest.py (opened without following links).
Every file here is opened without following a link at its name (safeio.open_regular); OUT_DIR
itself may be a link (the user named it)."""

from __future__ import annotations

import errno
import json
import os
import stat
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from . import locking
from .atomic import atomic_file, remove_partials
from .diskspace import output_error
from .errors import ConfigError, OutputError
from .preflight import check_out_dir_is_folder
from .safeio import append_whole, describe_open_error, file_kind, is_link, open_regular
from .scenes import same_path_key

LOCK_NAME = ".whisperjav-enhance.lock"
RECORDS_NAME = ".whisperjav-enhance.outputs.jsonl"
RUN_PURPOSE = "whisperjav-enhance run"


class OutDirBusy(ConfigError):
    """Another live run holds OUT_DIR's lock; ``holder`` is what it wrote (pid, host, started)."""

    def __init__(self, out_root: Path, holder: dict):
        self.out_root = Path(out_root)
        self.holder = dict(holder)
        super().__init__(f"the output folder {out_root} is in use by another run "
                         f"({locking.describe_holder(holder)}); wait for it to finish, stop it, or "
                         "choose another -o/--out-dir")


@dataclass
class RunLock:
    """Proof that this process holds OUT_DIR (``held`` turns False when the lock is released)."""

    out_root: Path                              # OUT_DIR, absolute
    holder: dict = field(default_factory=dict)  # what this run wrote into the lock file
    held: bool = True


@contextmanager
def hold_out_dir(out_dir: str | os.PathLike) -> Iterator[RunLock]:
    """Hold OUT_DIR for the block (creating it if needed); released on every exit path.

    Raises :class:`OutDirBusy` (exit 2) when another live run holds it, :class:`OutputError`
    when OUT_DIR is not a folder or the lock file cannot be made (e.g. it is a link)."""
    out_root = Path(os.path.abspath(out_dir))
    check_out_dir_is_folder(out_root)
    lock_path = out_root / LOCK_NAME
    stack = ExitStack()
    try:
        holder = stack.enter_context(locking.hold(lock_path, RUN_PURPOSE))
    except locking.LockBusy as exc:
        raise OutDirBusy(out_root, exc.holder) from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK) and is_link(lock_path):
            raise OutputError(f"the lock file {lock_path} is a symbolic link; remove it") from None
        raise OutputError(f"cannot lock the output folder {out_root}: {exc.strerror or exc}; "
                          "choose a writable -o/--out-dir") from exc
    with stack:
        lock = RunLock(out_root, dict(holder))
        try:
            yield lock
        finally:
            lock.held = False


def remove_stale_temporaries(lock: RunLock, output_paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Remove what interrupted runs left: the temporaries of ``output_paths`` (and of OUT_DIR's
    own records). Only under the run lock: no other run is live, so none of them is in use."""
    assert lock.held, "temporaries are removed only while the run holds OUT_DIR's lock"
    return remove_partials([*output_paths, lock.out_root / RECORDS_NAME], root=lock.out_root)


# -- settings records ---------------------------------------------------------------------------
class Match:
    """How an existing output relates to the settings of this run (:meth:`OutputRecords.match`)."""

    SAME = "same"              # recorded with the same fingerprint: skipped
    CHANGED = "changed"        # recorded with another fingerprint: redone (say how many)
    UNRECORDED = "unrecorded"  # no record that still describes the file: kept and skipped


# Records are rewritten to the latest one per output once the file holds this many times more
# lines than outputs (plus the slack), so reruns with --overwrite do not grow it without end.
COMPACT_FACTOR = 3
COMPACT_SLACK = 1000


@dataclass(frozen=True)
class OutputRecord:
    """One line of the records file: what produced one output."""

    output: str         # path relative to OUT_DIR, POSIX separators
    fingerprint: str    # fingerprints.fingerprint of the settings
    settings: dict      # fingerprints.output_settings, for saying what changed
    size: int           # the output's size when recorded (bytes)
    mtime_ns: int       # its modification time then: a file replaced since has no record
    run: str | None     # the run that wrote it

    def to_line(self) -> str:
        """The record as one line of the records file (newline included)."""
        return json.dumps({"output": self.output, "fp": self.fingerprint, "size": self.size,
                           "mtime_ns": self.mtime_ns, "run": self.run, "settings": self.settings},
                          ensure_ascii=False, sort_keys=True) + "\n"

    @classmethod
    def from_line(cls, line: str) -> "OutputRecord | None":
        """The record a line holds; None for a cut, foreign or malformed line."""
        try:
            obj = json.loads(line)
            rec = cls(obj["output"], obj["fp"], obj.get("settings") or {}, obj["size"],
                      obj["mtime_ns"], obj.get("run"))
        except (ValueError, TypeError, KeyError):
            return None
        ok = (isinstance(rec.output, str) and isinstance(rec.fingerprint, str)
              and isinstance(rec.settings, dict) and type(rec.size) is int
              and type(rec.mtime_ns) is int)
        return rec if ok else None


class OutputRecords:
    """The settings records of one OUT_DIR (``.whisperjav-enhance.outputs.jsonl``).

    One JSON line per output written, appended whole (a failed append is cut back off) after the
    output is in place; read robustly (cut or foreign lines are skipped; the latest line of an
    output wins). A record counts only while the file still has the size and modification time
    it had when recorded, so an output replaced by another program is "unrecorded".

    Outputs with no record (made by a version before these records, by another program, or by a
    run killed between an output's rename and its record) are **kept and skipped**: their settings
    cannot be known, redoing them could cost a whole rerun for nothing, and ``--overwrite`` redoes
    them. The run counts and notes them. Writing needs the run lock (``lock``)."""

    def __init__(self, out_dir: str | os.PathLike, lock: RunLock | None = None):
        self.out_root = Path(os.path.abspath(out_dir))
        self.path = self.out_root / RECORDS_NAME
        self.lock = lock
        self._latest: dict[str, OutputRecord] | None = None
        self._lines = 0
        self._fd: int | None = None

    def lookup(self, output_path: str | os.PathLike) -> OutputRecord | None:
        """The record of ``output_path`` if it still describes the file on disk, else None."""
        rec = self._load().get(self._key(output_path))
        if rec is None:
            return None
        st = _stat_or_none(Path(output_path))
        if st is None or st.st_size != rec.size or st.st_mtime_ns != rec.mtime_ns:
            return None
        return rec

    def match(self, output_path: str | os.PathLike, fp: str) -> str:
        """:class:`Match` of an existing output against this run's fingerprint ``fp``."""
        rec = self.lookup(output_path)
        if rec is None:
            return Match.UNRECORDED
        return Match.SAME if rec.fingerprint == fp else Match.CHANGED

    def record(self, output_path: str | os.PathLike, fp: str, settings: dict | None = None,
               run_id: str | None = None) -> None:
        """Record that ``output_path`` (already in place) was made with ``fp``. OutputError
        (DiskFull on a full disk) leaves the records as they were; so does an output that is
        gone or unreadable by now (something else removed it after its rename)."""
        self._require_lock()
        try:
            st = os.stat(output_path)
        except OSError as exc:
            raise output_error(output_path, exc, "record") from exc
        rec = OutputRecord(self._key(output_path), fp, dict(settings or {}), st.st_size,
                           st.st_mtime_ns, run_id)
        latest = self._load()
        append_whole(self._open_for_append(), rec.to_line().encode("utf-8"), self.path)
        latest[rec.output] = rec
        self._lines += 1

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> "OutputRecords":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------
    def _key(self, output_path) -> str:
        rel = Path(os.path.abspath(output_path)).relative_to(self.out_root)
        return rel.as_posix()

    def _require_lock(self) -> None:
        assert self.lock is not None and self.lock.held and self.lock.out_root == self.out_root, \
            "settings records are written only while the run holds OUT_DIR's lock"

    def _open_for_append(self) -> int:
        if self._fd is None:
            try:
                self._fd = open_regular(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
            except OSError as exc:
                raise OutputError(describe_open_error(self.path, exc, "the settings records")) from exc
        return self._fd

    def _load(self) -> dict[str, OutputRecord]:
        if self._latest is None:
            self._latest, self._lines = _read_records(self.path)
            if self.lock is not None and self.lock.held and \
                    self._lines > COMPACT_FACTOR * len(self._latest) + COMPACT_SLACK:
                self._compact()
        return self._latest

    def _compact(self) -> None:
        """Rewrite the file with the latest record per output (atomically; on failure, e.g. a
        full disk, the long file simply stays)."""
        self.close()
        try:
            with atomic_file(self.path, "w", encoding="utf-8", root=self.out_root) as fh:
                for rec in self._latest.values():
                    fh.write(rec.to_line())
        except OutputError:
            return
        self._lines = len(self._latest)


def _read_records(path: Path) -> tuple[dict[str, OutputRecord], int]:
    """(latest record per output, lines read); a missing file is empty."""
    try:
        fd = open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        return {}, 0
    except OSError as exc:
        raise OutputError(describe_open_error(path, exc, "the settings records")) from exc
    with os.fdopen(fd, "rb") as fh:
        lines = fh.read().decode("utf-8", errors="replace").split("\n")
    latest: dict[str, OutputRecord] = {}
    count = 0
    for line in lines:
        rec = OutputRecord.from_line(line)
        if rec is not None:
            latest[rec.output] = rec
            count += 1
    return latest, count


# -- the summary path ----------------------------------------------------------------------------
def summary_target(path: str | os.PathLike) -> Path:
    """The file ``--summary-json PATH`` names: ``~`` expanded (a quoted ``~/s.json`` reaches us
    unexpanded), absolute. Checked and written as this one path."""
    return Path(os.path.abspath(Path(path).expanduser()))


def check_summary_path(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike],
                       outputs: Iterable[str | os.PathLike], manifest: str | os.PathLike | None,
                       out_dir: str | os.PathLike | None = None) -> Path:
    """Check ``--summary-json`` before any work; returns the path checked (:func:`summary_target`),
    which is the one to write, or raises ConfigError.

    Refused: an existing folder, link, pipe or device at the path; one of the run's inputs, its
    manifest, one of its outputs or OUT_DIR's own files; a path whose folder cannot be written.
    """
    target = summary_target(path)
    flag = f"--summary-json {target}"
    if is_link(target):
        raise ConfigError(f"{flag} is a symbolic link; name the file itself (the summary is never "
                          "written through a link)")
    st = _stat_or_none(target)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{flag} is {file_kind(st.st_mode)}; name a file instead")
    reserved = _reserved_paths(inputs, outputs, manifest, out_dir)
    clash = reserved.get(same_path_key(target)) or (_same_file_as(st, reserved) if st else None)
    if clash:
        raise ConfigError(f"{flag} is {clash}; it would be overwritten: choose another path")
    _check_folder_writable(target.parent, flag)
    return target


def _reserved_paths(inputs, outputs, manifest, out_dir) -> dict[str, str]:
    """Comparison key -> what the path is, for every path the summary must not replace."""
    reserved: dict[str, str] = {}
    for p in inputs:
        reserved[same_path_key(p)] = f"an input of this run ({p})"
    for p in outputs:
        reserved.setdefault(same_path_key(p), f"an output of this run ({p})")
    if manifest is not None:
        reserved[same_path_key(manifest)] = f"the run's manifest ({manifest})"
    if out_dir is not None:
        for name in (LOCK_NAME, RECORDS_NAME):
            reserved[same_path_key(Path(out_dir) / name)] = f"the output folder's own file {name}"
    return reserved


def _same_file_as(st: os.stat_result, reserved: dict[str, str]) -> str | None:
    """What an existing summary target is the same file as (hard links, case-insensitive
    filesystems), by device and inode."""
    for key, what in reserved.items():
        other = _stat_or_none(Path(key))
        if other is not None and os.path.samestat(st, other):
            return what
    return None


def _stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _check_folder_writable(folder: Path, flag: str) -> None:
    """The nearest existing ancestor of ``folder`` must be a writable folder."""
    here = folder
    while not os.path.lexists(here):
        if here.parent == here:
            break
        here = here.parent
    if not here.is_dir():
        raise ConfigError(f"{flag}: {here} is not a folder; choose another path")
    if not os.access(here, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag}: the folder {here} is not writable; choose another path")


__all__ = ["LOCK_NAME", "RECORDS_NAME", "OutDirBusy", "RunLock", "hold_out_dir",
           "remove_stale_temporaries", "Match", "OutputRecord", "OutputRecords",
           "summary_target", "check_summary_path"]
