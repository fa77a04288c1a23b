"""Progress leaves the library as these small frozen events, passed to an ``on_event`` callback.
Only the CLI renders them; pipelines may log or ignore them."""

from __future__ import annotations

from dataclasses import dataclass

from .records import SceneResult


@dataclass(frozen=True)
class RunStarted:
    scenes_total: int        # scenes in the run, skipped ones included
    scenes_to_run: int       # scenes that will go to workers
    audio_seconds: float     # audio duration of the scenes to run
    backend: str             # canonical backend name
    device: str              # what the run uses, e.g. "cuda:0,cuda:1" or "cpu"
    note: str = ""           # e.g. why auto picked this backend


@dataclass(frozen=True)
class SceneFinished:
    """A scene reached its terminal state (announced once per scene)."""

    scene: SceneResult       # the scene's one record (records.SceneResult)

    # The record's fields, read through the event (renderers and callbacks use these).
    index = property(lambda self: self.scene.index)
    input_path = property(lambda self: self.scene.input_path)
    output_path = property(lambda self: self.scene.output_path)
    status = property(lambda self: self.scene.status)
    reason = property(lambda self: self.scene.reason)
    message = property(lambda self: self.scene.message)
    duration_s = property(lambda self: self.scene.duration_s)
    worker = property(lambda self: self.scene.worker)


@dataclass(frozen=True)
class WorkerStarted:
    worker: int              # id, unique within the run
    device: str              # where it runs, for people ("cpu", "cuda:1", "10.0.0.5/cuda:0")
    pid: int                 # its process id (on its own node, for Ray)
    startup_s: float         # spawn to model loaded


@dataclass(frozen=True)
class WorkerRetired:
    worker: int              # id, unique within the run
    reason: str              # status.Retirement
    scenes_done: int         # scenes it finished in its life


@dataclass(frozen=True)
class WorkerCrashed:
    worker: int              # id, unique within the run
    description: str         # exit code or signal name and the likely cause
    requeued: int            # scenes sent back to the queue


@dataclass(frozen=True)
class Telemetry:
    worker: int                      # id, unique within the run
    allocated_mib: float | None      # None on CPU
    reserved_mib: float | None
    inactive_split_mib: float | None
    peak_reserved_mib: float | None
    alloc_retries: int | None
    oom_count: int
    rss_mib: float
    scenes_done: int
    peak_allocated_mib: float | None = None  # highest held by live tensors during the unit (None
                                             # on CPU); last and defaulted so older callers work


@dataclass(frozen=True)
class Log:
    message: str
    level: str = "info"      # "info" or "warning" (diagnostics go to the logging module)


# -- weights downloads (whisperjav_enhance.hub): before any worker starts ---------------------------
@dataclass(frozen=True)
class DownloadStarted:
    backend: str             # canonical backend whose weights are fetched
    hub: str                 # "huggingface" or "modelscope"
    repo_id: str             # repository on that hub
    files: tuple[str, ...]   # files fetched, in order (names in the repository)
    destination: str         # the hub cache folder they go into


@dataclass(frozen=True)
class DownloadProgress:
    backend: str             # canonical backend whose weights are fetched
    filename: str            # file being received (name in the repository)
    bytes_done: int          # bytes of this file on disk so far (a resumed part included)
    bytes_total: int | None  # the file's size; None when the server did not say


@dataclass(frozen=True)
class DownloadFinished:
    backend: str             # canonical backend whose weights were fetched
    ok: bool                 # True: fetched, and the backend's strict load accepted them
    path: str | None         # folder the weights are in now; None when not ok
    seconds: float           # wall time from DownloadStarted, verification included
    message: str = ""        # why it failed, one line; empty when ok
