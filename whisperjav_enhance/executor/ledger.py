"""Exactly one terminal state per task, the events that announce them, the telemetry, and the run's
:class:`ExecutorReport`.

A terminal state is recorded once; a second report for the same scene (which would mean it was
done twice) is ignored and logged as a warning, so the report always holds one record per task,
in task order."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

from ..events import Log, SceneFinished
from ..records import SceneResult
from ..status import Status
from .messages import SceneTask, UnitDone
from .telemetry import MIB

log = logging.getLogger("whisperjav_enhance.executor")


@dataclass(frozen=True)
class ExecutorReport:
    """What a run of the executor did, beside the per-scene records."""

    outcomes: tuple[SceneResult, ...]    # one per task, in task order (an interrupted run's:
                                         # the records made before the stop)
    workers_started: int                 # workers started (standbys included)
    recycles: dict                       # status.Retirement -> workers retired for it
    worker_crashes: int                  # workers that died without retiring (timeouts included)
    startup_seconds: tuple[float, ...]   # per ready worker, start -> model loaded
    startup_wait_seconds: float          # worker-slot seconds with work queued and no worker
                                         # ready (cost of starts; the first start included)
    peak_vram_mib: float | None          # max peak reserved over workers; None on CPU
    telemetry: tuple                     # events.Telemetry snapshots, in arrival order
    batch_sizes: dict                    # padded window samples -> batch size the workers chose
    first_ready_seconds: float = 0.0     # executor start -> first worker ready (the unavoidable wait)
    crashes: tuple[str, ...] = ()        # one line per crash: worker, exit code/signal, cause
    devices: tuple[str, ...] = ()        # device labels the transport chose itself (Ray: from the
                                         # cluster's resources); empty: the caller's slots
    lanes: int = 0                       # worker positions the run had (workers at once, at most)

    @property
    def recycle_wait_seconds(self) -> float:
        """Start-up wait after the first worker was ready: what recycles and crashes cost."""
        return max(0.0, self.startup_wait_seconds - self.first_ready_seconds)


def validate_units(n_tasks: int, units) -> list[tuple[int, ...]]:
    """The units' task positions (planner units name positions in the task list); each task must
    be in exactly one unit."""
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
    """Terminal states, telemetry and counters of one run, keyed by scene index."""

    def __init__(self, tasks: Sequence[SceneTask], on_event: Callable | None):
        self.tasks = {t.index: t for t in tasks}
        assert len(self.tasks) == len(tasks), "scene indices must be unique within a run"
        self.order = [t.index for t in tasks]
        self.results: dict[int, SceneResult] = {}
        self.on_event = on_event
        self.telemetry: list = []
        self.batch_sizes: dict = {}
        self.peak_vram_mib: float | None = None

    @property
    def remaining(self) -> int:
        return len(self.order) - len(self.results)

    def emit(self, event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def done(self, index: int) -> bool:
        return index in self.results

    def record(self, result: SceneResult) -> bool:
        """Record a scene's terminal state and announce it; False if it already had one."""
        assert result.index in self.tasks, f"scene {result.index} is not in this run"
        if result.index in self.results:
            self.emit(Log(f"scene {result.index} reported twice (second report from worker "
                          f"{result.worker} ignored)", "warning"))
            return False
        self.results[result.index] = result
        if result.detail:
            log.debug("scene %d (%s) %s in worker %s: %s\n%s", result.index, result.input_path,
                      result.reason, result.worker, result.message, result.detail)
        self.emit(SceneFinished(result))
        return True

    def fail(self, index: int, reason: str, message: str, worker: int | None = None) -> bool:
        """Fail a scene in the parent (quarantine, giving up)."""
        return self.record(self.tasks[index].result(Status.FAILED, reason, message, worker))

    def unit_done(self, msg: UnitDone) -> None:
        event = msg.memory.to_event(msg.worker, msg.scenes_done)
        self.telemetry.append(event)
        self.batch_sizes.update(msg.batch_sizes)
        peak = msg.memory.peak_reserved_bytes
        if peak is not None:
            mib = peak / MIB
            self.peak_vram_mib = mib if self.peak_vram_mib is None else max(self.peak_vram_mib, mib)
        self.emit(event)

    def outcomes(self) -> tuple[SceneResult, ...]:
        """The records so far, in task order (all of them once the run is complete)."""
        return tuple(self.results[i] for i in self.order if i in self.results)

    def report(self, complete: bool = True, **counters) -> ExecutorReport:
        """The run's report; ``complete`` False: an interrupted run's, with the records so far."""
        missing = [i for i in self.order if i not in self.results]
        if missing and complete:  # a bug in the executor, never a user's problem: say so loudly
            raise RuntimeError(f"executor finished without a terminal state for scenes {missing[:10]}")
        return ExecutorReport(outcomes=self.outcomes(), telemetry=tuple(self.telemetry),
                              batch_sizes=dict(self.batch_sizes), peak_vram_mib=self.peak_vram_mib,
                              **counters)


__all__ = ["ExecutorReport", "Ledger", "validate_units"]
