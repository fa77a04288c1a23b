"""The run's records on disk: ``OUT_DIR/manifest.jsonl`` and ``summary.json``.

The manifest gets one JSON line per scene and terminal state, appended and flushed as each scene
finishes, so a run killed at any moment (even with SIGKILL) leaves a valid prefix; reruns append
to the same file, each line carrying its run's id. The summary is written once at the end of a
run, atomically (temporary name, then rename), so a reader never sees half of it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import uuid
from pathlib import Path
from typing import Any

from .atomic import atomic_file
from .errors import OutputError

MANIFEST_NAME = "manifest.jsonl"
SUMMARY_NAME = "summary.json"


def new_run_id() -> str:
    """Short unique id that ties a run's manifest lines and summary together."""
    return _dt.datetime.now().strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


class Manifest:
    """Append-only JSON-lines log of scene outcomes.

    Each line is written with one ``write`` call and flushed at once: the OS has it even if this
    process is killed right after. Lines are not fsynced (a power cut may lose the newest lines,
    never corrupt older ones; the outputs themselves are fsynced by the writer).
    """

    def __init__(self, path: str | os.PathLike, run_id: str):
        self.path = Path(path)
        self.run_id = run_id
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a+b")
            self._fh.seek(0, os.SEEK_END)
            if self._fh.tell() > 0:
                self._fh.seek(-1, os.SEEK_END)
                if self._fh.read(1) != b"\n":
                    # A line cut off by a crash stays alone on its line instead of gluing itself
                    # to ours; readers skip it.
                    self._fh.write(b"\n")
            self._fh.flush()
        except OSError as exc:
            raise OutputError(f"cannot write the manifest {self.path}: {exc.strerror or exc}") from exc

    def write(self, record: dict[str, Any]) -> None:
        line = {"run": self.run_id, "time": _now(), **record}
        data = (json.dumps(line, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        self._fh.write(data)
        self._fh.flush()

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> "Manifest":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_manifest(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every complete, parseable line of a manifest (lines cut off by a crash are skipped)."""
    records = []
    try:
        text = Path(path).read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return records
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


def write_json_atomic(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write ``data`` as indented JSON under ``path`` via a temporary name and a rename."""
    path = Path(path)
    with atomic_file(path, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False, default=str)
        fh.write("\n")
    return path
