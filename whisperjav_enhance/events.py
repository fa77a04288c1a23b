"""Progress leaves the library as these small frozen events, passed to an ``on_event`` callback.
Only the CLI renders them; pipelines may log or ignore them."""

from __future__ import annotations

from dataclasses import dataclass


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
    index: int               # position of the scene in the run's (naturally sorted) list
    input_path: str
    output_path: str | None  # None when the scene failed
    status: str              # "enhanced", "skipped" or "failed"
    reason: str | None       # short code when failed (errors.SceneError.reason)
    message: str | None      # one line for people when failed
    duration_s: float        # audio seconds of the scene (0 when it could not be probed)
    worker: int | None       # id of the worker that produced it


@dataclass(frozen=True)
class WorkerStarted:
    worker: int              # id, unique within the run
    device: str
    pid: int
    startup_s: float         # spawn to model loaded


@dataclass(frozen=True)
class WorkerRetired:
    worker: int
    reason: str              # "max_scenes", "drift", "inactive_split", "alloc_retries", "oom",
                             # "cuda_error", "worker_error", "shutdown", "load_failed"
    scenes_done: int


@dataclass(frozen=True)
class WorkerCrashed:
    worker: int
    description: str         # exit code or signal name and the likely cause
    requeued: int            # scenes sent back to the queue


@dataclass(frozen=True)
class Telemetry:
    worker: int
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
    level: str = "info"      # "info" or "warning"
