"""The executor's rules, once: worker states, lanes, deadlines and the watchdog, the futile-crash
guard, giving up, shutdown and interruption. Transports (local.py, ray.py, inprocess.py) only
move messages; the scheduler (scheduling.py) keeps the queue and the crash accounting.

    execute(tasks, units, specs, policy, on_event, transport)
      |
      v
    Driver -- lanes (device slot x workers per device), each: an active worker + warm standbys
      |   Scheduler: job queue (crash requeues at the front, one scene per job), quarantine
      |
      |   start / send(UnitAssignment) / dismiss / end / kill --> Transport --> workers
      |   <-- wait(): Ready | LoadFailed, SceneDone..., Alive, UnitDone, Retiring, Exited
      |   watchdog: no scene or forward finished for scene_timeout_s while busy, not loaded in
      |   startup_timeout_s, not gone LEAVE_TIMEOUT_S after retiring: killed
      v
    Ledger -- one SceneResult per task --> events (SceneFinished, WorkerStarted, WorkerRetired,
                                           WorkerCrashed, Telemetry, Log) --> ExecutorReport

Rules that keep every scene accounted for:

* A scene is terminal once, when its worker reports it (after the output was renamed into place)
  or when the driver fails it. A crashed worker's *unfinished* scenes, and only those, go back.
  A worker that died after renaming an output but before reporting it has its scene redone and
  the file replaced atomically: never seen half-written, reported once.
* An exit without a Retiring message is a crash (described by exit code or signal and the likely
  cause); the scheduler charges it to the scenes in flight.
* A load failure about the setup (missing weights or packages) stops the run with that error;
  after a worker of the run has loaded, any other load failure is that worker's crash.
* Runaway guards: ``MAX_FUTILE_CRASHES`` consecutive crashes on a lane that finish nothing, or
  ``policy.max_worker_starts`` starts, end the run; its remaining scenes fail with
  ``worker_crash`` and the crash descriptions, so the report stays complete.
* Ctrl-C / SIGTERM: workers are stopped (terminate, then kill, joined with timeouts), temporaries
  of unfinished scenes removed, and :class:`RunInterrupted` raised with the records so far.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Sequence

from ..config import PoolPolicy
from ..errors import RunInterrupted
from ..events import Log, WorkerRetired
from ..status import Retirement
from . import standby
from .failures import (LoadFailure, RemoteTraceback, hung_message, load_error,
                       load_failure_description, load_failure_is_fatal, not_loaded_message)
from .interrupts import Terminated, install_termination_handler
from .ledger import ExecutorReport, Ledger
from .messages import (Alive, LoadFailed, Ready, Retiring, SceneDone, SceneTask, UnitDone,
                       UnitLost, WorkerSpec)
from .scheduling import Job, Scheduler, jobs_for, max_worker_starts
from .transport import Exited, Transport, backend_class_of
from .workers import Lane, State, Worker

log = logging.getLogger("whisperjav_enhance.executor")

# Tunables (module-level so tests can shrink them).
POLL_S = 0.5                  # longest single wait; keeps Ctrl-C prompt on Windows
LEAVE_TIMEOUT_S = 30.0        # a retired worker gets this long to exit before it is killed
SHUTDOWN_GRACE_S = 10.0       # at the end of a run, for workers to send their last report
MAX_FUTILE_CRASHES = 3        # per lane: consecutive crashes that finish nothing end the run
# A backend that takes whole scenes (DeepFilterNet3, hosted WhisperJAV enhancers) says nothing
# between the start and the end of a scene, so its watchdog also allows this many seconds per
# second of the longest scene in flight (the slowest of them, a hosted enhancer on a CPU, runs at
# about real time); windowed backends report every forward and get scene_timeout_s alone.
WHOLE_SCENE_S_PER_AUDIO_S = 2.0


class Driver:
    """Runs one set of tasks through a transport's workers; see the module docstring."""

    def __init__(self, tasks: Sequence[SceneTask], jobs: list[Job], transport: Transport,
                 lanes: list[Lane], policy: PoolPolicy, on_event: Callable | None):
        self.transport = transport
        self.lanes = lanes
        self.policy = policy
        self.ledger = Ledger(tasks, on_event)
        standbys = policy.max_standby_workers if transport.has_standbys else 0
        self.sched = Scheduler(self.ledger, jobs, policy, max_worker_starts(
            policy, len(lanes), standbys, len(jobs), len(tasks)))
        self.workers: dict[int, Worker] = {}   # every worker not yet gone
        self.next_id = 0
        self.whole_scene_lanes = {lane.index for lane in lanes
                                  if not backend_class_of(lane.spec).windowed}
        self.closing = False                   # every scene is done: an exit now is no crash

    def run(self) -> ExecutorReport:
        while self.ledger.remaining:
            self._schedule()
            if not self.ledger.remaining:
                break
            self._wait_and_handle()
        self.shutdown()
        return self.sched.report(devices=tuple(self.transport.devices), lanes=len(self.lanes))

    # -- starting and feeding workers ---------------------------------------------------------------
    def _schedule(self) -> None:
        for lane in self.lanes:
            if lane.active is None and lane.standbys:
                lane.active = lane.standbys.pop(0)
                log.debug("worker %d takes over lane %d", lane.active.id, lane.index)
            w = lane.active
            if w is not None and w.state is State.READY:
                self._assign(w)
        waiting = sum(1 for lane in self.lanes if lane.active is not None and lane.active.job is None)
        for lane in self.lanes:
            if lane.active is None and len(self.sched.queue) > waiting:
                if not self._start(lane, "active", f"{len(self.sched.queue)} unit(s) queued and "
                                   f"lane {lane.index} has no worker"):
                    break
                waiting += 1
        if self.transport.has_standbys:
            self._start_standbys()
        stuck = self.sched.stuck(bool(self.workers), self.transport.title)
        if stuck:
            self._give_up(stuck)
        # Worker-slot seconds lost to start-up: lanes without a loaded worker while work waits.
        self.sched.starved(sum(1 for lane in self.lanes
                               if lane.active is None or lane.active.state is State.STARTING))

    def _start_standbys(self) -> None:
        spare = standby.spare_jobs(self.lanes, len(self.sched.queue))
        for lane in self.lanes:
            wanted = standby.standbys_wanted(lane, self.policy, len(self.sched.queue),
                                             self.sched.queued_scenes(), self.sched.startup_seconds)
            while spare > 0 and len(lane.standbys) < wanted:
                if not self._start(lane, "standby", f"worker {lane.active.id} is expected to "
                                   "retire before a fresh start would be ready"):
                    return
                spare -= 1

    def _start(self, lane: Lane, role: str, why: str) -> bool:
        if not self.sched.may_start():
            return False
        self.next_id += 1
        w = Worker(self.next_id, lane)
        self.workers[w.id] = w
        if role == "active":
            lane.active = w
        else:
            lane.standbys.append(w)
        log.debug("start worker %d (%s) on %s: %s", w.id, role, lane.label, why)
        self.transport.start(w, self.policy)
        return True

    def _assign(self, w: Worker) -> None:
        unit = self.sched.assign(w)
        if unit is not None:
            w.state = State.BUSY
            log.debug("worker %d: unit %d, scenes %s%s", w.id, unit.unit_id,
                      [t.index for t in unit.tasks], " (one at a time)" if unit.isolate else "")
            self.transport.send(w, unit)

    # -- what workers report -------------------------------------------------------------------------
    def _wait_and_handle(self) -> None:
        timeout = max(0.0, min(POLL_S, self._next_deadline() - time.perf_counter()))
        events = self.transport.wait(list(self.workers.values()), timeout)
        self.sched.tick(time.perf_counter())
        self._dispatch(events)
        self._watchdog(time.perf_counter())

    def _dispatch(self, events) -> None:
        for w, item in events:
            if w.state is State.GONE:
                continue
            if isinstance(item, Exited):
                self._on_exit(w, item)
            else:
                self._handle(w, item)

    def _handle(self, w: Worker, msg) -> None:
        now = time.perf_counter()
        if isinstance(msg, SceneDone):
            self.sched.scene_done(w, msg)
        elif isinstance(msg, Alive):
            w.progress_at = now
        elif isinstance(msg, UnitDone):
            w.progress_at, w.scenes_done, w.memory = now, msg.scenes_done, msg.memory
            w.busy_s += msg.busy_s
            self.ledger.unit_done(msg)
            if msg.retiring:
                self._leave(w, now)   # its Retiring follows; its lane takes a standby at once
            else:
                self._unit_over(w, "finished its unit without reporting")
        elif isinstance(msg, UnitLost):
            self._unit_over(w, "lost its unit without reporting")
        elif isinstance(msg, Ready):
            if w.kill_reason is not None:
                return  # loaded just as it was being killed: never given a unit
            w.state, w.pid = State.READY, msg.pid
            w.label = w.label or w.lane.label
            log.debug("worker %d ready on %s (pid %d, %s)", w.id, w.label, msg.pid, msg.device_name)
            self.sched.worker_ready(w)
        elif isinstance(msg, Retiring):
            w.retiring = msg
            self.sched.retiring(w, msg)
            self._leave(w, now)
            self.transport.end(w)
        elif isinstance(msg, LoadFailed):
            self._load_failed(w, msg)
        else:
            self.ledger.emit(Log(f"worker {w.id} sent an unknown message {type(msg).__name__}",
                                 "warning"))

    def _unit_over(self, w: Worker, why: str) -> None:
        self.sched.give_back(w, sorted(w.open), why)
        w.job, w.open = None, set()
        if w.state is State.BUSY:
            w.state = State.READY

    def _load_failed(self, w: Worker, msg: LoadFailed) -> None:
        log.debug("worker %d failed to load:\n%s", w.id, msg.traceback_text)
        if load_failure_is_fatal(msg, self.sched.first_ready is not None):
            self.ledger.emit(WorkerRetired(w.id, Retirement.LOAD_FAILED, 0))
            raise LoadFailure(msg, w.lane.spec)
        self._kill(w, load_failure_description(msg))  # its exit is then handled as a crash

    def _leave(self, w: Worker, now: float) -> None:
        if w.lane.active is w:
            w.lane.active = None
        if w in w.lane.standbys:
            w.lane.standbys.remove(w)
        if w.state is not State.LEAVING:
            w.state, w.leaving_since = State.LEAVING, now

    # -- exits, crashes and the watchdog ---------------------------------------------------------------
    def _on_exit(self, w: Worker, exited: Exited) -> None:
        self._leave(w, time.perf_counter())
        self.workers.pop(w.id, None)
        w.state = State.GONE
        if exited.detail:
            log.debug("worker %d left this behind:\n%s", w.id, exited.detail.rstrip())
        if w.retiring is not None or self.closing:
            log.debug("worker %d exited", w.id)
            return
        description = w.kill_reason or exited.description
        log.debug("worker %d crashed: %s", w.id, description)
        futile = self.sched.crashed(w, description)
        if futile >= MAX_FUTILE_CRASHES:
            self._give_up(f"{futile} workers in a row on {w.lane.label} crashed without "
                          f"finishing a scene; last: {description}")

    def _deadline(self, w: Worker) -> float | None:
        if not self.transport.has_watchdog or w.kill_reason is not None:
            return None
        if w.state is State.LEAVING:
            return (w.leaving_since or w.started_at) + LEAVE_TIMEOUT_S
        if w.state is State.STARTING:
            return w.started_at + self.policy.startup_timeout_s
        if w.state is State.BUSY:
            return w.progress_at + self.policy.scene_timeout_s + self._scene_allowance(w)
        return None

    def _scene_allowance(self, w: Worker) -> float:
        if w.lane.index not in self.whole_scene_lanes or not w.open:
            return 0.0
        return WHOLE_SCENE_S_PER_AUDIO_S * max(self.ledger.tasks[i].duration_s for i in w.open)

    def _next_deadline(self) -> float:
        deadlines = [d for d in map(self._deadline, self.workers.values()) if d is not None]
        return min(deadlines, default=time.perf_counter() + POLL_S)

    def _watchdog(self, now: float) -> None:
        for w in list(self.workers.values()):
            deadline = self._deadline(w)
            if deadline is None or now < deadline:
                continue
            if w.state is State.LEAVING:
                self._kill(w, "did not exit after retiring; killed")
            elif w.state is State.STARTING:
                self._kill(w, not_loaded_message(self.policy.startup_timeout_s,
                                                 self.transport.startup_hint))
            else:
                self._kill(w, hung_message(self.policy.scene_timeout_s))

    def _kill(self, w: Worker, reason: str) -> None:
        log.debug("kill worker %d: %s", w.id, reason)
        w.kill_reason = reason
        self.transport.kill(w)

    def _give_up(self, why: str) -> None:
        self.ledger.emit(Log(f"giving up: {why}", "warning"))
        log.debug("giving up: %s", why)
        self.stop()
        self.sched.remove_partials()  # the stopped workers' half-written files
        self.sched.fail_unfinished(why)

    # -- stopping ------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """End of the run: loading workers are stopped, idle ones dismissed (they say so with
        Retiring "shutdown"), busy ones first send the rest of their last unit's report."""
        self.closing = True
        for w in list(self.workers.values()):
            if w.state is State.STARTING:  # a standby nobody needed (closing: its exit is no crash)
                self._kill(w, "not needed: the run is over")
        deadline = time.perf_counter() + SHUTDOWN_GRACE_S
        while self.workers and time.perf_counter() < deadline:
            for w in list(self.workers.values()):
                if w.state is State.READY:
                    log.debug("dismiss worker %d", w.id)
                    self._leave(w, time.perf_counter())
                    self.transport.dismiss(w)
            timeout = max(0.0, min(POLL_S, deadline - time.perf_counter()))
            self._dispatch(self.transport.wait(list(self.workers.values()), timeout))
        self.stop()

    def stop(self) -> None:
        """Terminate every worker still there, and wait (bounded) until they are gone."""
        workers = list(self.workers.values())
        if workers:
            log.debug("stop workers %s", [w.id for w in workers])
            self.transport.stop(workers)
        for w in workers:
            self._leave(w, time.perf_counter())
            w.state = State.GONE
        self.workers.clear()


# -- entry point ------------------------------------------------------------------------------------
def execute(tasks: Sequence[SceneTask], units: Sequence, specs: Sequence[WorkerSpec],
            policy: PoolPolicy, on_event: Callable | None = None,
            transport: Transport | None = None) -> ExecutorReport:
    """Enhance ``tasks`` (planner ``units`` name their positions) with ``transport``'s workers
    (default: spawned local processes); one SceneResult per task, in task order.

    Raises RunInterrupted on Ctrl-C/SIGTERM (workers stopped, temporaries of unfinished scenes
    removed, ``.outcomes`` the records so far), and WeightsError/BackendUnavailable/DeviceError/
    ConfigError when workers cannot load or the transport cannot start.
    """
    from .local import LocalTransport

    tasks, specs = list(tasks), list(specs)
    if not specs:
        raise ValueError("execute needs at least one WorkerSpec")
    jobs = jobs_for(units, tasks)
    if not tasks:
        return Ledger([], on_event).report(workers_started=0, recycles={}, worker_crashes=0,
                                           startup_seconds=(), startup_wait_seconds=0.0)
    transport = transport or LocalTransport()
    driver: Driver | None = None
    restore = lambda: None  # noqa: E731
    finished = False
    try:
        lanes = transport.open(specs, policy, on_event)
        restore = install_termination_handler()
        driver = Driver(tasks, jobs, transport, lanes, policy, on_event)
        report = driver.run()
        finished = True
        return report
    except (KeyboardInterrupt, Terminated) as exc:
        raise _interrupted(exc, driver, transport) from None
    except LoadFailure as failure:
        driver.stop()
        raise load_error(failure.msg, failure.spec) from RemoteTraceback(failure.msg.traceback_text)
    finally:
        try:
            if driver is not None:
                driver.stop()
                if not finished:  # any other way out (a failing on_event, a bug): no temporaries
                    driver.sched.remove_partials()
        finally:
            restore()
            transport.close()


def _interrupted(exc: BaseException, driver: Driver | None, transport: Transport) -> RunInterrupted:
    removed, outcomes, report = [], (), None
    if driver is not None:
        driver.stop()
        removed = driver.sched.remove_partials()
        outcomes = driver.ledger.outcomes()
        report = driver.sched.report(complete=False, devices=tuple(transport.devices),
                                     lanes=len(driver.lanes))
    what = exc.signal_name if isinstance(exc, Terminated) else "Ctrl-C"
    log.debug("interrupted by %s: %d temporary file(s) removed", what, len(removed))
    return RunInterrupted(f"interrupted by {what}: {transport.title} workers stopped, "
                          f"{len(removed)} temporary file(s) removed, finished scenes kept",
                          outcomes, report)


__all__ = ["Driver", "execute", "POLL_S", "LEAVE_TIMEOUT_S", "SHUTDOWN_GRACE_S",
           "MAX_FUTILE_CRASHES"]
