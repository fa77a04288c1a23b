"""The driver's records of its workers and lanes, with each worker's explicit state.

    STARTING --Ready--> READY --unit sent--> BUSY --UnitDone--> READY ... --Retiring--> LEAVING
        |                  |                   |                                          |
        +---- exit without Retiring (a crash), or killed by the watchdog ----------------+--> GONE

A lane is one worker position on a device slot: its active worker and, on transports that have
them, warm standbys loading to take over. Transports keep their own handle (a process and its
pipe, a Ray actor, an in-process runtime) in ``Worker.handle``; everything else here is the
driver's.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field

from .messages import Retiring, WorkerSpec


class State(enum.Enum):
    STARTING = "starting"   # spawned or created, loading its model
    READY = "ready"         # loaded and idle
    BUSY = "busy"           # running a unit
    LEAVING = "leaving"     # retired (said why); waiting for it to exit
    GONE = "gone"           # exited; only kept by whoever still holds a reference


@dataclass(eq=False)
class Lane:
    """One worker position on a device slot."""

    index: int                        # position among the run's lanes, from 0
    spec: WorkerSpec                  # the device slot and backend its workers get
    threads: int | None = None        # CPU threads each of its workers may use (None: the backend's)
    options: dict = field(default_factory=dict)  # transport-specific (Ray: actor resources)
    active: "Worker | None" = None    # the worker that takes this lane's units
    standbys: list = field(default_factory=list)  # workers loading to take over (oldest first)
    futile: int = 0                   # consecutive crashes here that finished nothing

    @property
    def label(self) -> str:
        return self.spec.slot.label


@dataclass(eq=False)
class Worker:
    """One worker as the driver sees it."""

    id: int                           # unique within the run, from 1
    lane: Lane
    state: State = State.STARTING
    handle: object = None             # the transport's
    pid: int | None = None            # once known (local: at spawn; Ray: when loaded)
    label: str = ""                   # device for people, set by the transport when ready
    started_at: float = field(default_factory=time.perf_counter)
    progress_at: float = 0.0          # last sign of progress (the watchdog's clock)
    leaving_since: float | None = None
    job: object = None                # scheduling.Job in flight, or None
    open: set = field(default_factory=set)  # scenes of the job not yet reported
    scenes_done: int = 0              # scenes it finished in its life (its own count)
    busy_s: float = 0.0               # seconds it spent on units
    memory: object = None             # last telemetry.MemorySnapshot
    finished_any: bool = False        # it gave at least one scene its terminal state
    retiring: Retiring | None = None  # its last word (then its exit is no crash)
    kill_reason: str | None = None    # why the driver killed it (then its exit says this)

    def __post_init__(self):
        self.progress_at = self.started_at


__all__ = ["State", "Lane", "Worker"]
