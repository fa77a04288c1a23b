"""Bookkeeping shared by the supervisor and the in-process executor: exactly one terminal state per
task, the events that announce them, and the run's :class:`PoolReport`.

A terminal state is recorded once; a second report for the same task (which would mean a scene
was done twice) is ignored and logged as a warning, so the report always holds one outcome per
task, in task order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from ..events import Log, SceneFinished
from .messages import SceneOutcome, SceneResult, SceneTask, UnitDone
from .telemetry import MIB


@dataclass(frozen=True)
class PoolReport:
    """What a run of the pool did, beside the per-scene outcomes."""

    outcomes: tuple[SceneOutcome, ...]   # exactly one per task, in task order
    workers_started: int                 # worker processes spawned (standbys included)
    recycles: dict                       # reason -> count ("max_scenes", "drift", "oom", ...)
    worker_crashes: int                  # workers that died without retiring (timeouts included)
    startup_seconds: tuple[float, ...]   # per started worker, spawn -> model loaded
    startup_wait_seconds: float          # worker-slot seconds with work queued and no worker
                                         # ready (cost of starts; the first start included)
    peak_vram_mib: float | None          # max peak reserved over workers; None on CPU
    telemetry: tuple                     # events.Telemetry snapshots, in arrival order
    batch_sizes: dict                    # padded window samples -> batch size the workers chose
    first_ready_seconds: float = 0.0     # run start -> first worker ready (the unavoidable wait)
    crashes: tuple[str, ...] = ()        # one line per crash: worker, exit code/signal, cause
    devices: tuple[str, ...] = ()        # device labels the executor chose itself (Ray: from the
                                         # cluster's resources); empty: the caller's slots

    @property
    def recycle_wait_seconds(self) -> float:
        """Startup wait after the first worker was ready: what recycles and crashes cost."""
        return max(0.0, self.startup_wait_seconds - self.first_ready_seconds)


def validate_units(n_tasks: int, units) -> list[tuple[int, ...]]:
    """The units' task positions; each task must be in exactly one unit."""
    seen = [0] * n_tasks
    out = []
    for unit in units:
        positions = tuple(int(p) for p in unit.scenes)
        for p in positions:
            if not 0 <= p < n_tasks:
                raise ValueError(f"unit {unit.unit_id} names task position {p}; there are {n_tasks} tasks")
            seen[p] += 1
        if positions:
            out.append(positions)
    missing = [i for i, n in enumerate(seen) if n == 0]
    twice = [i for i, n in enumerate(seen) if n > 1]
    if missing or twice:
        raise ValueError(f"units must name every task exactly once (missing: {missing[:10]}, "
                         f"repeated: {twice[:10]})")
    return out


class Ledger:
    """Terminal states, telemetry and counters of one run."""

    def __init__(self, tasks: Sequence[SceneTask], on_event: Callable | None):
        self.tasks = list(tasks)
        self.outcomes: list[SceneOutcome | None] = [None] * len(self.tasks)
        self.on_event = on_event
        self.telemetry: list = []
        self.batch_sizes: dict = {}
        self.peak_vram_mib: float | None = None
        self.remaining = len(self.tasks)

    def emit(self, event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def done(self, pos: int) -> bool:
        return self.outcomes[pos] is not None

    def finish(self, pos: int, status: str, reason: str | None = None, message: str | None = None,
               output_path: str | None = None, worker: int | None = None,
               seconds: float = 0.0) -> bool:
        """Record a task's terminal state and announce it; False if it already had one."""
        task = self.tasks[pos]
        if self.outcomes[pos] is not None:
            self.emit(Log(f"scene {task.index} reported twice (second report from worker {worker} "
                          "ignored)", "warning"))
            return False
        self.outcomes[pos] = SceneOutcome(task.index, status, reason, message,
                                          output_path if status == "enhanced" else None, worker,
                                          float(seconds))
        self.remaining -= 1
        self.emit(SceneFinished(task.index, task.input_path, output_path if status == "enhanced" else None,
                                status, reason, message, task.duration_s, worker))
        return True

    def scene_result(self, msg: SceneResult) -> bool:
        return self.finish(msg.pos, msg.status, msg.reason, msg.message, msg.output_path,
                           msg.worker, msg.seconds)

    def unit_done(self, msg: UnitDone) -> None:
        event = msg.memory.to_event(msg.worker, msg.scenes_done)
        self.telemetry.append(event)
        self.batch_sizes.update(msg.batch_sizes)
        peak = msg.memory.peak_reserved_bytes
        if peak is not None:
            mib = peak / MIB
            self.peak_vram_mib = mib if self.peak_vram_mib is None else max(self.peak_vram_mib, mib)
        self.emit(event)

    def report(self, **counters) -> PoolReport:
        missing = [self.tasks[i].index for i, o in enumerate(self.outcomes) if o is None]
        if missing:  # a bug in the executor, never a user's problem: say so loudly
            raise RuntimeError(f"pool finished without a terminal state for scenes {missing[:10]}")
        return PoolReport(outcomes=tuple(self.outcomes), telemetry=tuple(self.telemetry),
                          batch_sizes=dict(self.batch_sizes), peak_vram_mib=self.peak_vram_mib,
                          **counters)
