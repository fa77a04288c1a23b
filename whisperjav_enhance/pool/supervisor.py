"""The parent side of the pool: spawns workers, hands them work units, watches them, replaces them,
and turns everything they report into exactly one terminal state per scene.

Data flow::

    run_pool(tasks, units, specs, policy, on_event)
      |
      v
    Supervisor -- scheduling.Scheduler (shared with the Ray executor): job queue (work units;
      |   scenes given back after a crash go to the front, one per job), crash counts, quarantine
      |   lanes = device slots x workers per device; each lane: one active worker + warm
      |   standbys, spawned while the active one still works so a recycle costs ~nothing
      |
      |   UnitAssignment, Shutdown ------- pipe -------> worker_main (spawn; CUDA_VISIBLE_DEVICES
      |   <-- Ready | LoadFailed, SceneResult..., UnitDone      set first; model loaded once)
      |       (telemetry), Retiring (last message: why)
      |   <-- process sentinel: an exit without Retiring is a crash (exit code or signal)
      |   watchdog: no scene or forward finished (SceneResult, Alive) for scene_timeout_s while
      |   busy, or not ready in startup_timeout_s
      v
    Ledger -- one SceneOutcome per task --> events (SceneFinished, WorkerStarted, WorkerRetired,
                                            WorkerCrashed, Telemetry, Log) --> PoolReport

The parent never initialises CUDA: it imports the backend class only to read
``needs_cuda_for_speed`` (that may import torch, which creates no CUDA context), and every model
runs in a spawned child. So when ``run_pool`` returns, this process holds no GPU memory.

Rules that keep every scene accounted for:

* A scene is terminal once, when its worker reports it (after the output was renamed into place)
  or when the parent fails it. A crashed worker's *unfinished* scenes, and only those, are given
  back. If a worker died after renaming an output but before reporting it, the scene is redone
  and the file replaced atomically (``os.replace``): never seen half-written, reported once.
* Scenes in flight at a crash are charged one crash each and requeued one scene per job, so a
  batch mate's crash never condemns an innocent scene; a scene that reaches
  ``max_crashes_per_scene`` crashes, the last of them alone in its worker, is quarantined
  (``quarantined``, the message names the crashes). Watchdog kills count as crashes. (These
  decisions live in scheduling.py, so the Ray executor makes them alike.)
* A window that does not fit alone: the worker retires (``oom``), the scenes it did not finish go
  to a fresh worker, and the scene fails with ``out_of_memory`` if it runs out of memory again.
* A worker that cannot load its backend (missing weights, missing package) stops the run at once:
  the same error class is raised here, with the child's traceback as ``__cause__``.
* Runaway guards: consecutive crashes that finish nothing (``MAX_FUTILE_CRASHES`` per lane) or
  ``policy.max_worker_starts`` starts end the run; its remaining scenes fail with
  ``worker_crash`` and the crash descriptions, so the report stays complete.
* Ctrl-C / SIGTERM: workers are terminated then killed (joined with timeouts), temporaries of
  unfinished scenes removed, and :class:`RunInterrupted` raised.
"""

from __future__ import annotations

import math
import os
import signal
import time
from typing import Callable, Sequence

import multiprocess
from multiprocess.connection import wait as _wait

from ..config import PoolPolicy
from ..devices import default_cpu_workers
from ..errors import (BackendUnavailable, ConfigError, DeviceError, RunInterrupted, WeightsError)
from ..events import Log, WorkerRetired
from .cleanup import Terminated, install_termination_handler, remove_partials
from .ledger import Ledger, PoolReport
from .messages import (Alive, LoadFailed, Ready, Retiring, SceneResult, Shutdown, UnitDone,
                       WorkerSpec)
from .scheduling import Job, Scheduler, jobs_for, max_worker_starts
from .worker import resolve_backend_class, worker_main

# Tunables (module-level so tests can shrink them).
POLL_S = 0.5                  # longest single wait; keeps Ctrl-C prompt on Windows
LEAVE_TIMEOUT_S = 30.0        # a retired worker gets this long to exit before it is killed
SHUTDOWN_GRACE_S = 10.0       # at the end of a run, before idle workers are terminated
JOIN_TIMEOUT_S = 5.0          # per step of terminate -> kill when stopping workers
MAX_FUTILE_CRASHES = 3        # per lane: consecutive crashes that finish nothing end the run
STANDBY_LEAD = 1.5            # a standby must be spawned this many start-up times before the
                              # worker it replaces is expected to retire
STANDBY_AT_FRACTION = 0.75    # ... or when a drift measure passes this fraction of its limit


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker (attached as ``__cause__``)."""

    def __init__(self, text: str):
        self.text = text
        super().__init__(text)

    def __str__(self):
        return "\n\n" + self.text.rstrip() + "\n(raised in the worker process)"


# Load failures that mean the setup is wrong, so every worker would fail the same way: they stop
# the run with the same error class (CLI exit code 2). Others stop it only before any worker of
# the run has loaded.
SETUP_ERRORS = frozenset({"WeightsError", "BackendUnavailable", "DeviceError", "ConfigError",
                          "ImportError", "ModuleNotFoundError"})


def load_failure_is_fatal(msg: LoadFailed, sched) -> bool:
    """Whether a worker's load failure ends the run, or is only that worker's crash.

    Once a worker of this run has loaded, the setup is known to be sound, so a failure that is not
    about the setup is one worker's bad luck: typically a standby's CUDA context that did not fit
    beside the active worker's batch on a small card.
    """
    return msg.error_type in SETUP_ERRORS or sched.first_ready is None


def load_failure_description(msg: LoadFailed) -> str:
    lines = msg.message.strip().splitlines()
    return f"failed to load: {msg.error_type}: {lines[0] if lines else ''}"


class _LoadFailure(Exception):
    def __init__(self, msg: LoadFailed, spec: WorkerSpec):
        self.msg, self.spec = msg, spec
        super().__init__(msg.message)


# -- describing a dead worker ------------------------------------------------------------------
_NATIVE = "native crash in the model runtime or the CUDA driver"
_SIGNAL_CAUSES = {
    "SIGKILL": "killed from outside, or by the operating system's out-of-memory killer "
               "(see `dmesg` on Linux)",
    "SIGSEGV": _NATIVE + " (segmentation fault)",
    "SIGBUS": _NATIVE + " (bus error)",
    "SIGILL": _NATIVE + " (illegal instruction)",
    "SIGFPE": _NATIVE + " (arithmetic fault)",
    "SIGABRT": "native abort in the model runtime or the CUDA driver (a failed check or a panic)",
    "SIGTERM": "terminated from outside",
}
_WINDOWS_STATUS = {
    0xC0000005: _NATIVE + " (access violation)",
    0xC00000FD: _NATIVE + " (stack overflow)",
    0xC0000409: "native abort in the model runtime or the CUDA driver (fail-fast)",
    0xC0000017: "out of memory in native code",
}


def describe_exit(code: int | None) -> str:
    """One line for people: exit code or signal name, and the likely cause."""
    if code is None:
        return "exited with unknown status"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}: {_SIGNAL_CAUSES.get(name, 'a signal from outside or a native fault')}"
    status = _WINDOWS_STATUS.get(code & 0xFFFFFFFF)
    if status:
        return f"exit code {code & 0xFFFFFFFF:#x}: {status}"
    return (f"exit code {code}: the worker exited without reporting (os._exit, or a fatal error "
            "in native code)")


def hung_message(timeout_s: float) -> str:
    """Why the watchdog killed a busy worker (the same words on every executor)."""
    return (f"timeout: no window or scene finished in {timeout_s:g} s (scene_timeout_s, "
            "--scene-timeout); killed as hung")


def load_error(msg: LoadFailed, spec: WorkerSpec) -> Exception:
    """The parent-side exception for a worker's load failure (same class where it is ours)."""
    classes = {"WeightsError": WeightsError, "BackendUnavailable": BackendUnavailable,
               "DeviceError": DeviceError, "ConfigError": ConfigError}
    if msg.error_type in classes:
        err = classes[msg.error_type](msg.message)
        if isinstance(err, WeightsError):
            err.searched = tuple(msg.searched)  # the message already lists them
    elif msg.error_type in ("ImportError", "ModuleNotFoundError"):
        err = BackendUnavailable(f"backend {spec.backend!r} cannot be imported in the worker "
                                 f"({msg.message}); install its extra, e.g. "
                                 f"`pip install 'whisperjav-enhance[{spec.backend}]'`")
    else:
        err = BackendUnavailable(f"backend {spec.backend!r} failed to load in a worker on "
                                 f"{spec.slot.label}: {msg.error_type}: {msg.message}")
    return err


# -- parent-side records ---------------------------------------------------------------------------
class _Lane:
    """One worker position on a device slot: an active worker and its warm standbys (oldest first)."""

    def __init__(self, index: int, spec: WorkerSpec, threads: int | None):
        self.index = index
        self.spec = spec
        self.threads = threads
        self.active: _Worker | None = None
        self.standbys: list[_Worker] = []
        self.futile = 0           # consecutive crashes in this lane that finished nothing

    @property
    def label(self) -> str:
        return self.spec.slot.label


class _Worker:
    def __init__(self, wid: int, lane: _Lane, process, conn, role: str):
        self.id = wid
        self.lane = lane
        self.process = process
        self.conn = conn
        self.role = role                    # "active", "standby" or "leaving"
        self.pid = process.pid
        self.spawned_at = time.perf_counter()
        self.ready = False
        self.job: Job | None = None
        self.open: set[int] = set()         # positions of the job not yet reported
        self.progress_at = self.spawned_at  # last sign of progress (for the watchdog)
        self.leaving_since: float | None = None
        self.retiring: Retiring | None = None
        self.kill_reason: str | None = None
        self.scenes_done = 0
        self.busy_s = 0.0
        self.memory = None                  # last telemetry.MemorySnapshot
        self.finished_any = False


class Supervisor:
    """Runs one set of tasks through spawned workers; see the module docstring."""

    def __init__(self, tasks: Sequence, jobs: list[Job], specs: Sequence[WorkerSpec],
                 policy: PoolPolicy, on_event: Callable | None):
        self.tasks = list(tasks)
        self.policy = policy
        self.ledger = Ledger(self.tasks, on_event)
        self.lanes = self._make_lanes(specs)
        self.sched = Scheduler(self.tasks, jobs, self.ledger, policy, max_worker_starts(
            policy, len(self.lanes), policy.max_standby_workers, len(jobs), len(self.tasks)))
        self.ctx = multiprocess.get_context("spawn")
        self.workers: dict[int, _Worker] = {}
        self.next_id = 0

    # -- set-up -----------------------------------------------------------------------------------
    def _make_lanes(self, specs: Sequence[WorkerSpec]) -> list[_Lane]:
        plan = []
        for spec in specs:
            cls = resolve_backend_class(spec.backend)  # BackendUnavailable here, before any spawn
            gpu = spec.slot.is_cuda and getattr(cls, "needs_cuda_for_speed", True)
            n = self.policy.workers_per_device or (1 if gpu else default_cpu_workers())
            plan.append((spec, int(n), gpu))
        cpu_lanes = sum(n for _, n, gpu in plan if not gpu)
        threads = max(1, (os.cpu_count() or 1) // cpu_lanes) if cpu_lanes else None
        lanes = []
        for spec, n, gpu in plan:
            for _ in range(n):
                lanes.append(_Lane(len(lanes), spec, None if gpu else threads))
        return lanes

    # -- main loop ---------------------------------------------------------------------------------
    def run(self) -> PoolReport:
        return self.sched.drive(self._schedule, self._wait_and_handle, self.shutdown)

    def _schedule(self) -> None:
        for lane in self.lanes:
            if lane.active is None and lane.standbys:
                lane.active = lane.standbys.pop(0)
                lane.active.role = "active"
            w = lane.active
            if w is not None and w.ready and w.job is None and w.conn is not None:
                self._assign_next(w)
        waiting = sum(1 for lane in self.lanes if lane.active is not None and lane.active.job is None)
        for lane in self.lanes:
            if lane.active is None and len(self.sched.queue) > waiting:
                if not self._spawn(lane, "active"):
                    break
                waiting += 1
        self._start_standbys()
        stuck = self.sched.stuck(bool(self.workers), "pool")
        if stuck:
            self._give_up(stuck)
        # Worker-slot seconds lost to start-up: lanes without a ready worker while work waits.
        self.sched.starved(sum(1 for lane in self.lanes
                               if lane.active is None or not lane.active.ready))

    def _assign_next(self, w: _Worker) -> None:
        msg = self.sched.assign(w)
        if msg is not None:
            try:
                w.conn.send(msg)
            except (OSError, ValueError):
                pass  # it died: its sentinel reports the crash and gives the job back

    def _start_standbys(self) -> None:
        # Each lane asks for its own successors from the whole queue, so near the end of a run
        # every lane could start one for the same last job. Capped here: a standby beyond the
        # queued jobs that no started worker will take could only load (~6 s, ~1 GiB of the
        # card) and be stopped unused.
        spare = len(self.sched.queue) - sum(
            len(lane.standbys) + (lane.active is not None and lane.active.job is None)
            for lane in self.lanes)
        for lane in self.lanes:
            while spare > 0 and len(lane.standbys) < self._standbys_wanted(lane):
                if not self._spawn(lane, "standby"):
                    return
                spare -= 1

    def _standbys_wanted(self, lane: _Lane) -> int:
        """How many replacements should be loading now, so each is ready when its predecessor
        retires and no more than the remaining work will use."""
        w, p = lane.active, self.policy
        if not p.warm_standby or w is None or not w.ready or not self.sched.queue:
            return 0
        queued = self.sched.queued_scenes()
        left = p.max_scenes_per_worker - w.scenes_done - len(w.open)  # before w retires
        successors = math.ceil(max(0, queued - max(0, left)) / p.max_scenes_per_worker)
        imminent = (w.job is not None and left <= 0) or (
            w.memory is not None and self._near_drift_limit(w.memory))
        if imminent:
            successors = max(successors, 1)
        if not successors:
            return 0  # the run ends before this worker retires
        depth = 1 if imminent else 0
        if w.scenes_done and self.sched.startup_seconds:
            # Standby k takes over about (k - 1) worker lives after this worker retires; spawn it
            # once that is less than STANDBY_LEAD start-ups away.
            per_scene = w.busy_s / w.scenes_done
            lead = STANDBY_LEAD * max(self.sched.startup_seconds) - max(0, left) * per_scene
            life = max(p.max_scenes_per_worker * per_scene, 1e-6)
            if lead >= 0:
                depth = max(depth, int(lead // life) + 1)
        return min(depth, successors, p.max_standby_workers)

    def _near_drift_limit(self, m) -> bool:
        p, mib, f = self.policy, 1024 * 1024, STANDBY_AT_FRACTION
        return ((m.drift_bytes is not None and m.drift_bytes > f * p.max_drift_mb * mib)
                or (m.inactive_split_bytes is not None
                    and m.inactive_split_bytes > f * p.max_inactive_split_mb * mib)
                or (m.alloc_retries is not None and m.alloc_retries >= f * p.max_alloc_retries))

    def _spawn(self, lane: _Lane, role: str) -> bool:
        if not self.sched.may_start():
            return False
        self.next_id += 1
        parent_conn, child_conn = self.ctx.Pipe(duplex=True)
        process = self.ctx.Process(
            target=worker_main, args=(child_conn, self.next_id, lane.spec, self.policy, lane.threads),
            name=f"whisperjav-enhance-worker-{self.next_id}", daemon=True)
        process.start()
        child_conn.close()  # ours is closed so the pipe reports EOF when the child dies
        w = _Worker(self.next_id, lane, process, parent_conn, role)
        self.workers[w.id] = w
        if role == "active":
            lane.active = w
        else:
            lane.standbys.append(w)
            self.ledger.emit(Log(f"worker {w.id} starting as warm standby on {lane.label}"))
        return True

    def _wait_and_handle(self) -> None:
        handles = {}
        for w in self.workers.values():
            if w.conn is not None:
                handles[w.conn] = w
            handles[w.process.sentinel] = w
        timeout = max(0.0, min(POLL_S, self._next_deadline() - time.perf_counter()))
        ready = _wait(list(handles), timeout) if handles else _sleep(timeout)
        self.sched.tick(time.perf_counter())
        for h in ready:
            w = handles[h]
            if h is w.conn and w.id in self.workers:
                self._drain(w)
        for h in ready:
            w = handles[h]
            if h is not w.conn and w.id in self.workers:
                self._on_exit(w)
        self._watchdog(time.perf_counter())

    # -- messages ------------------------------------------------------------------------------------
    def _drain(self, w: _Worker) -> None:
        while w.conn is not None:
            try:
                if not w.conn.poll():
                    return
                msg = w.conn.recv()
            except Exception:  # EOF, a broken pipe, or a message cut short by the child's death
                w.conn.close()
                w.conn = None
                return
            self._handle(w, msg)

    def _handle(self, w: _Worker, msg) -> None:
        now = time.perf_counter()
        if isinstance(msg, SceneResult):
            self.sched.scene_result(w, msg)
        elif isinstance(msg, Alive):
            w.progress_at = now
        elif isinstance(msg, UnitDone):
            w.progress_at = now
            w.scenes_done, w.memory = msg.scenes_done, msg.memory
            w.busy_s += msg.busy_s
            self.ledger.unit_done(msg)
            if msg.retiring:
                self._leave(w, now)
            else:
                self.sched.give_back(w, sorted(w.open), "finished its unit without reporting")
                w.job, w.open = None, set()
        elif isinstance(msg, Ready):
            w.ready = True
            self.sched.worker_ready(w, w.lane.label, msg.pid, w.spawned_at)
        elif isinstance(msg, Retiring):
            w.retiring = msg
            self.sched.retiring(w, msg)
            self._leave(w, now)
        elif isinstance(msg, LoadFailed):
            if load_failure_is_fatal(msg, self.sched):
                self.ledger.emit(WorkerRetired(w.id, "load_failed", 0))
                raise _LoadFailure(msg, w.lane.spec)
            w.kill_reason = load_failure_description(msg)  # its exit is then handled as a crash
            w.process.kill()
        else:
            self.ledger.emit(Log(f"worker {w.id} sent an unknown message {type(msg).__name__}",
                                 "warning"))

    def _leave(self, w: _Worker, now: float) -> None:
        if w.lane.active is w:
            w.lane.active = None
        if w in w.lane.standbys:
            w.lane.standbys.remove(w)
        if w.role != "leaving":
            w.role, w.leaving_since = "leaving", now

    # -- exits, crashes and the watchdog ---------------------------------------------------------------
    def _on_exit(self, w: _Worker) -> None:
        self._drain(w)  # what it said before it died still counts
        w.process.join(JOIN_TIMEOUT_S)
        self._forget(w)
        if w.retiring is not None:
            return
        self._leave(w, time.perf_counter())
        description = w.kill_reason or describe_exit(w.process.exitcode)
        futile = self.sched.crashed(w, f"pid {w.pid}", description)
        if futile >= MAX_FUTILE_CRASHES:
            self._give_up(f"{futile} workers in a row on {w.lane.label} crashed without "
                          f"finishing a scene; last: {description}")

    def _forget(self, w: _Worker) -> None:
        self.workers.pop(w.id, None)
        if w.conn is not None:
            w.conn.close()
            w.conn = None

    def _next_deadline(self) -> float:
        deadlines = [time.perf_counter() + POLL_S]
        for w in self.workers.values():
            d = self._deadline(w)
            if d is not None:
                deadlines.append(d)
        return min(deadlines)

    def _deadline(self, w: _Worker) -> float | None:
        if w.kill_reason is not None:
            return None
        if w.role == "leaving":
            return (w.leaving_since or w.spawned_at) + LEAVE_TIMEOUT_S
        if not w.ready:
            return w.spawned_at + self.policy.startup_timeout_s
        if w.job is not None:
            return w.progress_at + self.policy.scene_timeout_s
        return None

    def _watchdog(self, now: float) -> None:
        for w in list(self.workers.values()):
            deadline = self._deadline(w)
            if deadline is None or now < deadline:
                continue
            if w.role == "leaving":
                w.kill_reason = "did not exit after retiring; killed"
            elif not w.ready:
                w.kill_reason = (f"timeout: not loaded after {self.policy.startup_timeout_s:g} s "
                                 "(startup_timeout_s); killed")
            else:
                w.kill_reason = hung_message(self.policy.scene_timeout_s)
            w.process.kill()

    def _give_up(self, why: str) -> None:
        self.ledger.emit(Log(f"giving up: {why}", "warning"))
        self.stop()
        self.sched.fail_unfinished(why)

    # -- stopping ------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """End of the run: idle workers are asked to leave, loading ones are stopped."""
        for w in list(self.workers.values()):
            if w.ready and w.role != "leaving" and w.conn is not None:
                try:
                    w.conn.send(Shutdown())
                    self._leave(w, time.perf_counter())
                except (OSError, ValueError):
                    pass
            elif not w.ready:
                w.retiring = Retiring(w.id, "shutdown", 0)  # a standby nobody needed: not a crash
                w.process.terminate()
                if w.conn is not None:
                    w.conn.close()
                    w.conn = None
        deadline = time.perf_counter() + SHUTDOWN_GRACE_S
        while self.workers and time.perf_counter() < deadline:
            handles = {}
            for w in self.workers.values():
                if w.conn is not None:
                    handles[w.conn] = w
                handles[w.process.sentinel] = w
            for h in _wait(list(handles), min(POLL_S, max(0.0, deadline - time.perf_counter()))):
                w = handles[h]
                if w.id not in self.workers:
                    continue
                self._drain(w)
                if h is not w.conn:
                    w.process.join(JOIN_TIMEOUT_S)
                    self._forget(w)
        self.stop()

    def stop(self) -> None:
        """Terminate, then kill, every worker still there; join each with a timeout."""
        workers = list(self.workers.values())
        for w in workers:
            if w.process.is_alive():
                w.process.terminate()
        for w in workers:
            w.process.join(JOIN_TIMEOUT_S)
            if w.process.is_alive():
                w.process.kill()
                w.process.join(JOIN_TIMEOUT_S)
            self._forget(w)

    def unfinished_outputs(self) -> list[str]:
        return self.sched.unfinished_outputs()


# -- entry point -------------------------------------------------------------------------------------
def run_pool(tasks: Sequence, units: Sequence, specs: Sequence[WorkerSpec], policy: PoolPolicy,
             on_event: Callable | None = None) -> PoolReport:
    """Enhance ``tasks`` in spawned workers; one :class:`SceneOutcome` per task, in task order.

    Raises :class:`RunInterrupted` on Ctrl-C/SIGTERM (after stopping workers and removing
    temporaries), and WeightsError/BackendUnavailable/DeviceError when workers cannot load.
    """
    tasks, specs = list(tasks), list(specs)
    if not specs:
        raise ValueError("run_pool needs at least one WorkerSpec")
    jobs = jobs_for(units, len(tasks))
    if not tasks:
        return Ledger([], on_event).report(workers_started=0, recycles={}, worker_crashes=0,
                                           startup_seconds=(), startup_wait_seconds=0.0)
    sup = Supervisor(tasks, jobs, specs, policy, on_event)
    restore = install_termination_handler()
    finished = False
    try:
        report = sup.run()
        finished = True
        return report
    except (KeyboardInterrupt, Terminated) as exc:
        sup.stop()
        removed = remove_partials(sup.unfinished_outputs())
        what = exc.signal_name if isinstance(exc, Terminated) else "Ctrl-C"
        err = RunInterrupted(f"interrupted by {what}: workers stopped, {len(removed)} temporary "
                             "file(s) removed, finished scenes kept")
        err.outcomes = tuple(o for o in sup.ledger.outcomes if o is not None)
        raise err from None
    except _LoadFailure as failure:
        sup.stop()
        raise load_error(failure.msg, failure.spec) from RemoteTraceback(failure.msg.traceback_text)
    finally:
        sup.stop()
        restore()
        if not finished:  # any other way out (a failing on_event, a bug): no temporaries left
            remove_partials(sup.unfinished_outputs())


def _sleep(seconds: float) -> list:
    time.sleep(seconds)
    return []


__all__ = ["run_pool", "Supervisor", "RemoteTraceback", "describe_exit", "hung_message",
           "load_failure_is_fatal", "load_failure_description",
           "load_error"]
