"""What crosses the boundary between the driver and a worker: the task and worker descriptions the
parent builds, and the small frozen messages the two exchange (over a pipe, a Ray stream, or a
plain call in-process).

Everything here is plain data (paths, numbers, short strings): audio never crosses, the worker
reads and writes scene files itself. Scenes are named by their run index. Importing this module
imports neither torch nor numpy, so a spawned child can unpickle its arguments before it has set
``CUDA_VISIBLE_DEVICES``.

    driver -> worker:  UnitAssignment, Shutdown
    worker -> driver:  Ready | LoadFailed, then per unit: (SceneDone | Alive)* UnitDone,
                       and last of all Retiring (why it leaves, and what it leaves unfinished)
    transport -> driver: UnitLost (a unit ended without UnitDone)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..devices import DeviceSlot
from ..records import SceneResult
from .telemetry import MemorySnapshot

# -- what the executor is asked to do -------------------------------------------------------------


@dataclass(frozen=True)
class SceneTask:
    """One scene to enhance: where to read it, where to write it, how to write it."""

    index: int                      # the scene's run index (what every record reports)
    input_path: str
    output_path: str                # final path; the worker writes it atomically
    duration_s: float               # from audio.probe in the parent
    output_sample_rate: int | None  # Hz; None keeps the input's rate
    subtype: str = "PCM_16"         # audio.SUBTYPES
    clip: str = "clip"              # audio.CLIP_POLICIES
    out_dir: str | None = None      # OUT_DIR: folders below it are never followed through links
                                    # while writing (None: the output's folder as named)

    def __post_init__(self):
        if not self.input_path or not self.output_path:
            raise ValueError(f"scene {self.index}: input_path and output_path are required")
        if self.output_sample_rate is not None and self.output_sample_rate <= 0:
            raise ValueError(f"scene {self.index}: output_sample_rate must be positive")

    def result(self, status: str, reason: str | None = None, message: str | None = None,
               worker: int | None = None, seconds: float = 0.0,
               detail: str | None = None) -> SceneResult:
        """This task's record with the given outcome (the output path only when enhanced)."""
        return SceneResult(self.index, self.input_path,
                           self.output_path if reason is None else None, status, reason, message,
                           self.duration_s, worker, float(seconds), detail)


@dataclass(frozen=True)
class WorkerSpec:
    """How to build one device slot's workers."""

    backend: str                    # canonical backend name, or "package.module:Class" (tests)
    weights_path: str | None        # resolved by the parent (backend.weights.path)
    backend_options: dict           # keyword options for the backend class's resolve()
    slot: DeviceSlot                # CUDA_VISIBLE_DEVICES and torch device for the child
    env: dict = field(default_factory=dict)  # extra environment for the child, set before torch is
                                             # imported (e.g. PYTORCH_CUDA_ALLOC_CONF for benchmarks)

    def __post_init__(self):
        if not self.backend:
            raise ValueError("WorkerSpec.backend is required")
        if not isinstance(self.slot, DeviceSlot):
            raise ValueError(f"WorkerSpec.slot must be a devices.DeviceSlot, not {self.slot!r}")


# -- driver -> worker -----------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitAssignment:
    """A work unit: enhance these scenes together (windows from all of them share forwards)."""

    unit_id: int                    # planning.WorkUnit.unit_id (requeued scenes keep it)
    tasks: tuple[SceneTask, ...]    # the scenes, in run order
    oom_final: tuple[int, ...] = () # scenes that already ran out of memory alone in another
                                    # worker: another OOM fails them instead of retiring
    isolate: bool = False           # run the scenes one at a time (they were in flight at a crash)


@dataclass(frozen=True)
class Shutdown:
    """No more work: close the backend, answer with Retiring("shutdown") and exit."""


# -- worker -> driver -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    """The model is loaded; the worker waits for units."""

    worker: int                     # the worker's id (Worker.id)
    pid: int                        # its process id (the driver watches and reports it)
    startup_s: float                # seconds from entering the worker's entry point to loaded
    device: str                     # torch device inside the worker ("cpu", "cuda:0")
    device_name: str                # e.g. the GPU's name, or "cpu"
    budget_bytes: int | None        # device bytes one forward may use (None: no limit, CPU)
    total_bytes: int | None         # device memory (None on CPU)


@dataclass(frozen=True)
class LoadFailed:
    """The backend could not be built or loaded. Whether that ends the run is the driver's call
    (failures.load_failure_is_fatal): a setup error does, a later worker's bad luck does not."""

    worker: int                     # the worker's id
    error_type: str                 # class name of the exception in the worker
    message: str                    # str(exception)
    traceback_text: str             # the worker's formatted traceback
    searched: tuple[str, ...] = ()  # WeightsError.searched, so the parent can rebuild it


@dataclass(frozen=True)
class SceneDone:
    """One scene reached its terminal state in the worker (sent as soon as it does)."""

    worker: int                     # the worker's id
    result: SceneResult             # seconds: wall seconds since the unit's previous result


@dataclass(frozen=True)
class Alive:
    """A forward finished (sent at most every runtime.HEARTBEAT_S): the worker is slow, not hung.

    Without it the watchdog could only time whole scenes, and a long scene on a slow device (a
    20-minute scene on a CPU) would be killed as hung, twice, then quarantined."""

    worker: int                     # the worker's id


@dataclass(frozen=True)
class UnitDone:
    """A unit is finished and its tensors freed; the worker's allocator state at that point."""

    worker: int                     # the worker's id
    unit_id: int                    # the unit's (UnitAssignment.unit_id)
    scenes_done: int                # scenes this worker finished in its life, this unit included
    busy_s: float                   # wall seconds spent on the unit
    memory: MemorySnapshot          # after gc and, if on, empty_cache
    batch_sizes: dict               # padded window samples -> batch size the engine chose
    forwards: int                   # network calls in this worker's life
    oom_events: int                 # forwards that ran out of memory and were retried smaller
    retiring: str | None = None     # set when the worker leaves after this unit (status.Retirement;
                                    # its Retiring message follows), so no new unit comes its way


@dataclass(frozen=True)
class UnitLost:
    """Said by a transport, not a worker: the worker's unit ended without its UnitDone (a bug in
    the worker code; Ray notices it when the unit's stream ends). Its unreported scenes go back."""

    worker: int                     # the worker's id


@dataclass(frozen=True)
class Retiring:
    """The worker's last message: why it leaves, and which of its unit's scenes it did not finish."""

    worker: int                     # the worker's id
    reason: str                     # status.Retirement
    scenes_done: int                # scenes it finished in its life
    unfinished: tuple[int, ...] = ()  # scenes to run elsewhere (oom, cuda_error, worker_error)
    culprit: int | None = None        # the scene whose window ran out of memory alone (oom)
    message: str = ""                 # the measurement or error behind it (may hold a traceback)
