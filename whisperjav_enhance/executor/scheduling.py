"""The job queue and the crash rules: which scenes go to a worker next, which go back to the queue
after a crash or a retirement, when a scene is quarantined, and the run's counters (worker starts,
crashes, recycles, start-up times, start-up wait). The driver (driver.py) owns the workers and the
clock; it hands :class:`Scheduler` what they report and asks it for their next unit.

Rules:

* A job goes to a worker with only the scenes that have no terminal state yet; jobs with none left
  are dropped.
* Scenes given back (a worker ended its unit or retired without reporting them) go to the front of
  the queue as one job.
* Scenes in flight at a crash are charged one crash each and requeued one scene per job
  (``isolate``), so a batch mate's crash never condemns an innocent scene; a scene that reaches
  ``policy.max_crashes_per_scene`` crashes, the last of them alone in its worker, is quarantined.
* A retirement for ``oom`` gives the unfinished scenes to a fresh worker and marks the culprit, so
  running out of memory again fails it; ``cuda_error``/``worker_error`` charge them a crash.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Sequence

from ..atomic import remove_partials
from ..config import PoolPolicy
from ..events import Log, WorkerCrashed, WorkerRetired, WorkerStarted
from ..status import NOT_RECYCLES, SUSPECT_RETIREMENTS, Reason, Retirement
from .ledger import Ledger, ExecutorReport, validate_units
from .messages import Retiring, SceneDone, SceneTask, UnitAssignment
from .workers import Worker

log = logging.getLogger("whisperjav_enhance.executor")

NO_UNIT = -1  # unit id of scenes given back by a worker that had no job


@dataclass(frozen=True)
class Job:
    """Scenes to run together in one unit."""

    unit_id: int                # planning.WorkUnit.unit_id (requeued scenes keep it)
    scenes: tuple[int, ...]     # scene indices, in run order
    isolate: bool = False       # run the scenes one at a time (they were in flight at a crash)


def jobs_for(units: Sequence, tasks: Sequence[SceneTask]) -> list[Job]:
    """One job per non-empty planner unit (whose ``scenes`` are positions in ``tasks``);
    ValueError unless the units name every task once."""
    positions = validate_units(len(tasks), units)
    units = [u for u in units if len(u.scenes)]
    return [Job(u.unit_id, tuple(tasks[p].index for p in pos)) for u, pos in zip(units, positions)]


def max_worker_starts(policy: PoolPolicy, lanes: int, standbys_per_lane: int, jobs: int,
                      tasks: int) -> int:
    """The run's bound on worker starts: ``policy.max_worker_starts``, or automatically a start per
    lane and standby, two per unit (recycles, OOM retries), and every scene's crash allowance.
    Runs never reach the automatic bound; it exists so nothing loops forever."""
    return policy.max_worker_starts or (2 * lanes * (1 + standbys_per_lane) + 2 * jobs
                                        + tasks * (policy.max_crashes_per_scene + 1))


class Scheduler:
    """The job queue, crash accounting and run counters of one run; see the module docstring."""

    def __init__(self, ledger: Ledger, jobs: Sequence[Job], policy: PoolPolicy, max_starts: int):
        self.ledger = ledger
        self.policy = policy
        self.queue: deque[Job] = deque(jobs)
        self.crash_counts = Counter()                 # scene -> crashes charged to it
        self.crash_notes: dict[int, list[str]] = {}   # scene -> one line per crash charged
        self.oom_scenes: set[int] = set()             # ran out of memory alone: another OOM fails it
        self.max_starts = max_starts
        self.started = 0                              # workers started (standbys included)
        self.crashes: list[str] = []                  # one line per crash (ExecutorReport.crashes)
        self.recycles = Counter()                     # retirement reason -> workers (recycles only)
        self.startup_seconds: list[float] = []        # per ready worker: start -> loaded
        self.wait_s = 0.0                             # worker-slot seconds starved of a ready worker
        self.first_ready: float | None = None         # seconds from t0 to the first ready worker
        self.t0 = self._tick = time.perf_counter()
        self._starved = 0                             # lanes without a ready worker while work waits

    # -- starts and readiness -------------------------------------------------------------------
    def may_start(self) -> bool:
        """Count a worker start; False (and nothing counted) once the bound is reached."""
        if self.started >= self.max_starts:
            return False
        self.started += 1
        return True

    def worker_ready(self, w: Worker) -> None:
        """A worker has loaded its model: record its start-up time and announce it."""
        now = time.perf_counter()
        w.progress_at = now
        startup = now - w.started_at
        self.startup_seconds.append(startup)
        if self.first_ready is None:
            self.first_ready = now - self.t0
        self.ledger.emit(WorkerStarted(w.id, w.label, w.pid or 0, startup))

    def starved(self, unready_lanes: int) -> None:
        """How many lanes have no ready worker now (charged until the next :meth:`tick`)."""
        self._starved = min(unready_lanes, len(self.queue))

    def tick(self, now: float) -> None:
        """Charge the time since the last tick to the lanes that were starved."""
        self.wait_s += (now - self._tick) * self._starved
        self._tick = now

    # -- handing out work ------------------------------------------------------------------------
    def assign(self, w: Worker) -> UnitAssignment | None:
        """The next job with scenes left, made ``w``'s unit; None when the queue is empty."""
        while self.queue:
            job = self.queue.popleft()
            scenes = tuple(i for i in job.scenes if not self.ledger.done(i))
            if not scenes:
                continue
            w.job, w.open = job, set(scenes)
            w.progress_at = time.perf_counter()
            tasks = tuple(self.ledger.tasks[i] for i in scenes)
            return UnitAssignment(job.unit_id, tasks,
                                  tuple(i for i in scenes if i in self.oom_scenes), job.isolate)
        return None

    def queued_scenes(self) -> int:
        return sum(len(job.scenes) for job in self.queue)

    def stuck(self, workers_alive: bool, transport: str) -> str | None:
        """Why the run cannot go on (then the driver gives up), or None."""
        if self.queue and not workers_alive:
            return f"no worker could be started (limit of {self.max_starts} worker starts reached)"
        if self.ledger.remaining and not self.queue and not workers_alive:
            return f"scenes were lost track of (a bug in the {transport}; please report it)"
        return None

    # -- what workers report ---------------------------------------------------------------------
    def scene_done(self, w: Worker, msg: SceneDone) -> None:
        w.open.discard(msg.result.index)
        w.progress_at = time.perf_counter()
        if self.ledger.record(msg.result):
            w.finished_any = True
            w.lane.futile = 0

    def give_back(self, w: Worker, scenes, why: str) -> None:
        """Requeue, as one job at the front, the scenes of ``scenes`` that are not done."""
        scenes = [i for i in scenes if not self.ledger.done(i)]
        if scenes:
            self.ledger.emit(Log(f"worker {w.id} {why} {len(scenes)} scene(s); running them again",
                                 "warning"))
            log.debug("requeue scenes %s of worker %d: %s", scenes, w.id, why)
            self.queue.appendleft(Job(_unit_id(w), tuple(scenes)))
        w.open.difference_update(scenes)

    def retiring(self, w: Worker, msg: Retiring) -> None:
        """A worker says it leaves: count the recycle, announce it, and requeue (or charge a crash
        to) what it did not finish."""
        if msg.reason not in NOT_RECYCLES:
            self.recycles[msg.reason] += 1
        first = msg.message.splitlines()[0] if msg.message else ""
        note = f" ({first})" if first else ""
        log.debug("worker %d retires: %s%s", w.id, msg.reason,
                  f"\n{msg.message}" if msg.message else "")
        self.ledger.emit(WorkerRetired(w.id, msg.reason, msg.scenes_done))
        if msg.reason not in (Retirement.SHUTDOWN, Retirement.MAX_SCENES):
            self.ledger.emit(Log(f"worker {w.id} retires: {msg.reason}{note}"))
        unfinished = [i for i in msg.unfinished if not self.ledger.done(i)]
        if msg.reason == Retirement.OOM:
            if msg.culprit is not None:
                self.oom_scenes.add(msg.culprit)
            if unfinished:
                log.debug("requeue scenes %s of worker %d for a fresh worker (oom)", unfinished, w.id)
                self.queue.appendleft(Job(_unit_id(w), tuple(unfinished)))
        elif msg.reason in SUSPECT_RETIREMENTS and unfinished:
            # The context or the worker cannot be trusted: what was in flight is a suspect.
            self.charge_crash(w, unfinished, f"worker {w.id} retired after {msg.reason}{note}")
        self.give_back(w, sorted(i for i in w.open if i not in msg.unfinished),
                       "retired without reporting")
        w.open.clear()

    def crashed(self, w: Worker, description: str) -> int:
        """A worker died without retiring: record the crash, remove the temporaries of its
        unfinished scenes and charge the crash to them. Returns its lane's run of consecutive
        crashes that finished nothing (0 when this one finished something)."""
        who = f"pid {w.pid}" if w.pid else "not started"
        self.crashes.append(f"worker {w.id} ({who}): {description}")
        unfinished = sorted(i for i in w.open if not self.ledger.done(i))
        self.remove_partials(unfinished)
        quarantined = self.charge_crash(w, unfinished, f"worker {w.id}: {description}")
        self.ledger.emit(WorkerCrashed(w.id, description, len(unfinished) - quarantined))
        if w.finished_any or quarantined:
            w.lane.futile = 0
        else:
            w.lane.futile += 1
        return w.lane.futile

    def charge_crash(self, w: Worker, scenes: list[int], note: str) -> int:
        """Charge a crash to the scenes in flight; quarantine or requeue each (one scene per job,
        so the next crash names its culprit). Returns how many were quarantined."""
        alone = len(scenes) == 1
        requeue, quarantined = [], 0
        for i in scenes:
            self.crash_counts[i] += 1
            self.crash_notes.setdefault(i, []).append(note)
            if alone and self.crash_counts[i] >= self.policy.max_crashes_per_scene:
                log.debug("quarantine scene %d after %d crashes", i, self.crash_counts[i])
                self.ledger.fail(i, Reason.QUARANTINED,
                                 f"quarantined after {self.crash_counts[i]} worker crash(es) while "
                                 f"enhancing it: {'; '.join(self.crash_notes[i])}")
                quarantined += 1
            else:
                requeue.append(i)
        if requeue:
            log.debug("requeue scenes %s one per unit after a crash of worker %d", requeue, w.id)
        for i in reversed(requeue):
            self.queue.appendleft(Job(_unit_id(w), (i,), isolate=True))
        w.open.clear()
        return quarantined

    # -- the end -------------------------------------------------------------------------------------
    def fail_unfinished(self, why: str) -> None:
        """The run gives up: every scene without a terminal state fails with ``worker_crash``."""
        for i in self.ledger.order:
            if not self.ledger.done(i):
                self.ledger.fail(i, Reason.WORKER_CRASH, f"not run: {why}")
        self.queue.clear()

    def remove_partials(self, scenes=None) -> list:
        """Remove the temporaries of ``scenes``' outputs (default: every scene without a terminal
        state), reached from their OUT_DIR without following links; returns what went."""
        if scenes is None:
            scenes = [i for i in self.ledger.order if not self.ledger.done(i)]
        by_root: dict = {}
        for i in scenes:
            task = self.ledger.tasks[i]
            by_root.setdefault(task.out_dir, []).append(task.output_path)
        return [p for root, outputs in by_root.items() for p in remove_partials(outputs, root=root)]

    def report(self, complete: bool = True, **extra) -> ExecutorReport:
        return self.ledger.report(
            complete, workers_started=self.started, recycles=dict(self.recycles),
            worker_crashes=len(self.crashes), startup_seconds=tuple(self.startup_seconds),
            startup_wait_seconds=self.wait_s, first_ready_seconds=self.first_ready or 0.0,
            crashes=tuple(self.crashes), **extra)


def _unit_id(w: Worker) -> int:
    return w.job.unit_id if w.job else NO_UNIT


__all__ = ["Job", "Scheduler", "jobs_for", "max_worker_starts", "NO_UNIT"]
