"""What crosses the process boundary: the task and worker descriptions the parent builds, and the
small frozen messages parent and worker exchange over one pipe per worker.

Everything here is plain data (paths, numbers, short strings): audio never crosses the pipe, the
worker reads and writes scene files itself. Importing this module imports neither torch nor numpy,
so a spawned child can unpickle its arguments before it has set ``CUDA_VISIBLE_DEVICES``.

    parent -> worker:  UnitAssignment, Shutdown
    worker -> parent:  Ready | LoadFailed, then per unit: (SceneResult | Alive)* UnitDone,
                       and last of all Retiring (why it leaves, and what it leaves unfinished)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..devices import DeviceSlot
from .telemetry import MemorySnapshot

# -- what the pool is asked to do ---------------------------------------------------------------


@dataclass(frozen=True)
class SceneTask:
    """One scene to enhance: where to read it, where to write it, how to write it."""

    index: int                      # scene index in the run (what events and manifests report)
    input_path: str
    output_path: str                # final path; the worker writes it atomically
    duration_s: float               # from audio.probe in the parent
    output_sample_rate: int | None  # Hz; None keeps the input's rate
    subtype: str = "PCM_16"         # audio.SUBTYPES
    clip: str = "clip"              # audio.CLIP_POLICIES

    def __post_init__(self):
        if not self.input_path or not self.output_path:
            raise ValueError(f"scene {self.index}: input_path and output_path are required")
        if self.output_sample_rate is not None and self.output_sample_rate <= 0:
            raise ValueError(f"scene {self.index}: output_sample_rate must be positive")


@dataclass(frozen=True)
class WorkerSpec:
    """How to build one device slot's workers."""

    backend: str                    # canonical backend name, or "package.module:Class" (tests, benchmarks)
    weights_path: str | None        # resolved by the parent (backend.weights.path)
    backend_options: dict           # keyword options for the backend class's resolve()
    slot: DeviceSlot                # devices.DeviceSlot: CUDA_VISIBLE_DEVICES + torch device for the child
    env: dict = field(default_factory=dict)  # extra environment for the child, set before torch is
                                             # imported (e.g. PYTORCH_CUDA_ALLOC_CONF for benchmarks)

    def __post_init__(self):
        if not self.backend:
            raise ValueError("WorkerSpec.backend is required")
        if not isinstance(self.slot, DeviceSlot):
            raise ValueError(f"WorkerSpec.slot must be a devices.DeviceSlot, not {self.slot!r}")


@dataclass(frozen=True)
class SceneOutcome:
    """The one terminal state of one task."""

    index: int                      # SceneTask.index
    status: str                     # "enhanced" or "failed"
    reason: str | None              # SceneError.reason when failed
    message: str | None             # one line when failed
    output_path: str | None         # when enhanced
    worker: int | None              # worker id that produced the terminal state (None: the parent)
    seconds: float                  # wall seconds the worker spent on it (share of its unit)


# -- parent -> worker -----------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitAssignment:
    """A work unit: enhance these scenes together (windows from all of them share forwards)."""

    unit_id: int                                # planning.WorkUnit.unit_id (requeues keep it)
    items: tuple[tuple[int, SceneTask], ...]    # (position in the run's task list, task)
    oom_final: tuple[int, ...] = ()             # positions that already ran out of memory in another
                                                # worker: another OOM fails them instead of retiring
    isolate: bool = False                       # run the scenes one at a time (after a crash)


@dataclass(frozen=True)
class Shutdown:
    """No more work: close the backend, answer with Retiring("shutdown") and exit."""


# -- worker -> parent -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    """The model is loaded; the worker waits for units."""

    worker: int
    pid: int
    startup_s: float                # seconds from entering the child's entry point to loaded
    device: str                     # torch device inside the worker ("cpu", "cuda:0")
    device_name: str                # e.g. the GPU's name, or "cpu"
    budget_bytes: int | None        # device bytes one forward may use (None: no limit, CPU)
    total_bytes: int | None         # device memory (None on CPU)


@dataclass(frozen=True)
class LoadFailed:
    """The backend could not be built or loaded; fatal for the run (every worker would fail)."""

    worker: int
    error_type: str                 # class name of the exception in the child
    message: str                    # str(exception)
    traceback_text: str             # the child's formatted traceback
    searched: tuple[str, ...] = ()  # WeightsError.searched, so the parent can rebuild it


@dataclass(frozen=True)
class SceneResult:
    """One scene reached its terminal state in the worker (sent as soon as it does)."""

    worker: int
    pos: int                        # position in the run's task list
    status: str                     # "enhanced" or "failed"
    reason: str | None              # short code when failed
    message: str | None             # one line when failed
    output_path: str | None         # when enhanced
    seconds: float                  # wall seconds since the previous result of the unit


@dataclass(frozen=True)
class Alive:
    """A forward finished (sent at most every worker.HEARTBEAT_S): the worker is slow, not hung.

    Without it the watchdog could only time whole scenes, and a long scene on a slow device (a
    20-minute scene on a CPU) would be killed as hung, twice, then quarantined."""

    worker: int


@dataclass(frozen=True)
class UnitDone:
    """A unit is finished and its tensors freed; the worker's allocator state at that point."""

    worker: int
    unit_id: int
    scenes_done: int                # scenes this worker finished in its life, this unit included
    busy_s: float                   # wall seconds spent on the unit
    memory: MemorySnapshot          # telemetry.MemorySnapshot (after gc and, if on, empty_cache)
    batch_sizes: dict               # padded window samples -> batch size the engine chose
    forwards: int                   # network calls in this worker's life
    oom_events: int                 # forwards that ran out of memory and were retried smaller
    retiring: str | None = None     # set when the worker leaves after this unit: the reason (its
                                    # Retiring message follows), so no new unit is sent its way


@dataclass(frozen=True)
class Retiring:
    """The worker's last message: why it leaves, and which of its unit's scenes it did not finish."""

    worker: int
    reason: str                     # "max_scenes", "drift", "inactive_split", "alloc_retries", "oom",
                                    # "cuda_error", "worker_error", "shutdown"
    scenes_done: int
    unfinished: tuple[int, ...] = ()  # positions to requeue (only for oom/cuda_error/worker_error)
    culprit: int | None = None        # position whose window ran out of memory alone (reason "oom")
    message: str = ""                 # one line for people (the measurement or error behind it)

