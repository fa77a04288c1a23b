"""What the local pool and the Ray executor decide alike, whatever their workers are: the job queue,
which scenes go back to it after a crash or a retirement, when a scene is quarantined, and the
counters of the run's report (worker starts, crashes, recycles, start-up times, start-up wait).

An executor owns its workers (spawned processes or Ray actors) and how it talks to them; it hands
:class:`Scheduler` what they report and asks it for their next unit. A worker record here is any
object with ``id``, ``job`` (the :class:`Job` it runs, or None), ``open`` (set: positions of that
job not yet reported), ``finished_any``, ``progress_at`` and ``lane.futile`` (consecutive crashes
of its lane that finished nothing).

Rules (the same on every executor):

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

import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable, Sequence

from ..config import PoolPolicy
from ..events import Log, WorkerCrashed, WorkerRetired, WorkerStarted
from .cleanup import output_paths, remove_partials
from .ledger import Ledger, PoolReport, validate_units
from .messages import Retiring, SceneResult, UnitAssignment

NO_UNIT = -1  # unit id of scenes given back by a worker that had no job


@dataclass
class Job:
    """Scenes to run together in one unit."""

    unit_id: int                # planning.WorkUnit.unit_id (requeued scenes keep it)
    positions: tuple[int, ...]  # positions in the run's task list
    isolate: bool = False       # run the scenes one at a time (they were in flight at a crash)


def jobs_for(units: Sequence, n_tasks: int) -> list[Job]:
    """One job per non-empty planner unit; ValueError unless the units name every task once."""
    positions = validate_units(n_tasks, units)
    return [Job(u.unit_id, pos) for u, pos in zip([u for u in units if len(u.scenes)], positions)]


def max_worker_starts(policy: PoolPolicy, lanes: int, standbys_per_lane: int, jobs: int,
                      tasks: int) -> int:
    """The run's bound on worker starts: ``policy.max_worker_starts``, or automatically a start per
    lane and standby, two per unit (recycles, OOM retries), and every scene's crash allowance.
    Runs never reach the automatic bound; it exists so nothing loops forever."""
    return policy.max_worker_starts or (2 * lanes * (1 + standbys_per_lane) + 2 * jobs
                                        + tasks * (policy.max_crashes_per_scene + 1))


class Scheduler:
    """The job queue, crash accounting and run counters of one run; see the module docstring."""

    def __init__(self, tasks: Sequence, jobs: Sequence[Job], ledger: Ledger, policy: PoolPolicy,
                 max_starts: int):
        self.tasks = list(tasks)
        self.ledger = ledger
        self.policy = policy
        self.queue: deque[Job] = deque(jobs)
        self.crash_counts = Counter()                 # position -> crashes charged to it
        self.crash_notes: dict[int, list[str]] = {}   # position -> one line per crash charged
        self.oom_positions: set[int] = set()          # ran out of memory alone: another OOM fails it
        self.max_starts = max_starts
        self.started = 0                              # workers started (standbys included)
        self.crashes: list[str] = []                  # one line per crash (PoolReport.crashes)
        self.recycles = Counter()                     # retirement reason -> workers ("shutdown" not)
        self.startup_seconds: list[float] = []        # per ready worker: start -> loaded
        self.wait_s = 0.0                             # worker-slot seconds starved of a ready worker
        self.first_ready: float | None = None         # seconds from t0 to the first ready worker
        self.t0 = self._tick = time.perf_counter()
        self._starved = 0                             # lanes without a ready worker while work waits

    # -- starts and readiness ---------------------------------------------------------------------
    def may_start(self) -> bool:
        """Count a worker start; False (and nothing counted) once the bound is reached."""
        if self.started >= self.max_starts:
            return False
        self.started += 1
        return True

    def worker_ready(self, w, label: str, pid: int, started_at: float) -> None:
        """A worker has loaded its model: record its start-up time and announce it."""
        now = time.perf_counter()
        w.progress_at = now
        startup = now - started_at
        self.startup_seconds.append(startup)
        if self.first_ready is None:
            self.first_ready = now - self.t0
        self.ledger.emit(WorkerStarted(w.id, label, pid, startup))

    def starved(self, unready_lanes: int) -> None:
        """How many lanes have no ready worker now (charged until the next :meth:`tick`)."""
        self._starved = min(unready_lanes, len(self.queue))

    def tick(self, now: float) -> None:
        """Charge the time since the last tick to the lanes that were starved."""
        self.wait_s += (now - self._tick) * self._starved
        self._tick = now

    # -- handing out work ----------------------------------------------------------------------------
    def assign(self, w) -> UnitAssignment | None:
        """The next job with scenes left, made ``w``'s unit; None when the queue is empty."""
        while self.queue:
            job = self.queue.popleft()
            items = tuple((p, self.tasks[p]) for p in job.positions if not self.ledger.done(p))
            if not items:
                continue
            w.job, w.open = job, {p for p, _ in items}
            w.progress_at = time.perf_counter()
            return UnitAssignment(job.unit_id, items,
                                  tuple(p for p, _ in items if p in self.oom_positions), job.isolate)
        return None

    def queued_scenes(self) -> int:
        return sum(len(job.positions) for job in self.queue)

    def stuck(self, workers_alive: bool, executor: str) -> str | None:
        """Why the run cannot go on (then the caller gives up), or None."""
        if self.queue and not workers_alive:
            return f"no worker could be started (limit of {self.max_starts} worker starts reached)"
        if self.ledger.remaining and not self.queue and not workers_alive:
            return f"scenes were lost track of (a bug in the {executor}; please report it)"
        return None

    # -- what workers report -------------------------------------------------------------------------
    def scene_result(self, w, msg: SceneResult) -> None:
        w.open.discard(msg.pos)
        w.progress_at = time.perf_counter()
        if self.ledger.scene_result(msg):
            w.finished_any = True
            w.lane.futile = 0

    def give_back(self, w, positions, why: str) -> None:
        """Requeue, as one job at the front, the scenes of ``positions`` that are not done."""
        positions = [p for p in positions if not self.ledger.done(p)]
        if positions:
            self.ledger.emit(Log(f"worker {w.id} {why} {len(positions)} scene(s); running them again",
                                 "warning"))
            self.queue.appendleft(Job(_unit_id(w), tuple(positions)))
        w.open.difference_update(positions)

    def retiring(self, w, msg: Retiring) -> None:
        """A worker says it leaves: count the recycle, announce it, and requeue (or charge a crash
        to) what it did not finish. The caller then ends the worker."""
        if msg.reason != "shutdown":
            self.recycles[msg.reason] += 1
        note = f" ({msg.message.splitlines()[0]})" if msg.message else ""
        self.ledger.emit(WorkerRetired(w.id, msg.reason, msg.scenes_done))
        if msg.reason not in ("shutdown", "max_scenes"):
            self.ledger.emit(Log(f"worker {w.id} retires: {msg.reason}{note}"))
        unfinished = [p for p in msg.unfinished if not self.ledger.done(p)]
        if msg.reason == "oom":
            if msg.culprit is not None:
                self.oom_positions.add(msg.culprit)
            if unfinished:
                self.queue.appendleft(Job(_unit_id(w), tuple(unfinished)))
        elif unfinished:  # cuda_error / worker_error: the context or the worker cannot be trusted
            self.charge_crash(w, unfinished, f"worker {w.id} retired after {msg.reason}{note}")
        self.give_back(w, sorted(p for p in w.open if p not in msg.unfinished),
                       "retired without reporting")
        w.open.clear()

    def crashed(self, w, who: str, description: str) -> int:
        """A worker died without retiring (``who``: its pid, for people): record the crash, remove
        the temporaries of its unfinished scenes and charge the crash to them. Returns its lane's
        run of consecutive crashes that finished nothing (0 when this one finished something)."""
        self.crashes.append(f"worker {w.id} ({who}): {description}")
        unfinished = sorted(p for p in w.open if not self.ledger.done(p))
        remove_partials(output_paths(self.tasks, unfinished))
        quarantined = self.charge_crash(w, unfinished, f"worker {w.id}: {description}")
        self.ledger.emit(WorkerCrashed(w.id, description, len(unfinished) - quarantined))
        if w.finished_any or quarantined:
            w.lane.futile = 0
        else:
            w.lane.futile += 1
        return w.lane.futile

    def charge_crash(self, w, positions: list[int], note: str) -> int:
        """Charge a crash to the scenes in flight; quarantine or requeue each (one scene per job,
        so the next crash names its culprit). Returns how many were quarantined."""
        alone = len(positions) == 1
        requeue, quarantined = [], 0
        for p in positions:
            self.crash_counts[p] += 1
            self.crash_notes.setdefault(p, []).append(note)
            if alone and self.crash_counts[p] >= self.policy.max_crashes_per_scene:
                self.ledger.finish(p, "failed", "quarantined",
                                   f"quarantined after {self.crash_counts[p]} worker crash(es) while "
                                   f"enhancing it: {'; '.join(self.crash_notes[p])}")
                quarantined += 1
            else:
                requeue.append(p)
        for p in reversed(requeue):
            self.queue.appendleft(Job(_unit_id(w), (p,), isolate=True))
        w.open.clear()
        return quarantined

    # -- the run -----------------------------------------------------------------------------------------
    def drive(self, schedule: Callable[[], None], wait_and_handle: Callable[[], None],
              shutdown: Callable[[], None]) -> PoolReport:
        """The executors' main loop: until every scene has its terminal state, start and feed
        workers (``schedule``) and handle what they report (``wait_and_handle``); then
        ``shutdown`` and the report."""
        while self.ledger.remaining:
            schedule()
            if not self.ledger.remaining:
                break
            wait_and_handle()
        shutdown()
        return self.report()

    def fail_unfinished(self, why: str) -> None:
        """The run gives up: every scene without a terminal state fails with ``worker_crash``."""
        for pos in range(len(self.tasks)):
            if not self.ledger.done(pos):
                self.ledger.finish(pos, "failed", "worker_crash", f"not run: {why}")
        self.queue.clear()

    def unfinished_outputs(self) -> list[str]:
        return output_paths(self.tasks, [p for p in range(len(self.tasks)) if not self.ledger.done(p)])

    def report(self, **extra) -> PoolReport:
        return self.ledger.report(
            workers_started=self.started, recycles=dict(self.recycles),
            worker_crashes=len(self.crashes), startup_seconds=tuple(self.startup_seconds),
            startup_wait_seconds=self.wait_s, first_ready_seconds=self.first_ready or 0.0,
            crashes=tuple(self.crashes), **extra)


def _unit_id(w) -> int:
    return w.job.unit_id if w.job else NO_UNIT


__all__ = ["Job", "Scheduler", "jobs_for", "max_worker_starts", "NO_UNIT"]
