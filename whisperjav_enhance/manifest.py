"""The run's records on disk: ``OUT_DIR/manifest.jsonl`` and ``summary.json``.

The manifest gets one JSON line per scene and terminal state, appended and flushed as each scene
finishes, so a run killed at any moment (even with SIGKILL) leaves a valid prefix; reruns append
to the same file, each line carrying its run's id. A line is appended whole or not at all: a write
that fails (a full disk) is cut back off and raised as :class:`OutputError` (``DiskFull`` for a
full disk), and the run decides what to do. The manifest is opened without following a link at
its name and refused when it is not a regular file, so its lines can never land in another file.
The summary is written once at the end of a run, atomically (temporary name, then rename, which
replaces a link at the name instead of writing through it), so a reader never sees half of it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import uuid
from pathlib import Path
from typing import Any

from .atomic import atomic_file
from .diskspace import output_error
from .errors import OutputError
from .safeio import append_whole, describe_open_error, open_regular

MANIFEST_NAME = "manifest.jsonl"
SUMMARY_NAME = "summary.json"


def new_run_id() -> str:
    """Short unique id that ties a run's manifest lines and summary together."""
    return _dt.datetime.now().strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


class Manifest:
    """Append-only JSON-lines log of scene outcomes.

    Each line is written with one ``write`` call on an ``O_APPEND`` descriptor: the OS has it even
    if this process is killed right after. Lines are not fsynced (a power cut may lose the newest
    lines, never corrupt older ones; the outputs themselves are fsynced by the writer).
    """

    def __init__(self, path: str | os.PathLike, run_id: str):
        self.path = Path(path)
        self.run_id = run_id
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = open_regular(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
        except OSError as exc:
            raise OutputError(describe_open_error(self.path, exc, "the manifest")) from exc
        try:
            self._end_cut_line()
        except BaseException:
            self.close()
            raise

    def _end_cut_line(self) -> None:
        """A line cut off by a crash stays alone on its line instead of gluing itself to ours;
        readers skip it."""
        try:
            size = os.fstat(self._fd).st_size
            if size == 0:
                return
            os.lseek(self._fd, size - 1, os.SEEK_SET)  # O_APPEND writes go to the end anyway
            last = os.read(self._fd, 1)
        except OSError as exc:
            raise output_error(self.path, exc, "read") from exc
        if last != b"\n":
            append_whole(self._fd, b"\n", self.path)

    def write(self, record: dict[str, Any]) -> None:
        """Append one line; OutputError (DiskFull on a full disk) leaves the file as it was."""
        if self._fd is None:
            raise OutputError(f"the manifest {self.path} is closed")
        line = {"run": self.run_id, "time": _now(), **record}
        data = (json.dumps(line, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        append_whole(self._fd, data, self.path)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> "Manifest":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every complete, parseable line of a manifest (lines cut off by a crash are skipped)."""
    records = []
    try:
        fd = open_regular(path, os.O_RDONLY)
    except FileNotFoundError:
        return records
    except OSError as exc:
        raise OutputError(describe_open_error(path, exc, "the manifest")) from exc
    with os.fdopen(fd, "rb") as fh:
        text = fh.read().decode("utf-8", errors="replace")
    for line in text.split("\n"):
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            records.append(obj)
    return records


def write_json_atomic(path: str | os.PathLike, data: dict[str, Any],
                      root: str | os.PathLike | None = None) -> Path:
    """Write ``data`` as indented JSON under ``path`` via a temporary name and a rename; ``root``
    (OUT_DIR, when ``path`` is in it) bounds the folders never followed through links."""
    path = Path(path)
    with atomic_file(path, "w", encoding="utf-8", root=root) as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False, default=str)
        fh.write("\n")
    return path
