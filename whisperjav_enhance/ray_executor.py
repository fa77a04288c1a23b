"""The Ray executor: the pool's semantics on a Ray cluster, for many GPUs and many machines.

    run_ray(tasks, units, specs, policy, on_event=None, address=None, device=None) -> PoolReport

Same contract as ``pool.run_pool`` (same tasks, planner units, events and report); only where the
workers live differs::

    driver (this process, never touches CUDA)                 Ray actors, one per lane
      queue of work units (crash requeues: front, one scene    RayWorker: pool.worker.WorkerRuntime
      per job) --run_unit(UnitAssignment)------------------->    loaded once (load())
      <---- streaming generator: SceneResult/Alive ...,         reads/writes scene files itself
            UnitDone [Retiring]                                 (outputs: write_audio_atomic)
      ActorDiedError = a crash; watchdog = ray.kill
      Ledger -> events -> PoolReport

* Devices: ``device`` (``auto``, ``cpu``, ``cuda``) is decided by the cluster's resources, not by
  the machine that runs the driver, which may have no GPU: ``auto`` is the cluster's GPUs, else
  its CPUs; ``cuda`` needs cluster GPUs (:func:`cluster_slots`). A private local instance is this
  machine, so there the device is resolved here as the local pool does (``cuda:N`` included).
* Lanes: one actor per GPU of the cluster (``num_gpus=1``; ``workers_per_device`` N shares each GPU
  between N actors at ``num_gpus=1/N``), or on the CPU ``workers_per_device`` actors, by default
  one per two cluster cores like ``devices.default_cpu_workers`` (``num_cpus=1`` each). Ray, not
  ``CUDA_VISIBLE_DEVICES`` from the driver, gives each actor its GPU.
* The per-unit code is the local worker's (``WorkerRuntime.run_unit``), so batching, OOM handling,
  per-scene failures, telemetry and the recycling decision are identical. Each message it emits is
  yielded to the driver as it happens, so a dead actor's finished scenes are known and only its
  unfinished scenes are requeued.
* Recycling (scene count, drift, ...): the actor says why in its ``Retiring`` message; the driver
  announces ``WorkerRetired`` with that reason, ends it with ``ray.kill`` (a fresh process, so a
  fresh allocator) and starts a new actor. No warm standby: an actor holds its GPU's whole Ray
  resource, so a standby could not load beside it; a recycle costs one start.
* Crashes (``RayActorError``: the process or its node died) and watchdog kills are charged to the
  scenes in flight exactly as in the local pool (the same ``pool.scheduling.Scheduler``); a scene present at ``max_crashes_per_scene``
  crashes, the last alone in its worker, is quarantined.
* ``address=None`` starts a private local Ray instance (no dashboard, worker output not forwarded)
  and shuts it down when the run ends, on errors and Ctrl-C too. An address joins that cluster and
  leaves it running. If this process is already connected to Ray, that connection is used as is.
  Every node needs this package, the backend's packages and its weights at the same path, and must
  reach the input and output folders under the same paths (shared storage).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
import queue
import re
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .config import PoolPolicy
from .devices import DeviceSlot
from .errors import BackendUnavailable, ConfigError, DeviceError, RunInterrupted
from .events import Log, WorkerRetired
from .pool.cleanup import Terminated, install_termination_handler, remove_partials
from .pool.ledger import Ledger, PoolReport
from .pool.messages import (Alive, LoadFailed, Retiring, SceneResult, UnitAssignment, UnitDone,
                            WorkerSpec)
from .pool.scheduling import Job, Scheduler, jobs_for, max_worker_starts

# Tunables (module-level so tests can shrink them).
POLL_S = 0.5                     # longest single wait; keeps Ctrl-C prompt
SHUTDOWN_GRACE_S = 10.0          # at the end of a run: how long a busy actor may take to send
                                 # the rest of its last unit's report (telemetry, retirement)
KILL_WAIT_S = 10.0               # after ray.kill: longest wait for a local actor process to exit
REMOTE_KILL_GRACE_S = 2.0        # ... for an actor on another node (its pid cannot be watched)
CPU_CORES_PER_WORKER = 2         # CPU actors: one per this many cluster cores (as the local pool)
LOCAL_OBJECT_STORE_BYTES = 256 * 1024 * 1024  # local instance only: small messages cross Ray, never
                                              # audio, so the object store is kept small
NAMESPACE = "whisperjav-enhance"  # Ray namespace of the run's actors
JOIN_PROBE_TIMEOUT_S = 10.0      # a host:port address must accept a TCP connection within this;
                                 # ray.init itself retries an unreachable address for minutes


# -- the actor --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ActorLoaded:
    """What an actor's ``load()`` returns: the worker's own answer and where the actor runs."""

    message: object              # messages.Ready or messages.LoadFailed
    node_id: str                 # Ray node id (tells the driver whether it can watch the pid)
    node_ip: str                 # node address, for device labels on other machines
    gpu_ids: tuple[str, ...]     # GPUs Ray assigned to the actor (empty on the CPU)


class RayWorker:
    """The actor body: one ``WorkerRuntime`` (pool/worker.py) built once, running units on request.

    ``ray.remote`` is applied in the driver (ray stays an optional import of this module)."""

    def __init__(self, worker_id: int, spec: WorkerSpec, policy: PoolPolicy, threads: int | None,
                 use_gpu: bool):
        from .pool.worker import WorkerRuntime

        self.started = time.perf_counter()
        if not use_gpu:  # Ray sets CUDA_VISIBLE_DEVICES for GPU actors; CPU actors see no GPU
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        for key, value in spec.env.items():  # before the first CUDA call, which reads them
            os.environ[str(key)] = str(value)
        device = spec.slot.torch_device if use_gpu else "cpu"
        self.runtime = WorkerRuntime(worker_id, spec, policy, device, threads)

    def load(self) -> ActorLoaded:
        import ray

        try:
            message = self.runtime.load(self.started)
        except Exception as exc:
            message = LoadFailed(self.runtime.worker_id, type(exc).__name__, str(exc),
                                 traceback.format_exc(), tuple(getattr(exc, "searched", ()) or ()))
        ctx = ray.get_runtime_context()
        return ActorLoaded(message, ctx.get_node_id(), ray.util.get_node_ip_address(),
                           tuple(str(g) for g in ray.get_gpu_ids()))

    def run_unit(self, unit: UnitAssignment):
        """Streaming generator: each message of the unit the moment the worker emits it, then
        ``Retiring`` if the worker must leave. The unit runs in a helper thread because the worker
        reports through a callback, and a generator can only yield from its own frame."""
        outbox: queue.Queue = queue.Queue()
        done = object()

        def body():
            try:
                retiring = self.runtime.run_unit(unit, outbox.put)
            except Exception as exc:
                retiring = self.runtime.error_retiring(exc)
            if retiring is not None:
                outbox.put(retiring)
            outbox.put(done)

        threading.Thread(target=body, name="whisperjav-enhance-unit", daemon=True).start()
        while True:
            msg = outbox.get()
            if msg is done:
                return
            yield msg


# -- describing a dead actor -------------------------------------------------------------------------
def describe_actor_death(err: BaseException | None) -> str:
    """One line for people from a ``RayActorError``: what Ray knows of how the actor ended."""
    if err is None:
        return "died (no detail from Ray)"
    text = str(err)
    if "ray.kill" in text:
        return "killed with ray.kill from outside this run"
    if getattr(err, "preempted", False) or re.search(r"node (has )?died", text):
        return "lost with its node: the actor's machine left the cluster (or was preempted)"
    exit_type = re.search(r"Worker exit type: (\w+)", text)
    detail = re.search(r"Worker exit detail: (.+?\.)(?:\s|$)", text)
    if exit_type:
        return (f"actor process died ({exit_type.group(1)}"
                + (f": {detail.group(1)}" if detail else "") + "): a native crash, os._exit, "
                "a signal from outside, or the out-of-memory killer")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"died: {lines[-1] if lines else type(err).__name__}"


def _pid_alive(pid: int) -> bool:
    """Whether a process on this machine still runs (a zombie counts as gone). The one
    per-platform helper of this module."""
    if os.name == "nt":
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        try:
            code = ctypes.c_ulong()
            return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return not Path("/proc/self").exists()  # no /proc (macOS): signal 0 said it is there
    except OSError:
        return True


# -- the Ray connection -------------------------------------------------------------------------------
def import_ray():
    """The ray module, or a BackendUnavailable that says how to install it."""
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise BackendUnavailable(f"--executor ray needs the ray package ({exc}); install it with "
                                 "`pip install 'whisperjav-enhance[ray]'`, or use --executor pool") from exc


class RaySession:
    """Starts a private local Ray instance or joins a cluster, and undoes only what it did."""

    def __init__(self, ray, address: str | None):
        self.ray = ray
        # RAY_ADDRESS is honoured as ray.init itself does: it joins that cluster.
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        # True when open() starts a private instance on this machine (so its devices are this
        # machine's); False when it joins a cluster or uses the caller's connection.
        self.local = not self.address and not ray.is_initialized()
        self.owned = False              # True when close() must disconnect (and, locally, stop)

    @property
    def where(self) -> str:
        return f"the Ray cluster at {self.address}" if self.address else "the local Ray instance"

    def open(self, gpu_visible: list[str] | None = None) -> None:
        """Connect; ``gpu_visible``: the GPUs a private local instance may use (None: CPU only)."""
        if self.ray.is_initialized():
            return  # the caller's own connection: used as is, left as is
        common = dict(namespace=NAMESPACE, log_to_driver=False, logging_level=logging.WARNING)
        if self.address:
            try:
                _probe(self.address)
                with _interrupts_deferred():
                    self.ray.init(address=self.address, **common)
            except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
                raise ConfigError(f"cannot join the Ray cluster at {self.address}: {_first_line(exc)}; "
                                  "check --ray-address (the head node's GCS address, e.g. "
                                  "10.0.0.5:6379, or 'auto' on a cluster node), and for a cluster "
                                  "with token authentication (Ray's default) set RAY_AUTH_MODE=token "
                                  "and its token (RAY_AUTH_TOKEN or ~/.ray/auth_token); or leave "
                                  "--ray-address out for a local instance") from exc
            self.owned = True
            return
        previous = os.environ.get("CUDA_VISIBLE_DEVICES")
        if gpu_visible is not None:  # the raylet inherits this: it sees the chosen GPUs only
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_visible)
        try:
            self.owned = True
            with _interrupts_deferred():
                self.ray.init(num_cpus=os.cpu_count() or 1,
                              num_gpus=len(gpu_visible) if gpu_visible else 0,
                              include_dashboard=False, object_store_memory=LOCAL_OBJECT_STORE_BYTES,
                              **common)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError, OSError) as exc:
            raise ConfigError(f"could not start a local Ray instance: {_first_line(exc)}; Ray's "
                              "logs are under its temp dir (RAY_TMPDIR, default /tmp/ray) in "
                              "session_latest/logs; or use --executor pool") from exc
        finally:
            if previous is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = previous

    def resources(self) -> dict:
        return dict(self.ray.cluster_resources())

    def close(self) -> None:
        if self.owned:
            self.owned = False
            self.ray.shutdown()


def cluster_slots(device: str, resources: dict, where: str) -> list[DeviceSlot]:
    """The device slots ``device`` means on a Ray cluster whose ``ray.cluster_resources()`` are
    ``resources``: ``cpu`` the CPU; ``auto`` one slot per cluster GPU, or the CPU when there is
    none; ``cuda`` one slot per cluster GPU, a :class:`DeviceError` when there is none. GPU slots
    are numbered over the whole cluster and set no ``CUDA_VISIBLE_DEVICES``: Ray gives each actor
    its GPU. ``cuda:N`` names one GPU of one machine, which a driver cannot pick on a cluster: a
    DeviceError that says what to use instead. ``where`` names the cluster in messages."""
    spec = (device or "auto").strip().lower()
    m = re.fullmatch(r"(auto|cpu|cuda)(?::(\d+))?", spec)
    if not m or (m.group(1) != "cuda" and m.group(2) is not None):
        raise DeviceError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")
    cpu = DeviceSlot("cpu", "", "cpu")
    if spec == "cpu":
        return [cpu]
    gpus = int(resources.get("GPU", 0))  # a float in Ray's answer; fractions are not whole GPUs
    if m.group(2) is not None:
        raise DeviceError(f"device {spec!r} names one GPU of one machine, but on {where} Ray "
                          "gives each worker its GPU; use --device cuda (every GPU of the "
                          "cluster) or auto")
    if gpus < 1:
        if spec == "auto":
            return [cpu]
        raise DeviceError(f"device {spec!r} requested but {where} has no GPUs; start the Ray "
                          "nodes on GPU machines (`ray start ... --num-gpus N`) or use --device "
                          "cpu or auto")
    return [DeviceSlot(f"cuda:{i}", None, "cuda:0") for i in range(gpus)]


@contextlib.contextmanager
def _interrupts_deferred():
    """Hold a Ctrl-C that arrives while ray.init runs and raise it once init has returned.

    Interrupted half-way, ray.init leaves daemons it has started but not yet recorded (seen here:
    the raylet's agents outlive the run); complete, ``ray.shutdown`` stops every one. Ray's
    daemons block SIGINT themselves, so the terminal's Ctrl-C reaches only this process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt


def _probe(address: str) -> None:
    """Fail fast (ConnectionError) when a ``host:port`` address accepts no connection; other forms
    (``auto``, ``ray://...``) are left to Ray."""
    m = re.fullmatch(r"\[?([^\[\]/]+?)\]?:(\d+)", address.strip())
    if not m:
        return
    try:
        with socket.create_connection((m.group(1), int(m.group(2))), timeout=JOIN_PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ConnectionError(f"nothing answers at {address} ({exc.strerror or exc})") from exc


# -- the driver ---------------------------------------------------------------------------------------
@dataclass
class _Lane:
    index: int
    spec: WorkerSpec
    use_gpu: bool
    options: dict           # ray actor options (resources)
    threads: int | None
    actor: "_Actor | None" = None
    futile: int = 0         # consecutive crashes in this lane that finished nothing


class _Actor:
    def __init__(self, wid: int, lane: _Lane, handle):
        self.id = wid
        self.lane = lane
        self.handle = handle
        self.created_at = self.progress_at = time.perf_counter()
        self.ready_ref = handle.load.remote()
        self.ready = False
        self.pid: int | None = None
        self.local = True                # on the driver's node (its pid can be watched)
        self.label = "cpu"
        self.job: Job | None = None
        self.open: set[int] = set()      # positions of the job not yet reported
        self.stream = None               # ObjectRefGenerator of the unit in flight
        self.retiring = False            # UnitDone said it leaves; its Retiring is next
        self.kill_reason: str | None = None
        self.scenes_done = 0
        self.finished_any = False


class RayRunner:
    """Runs one set of tasks on Ray actors; see the module docstring."""

    def __init__(self, ray, tasks: Sequence, jobs: list[Job], specs: Sequence[WorkerSpec],
                 policy: PoolPolicy, on_event: Callable | None, session: RaySession):
        from .pool import supervisor

        self.ray = ray
        self.tasks = list(tasks)
        self.policy = policy
        self.session = session
        self.ledger = Ledger(self.tasks, on_event)
        self.max_futile = supervisor.MAX_FUTILE_CRASHES
        self.lanes = self._make_lanes(specs, session.resources())
        # The local pool's queue, crash accounting and start bound (no standbys here).
        self.sched = Scheduler(self.tasks, jobs, self.ledger, policy, max_worker_starts(
            policy, len(self.lanes), 0, len(jobs), len(self.tasks)))
        self.remote_class = ray.remote(RayWorker)
        self.driver_node = ray.get_runtime_context().get_node_id()
        self.actors: dict[int, _Actor] = {}
        self.next_id = 0
        self._closing = False            # the run is over: a death now is no crash

    # -- set-up -----------------------------------------------------------------------------------
    def _make_lanes(self, specs: Sequence[WorkerSpec], resources: dict) -> list[_Lane]:
        from .pool.worker import resolve_backend_class

        gpu_specs = [s for s in specs if s.slot.is_cuda
                     and getattr(resolve_backend_class(s.backend), "needs_cuda_for_speed", True)]
        per_device = self.policy.workers_per_device
        if gpu_specs:
            gpus = int(resources.get("GPU", 0))
            if gpus < 1:
                raise DeviceError(f"{self.session.where} has no GPUs; start the Ray nodes on GPU "
                                  "machines (`ray start ... --num-gpus N`) or use --device cpu")
            n = per_device or 1
            opts = {"num_gpus": 1.0 / n, "num_cpus": 0}
            return [_Lane(i, gpu_specs[0], True, opts, None) for i in range(gpus * n)]
        cpus = max(1, int(resources.get("CPU", 0)))
        n = per_device or max(1, cpus // CPU_CORES_PER_WORKER)
        threads = max(1, cpus // n)
        opts = {"num_cpus": 1}
        return [_Lane(i, specs[0], False, opts, threads) for i in range(n)]

    # -- main loop ---------------------------------------------------------------------------------
    def run(self) -> PoolReport:
        return self.sched.drive(self._schedule, self._wait_and_handle, self.shutdown)

    def _schedule(self) -> None:
        for lane in self.lanes:
            a = lane.actor
            if a is not None and a.ready and a.job is None and not a.retiring:
                self._assign_next(a)
        starting = sum(1 for lane in self.lanes if lane.actor is not None and not lane.actor.ready)
        for lane in self.lanes:
            if lane.actor is None and len(self.sched.queue) > starting:
                if not self._start(lane):
                    break
                starting += 1
        stuck = self.sched.stuck(bool(self.actors), "Ray executor")
        if stuck:
            self._give_up(stuck)
        self.sched.starved(sum(1 for lane in self.lanes
                               if lane.actor is None or not lane.actor.ready))

    def _start(self, lane: _Lane) -> bool:
        if not self.sched.may_start():
            return False
        self.next_id += 1
        handle = self.remote_class.options(
            max_restarts=0, max_task_retries=0, scheduling_strategy="SPREAD",
            **lane.options).remote(self.next_id, lane.spec, self.policy, lane.threads, lane.use_gpu)
        lane.actor = self.actors[self.next_id] = _Actor(self.next_id, lane, handle)
        return True

    def _assign_next(self, a: _Actor) -> None:
        msg = self.sched.assign(a)
        if msg is not None:
            a.stream = a.handle.run_unit.options(num_returns="streaming").remote(msg)

    def _wait_and_handle(self) -> None:
        waiting = []
        for a in self.actors.values():
            if not a.ready:
                waiting.append((a.ready_ref, a))
            elif a.stream is not None:
                waiting.append((a.stream, a))
        timeout = max(0.0, min(POLL_S, self._next_deadline() - time.perf_counter()))
        if waiting:
            ready, _ = self.ray.wait([w for w, _ in waiting], num_returns=1, timeout=timeout)
        else:
            time.sleep(timeout)
            ready = []
        self.sched.tick(time.perf_counter())
        for obj in ready:
            a = next(a for w, a in waiting if w is obj or w == obj)
            if a.id not in self.actors:
                continue
            if not a.ready:
                self._on_loaded(a)
            else:
                self._drain(a)
        self._watchdog(time.perf_counter())

    # -- what actors say ----------------------------------------------------------------------------
    def _on_loaded(self, a: _Actor) -> None:
        from .pool.supervisor import (RemoteTraceback, load_error, load_failure_description,
                                      load_failure_is_fatal)

        try:
            loaded = self.ray.get(a.ready_ref)
        except self.ray.exceptions.RayActorError as err:
            if getattr(err, "actor_init_failed", False):
                raise BackendUnavailable(
                    f"a Ray worker could not be created ({_first_line(err)}); install the same "
                    "whisperjav-enhance version and the backend's packages on every node") from err
            self._on_death(a, err)
            return
        msg = loaded.message
        if isinstance(msg, LoadFailed):
            if load_failure_is_fatal(msg, self.sched):
                self.ledger.emit(WorkerRetired(a.id, "load_failed", 0))
                raise load_error(msg, a.lane.spec) from RemoteTraceback(msg.traceback_text)
            a.kill_reason = load_failure_description(msg)
            self._on_death(a, None)
            return
        a.ready, a.pid = True, msg.pid
        a.local = loaded.node_id == self.driver_node
        a.label = f"cuda:{loaded.gpu_ids[0]}" if a.lane.use_gpu and loaded.gpu_ids else "cpu"
        if not a.local:
            a.label = f"{loaded.node_ip}/{a.label}"
        self.sched.worker_ready(a, a.label, a.pid, a.created_at)

    def _drain(self, a: _Actor) -> None:
        """Handle every message of the unit's stream that has arrived."""
        while a.stream is not None and a.id in self.actors:
            stream = a.stream
            ready, _ = self.ray.wait([stream], num_returns=1, timeout=0)
            if not ready:
                return
            try:
                ref = next(stream)
            except StopIteration:
                a.stream = None
                if a.job is not None and not a.retiring:  # ended without UnitDone: a bug
                    self.sched.give_back(a, sorted(a.open), "ended its unit without reporting")
                    a.job = None
                return
            try:
                msg = self.ray.get(ref)
            except self.ray.exceptions.RayActorError as err:
                self._on_death(a, err)
                return
            self._handle(a, msg)

    def _handle(self, a: _Actor, msg) -> None:
        if isinstance(msg, SceneResult):
            self.sched.scene_result(a, msg)
        elif isinstance(msg, Alive):
            a.progress_at = time.perf_counter()
        elif isinstance(msg, UnitDone):
            a.progress_at = time.perf_counter()
            a.scenes_done = msg.scenes_done
            self.ledger.unit_done(msg)
            if msg.retiring:
                a.retiring = True  # its Retiring message follows on the same stream
            else:
                self.sched.give_back(a, sorted(a.open), "finished its unit without reporting")
                a.job, a.open, a.stream = None, set(), None
        elif isinstance(msg, Retiring):
            self.sched.retiring(a, msg)
            self._end(a)  # recycled: a fresh actor (fresh process, fresh allocator) takes the lane
        else:
            self.ledger.emit(Log(f"worker {a.id} sent an unknown message {type(msg).__name__}",
                                 "warning"))

    # -- crashes and the watchdog ---------------------------------------------------------------------
    def _on_death(self, a: _Actor, err: BaseException | None) -> None:
        if self._closing:
            self._end(a)
            return
        description = a.kill_reason or describe_actor_death(err)
        self._end(a)
        futile = self.sched.crashed(a, f"pid {a.pid}" if a.pid else "not started", description)
        if futile >= self.max_futile:
            self._give_up(f"{futile} workers in a row crashed without finishing a scene; "
                          f"last: {description}")

    def _next_deadline(self) -> float:
        deadlines = [time.perf_counter() + POLL_S]
        deadlines += [d for d in (self._deadline(a) for a in self.actors.values()) if d is not None]
        return min(deadlines)

    def _deadline(self, a: _Actor) -> float | None:
        if not a.ready:
            return a.created_at + self.policy.startup_timeout_s
        if a.job is not None:
            return a.progress_at + self.policy.scene_timeout_s
        return None

    def _watchdog(self, now: float) -> None:
        from .pool.supervisor import hung_message

        for a in list(self.actors.values()):
            deadline = self._deadline(a)
            if deadline is None or now < deadline:
                continue
            if not a.ready:
                a.kill_reason = (f"timeout: not loaded after {self.policy.startup_timeout_s:g} s "
                                 "(startup_timeout_s; on a cluster also: no node had the resources "
                                 "free); killed")
            else:
                a.kill_reason = hung_message(self.policy.scene_timeout_s)
            self._on_death(a, None)

    # -- ending actors ---------------------------------------------------------------------------------
    def _end(self, a: _Actor) -> None:
        """ray.kill the actor and wait until its process is gone (so nothing it writes can appear
        after its temporaries are removed)."""
        self.actors.pop(a.id, None)
        if a.lane.actor is a:
            a.lane.actor = None
        self._kill_all([a])

    def _kill_all(self, actors: list[_Actor]) -> None:
        for a in actors:
            try:
                self.ray.kill(a.handle, no_restart=True)
            except Exception:  # already dead, or the cluster is going away
                pass
        deadline = time.monotonic() + KILL_WAIT_S
        for a in actors:
            if a.pid is None:
                continue
            if not a.local:
                time.sleep(max(0.0, min(REMOTE_KILL_GRACE_S, deadline - time.monotonic())))
                continue
            while _pid_alive(a.pid) and time.monotonic() < deadline:
                time.sleep(0.02)

    def _give_up(self, why: str) -> None:
        self.ledger.emit(Log(f"giving up: {why}", "warning"))
        self.stop()
        self.sched.fail_unfinished(why)

    def shutdown(self) -> None:
        """End of the run: the rest of each last unit's report is read (as the local pool reads
        its workers' last messages), then every actor leaves; loaded ones that did not retire on
        their own are announced as retired (shutdown)."""
        self._closing = True
        deadline = time.perf_counter() + SHUTDOWN_GRACE_S
        while time.perf_counter() < deadline:
            busy = [(a.stream, a) for a in self.actors.values() if a.ready and a.stream is not None]
            if not busy:
                break
            timeout = max(0.0, min(POLL_S, deadline - time.perf_counter()))
            ready, _ = self.ray.wait([s for s, _ in busy], num_returns=1, timeout=timeout)
            for obj in ready:
                self._drain(next(a for s, a in busy if s is obj or s == obj))
        for a in self.actors.values():
            if a.ready:
                self.ledger.emit(WorkerRetired(a.id, "shutdown", a.scenes_done))
        self.stop()

    def stop(self) -> None:
        """Kill every actor still there and wait for their processes."""
        actors = list(self.actors.values())
        self.actors.clear()
        for lane in self.lanes:
            lane.actor = None
        self._kill_all(actors)

    def unfinished_outputs(self) -> list[str]:
        return self.sched.unfinished_outputs()


def _first_line(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


# -- entry point ----------------------------------------------------------------------------------------
def run_ray(tasks: Sequence, units: Sequence, specs: Sequence[WorkerSpec], policy: PoolPolicy,
            on_event: Callable | None = None, address: str | None = None,
            device: str | None = None) -> PoolReport:
    """Enhance ``tasks`` on Ray actors; one :class:`SceneOutcome` per task, in task order.

    ``address`` joins an existing cluster (left running); None starts a local instance that is
    stopped when this returns or raises. ``device`` (auto, cpu, cuda, cuda:N) is resolved where the
    workers run, once connected: ``specs[0]`` runs on every slot it gives (its own slot is
    replaced), and ``PoolReport.devices`` names them; None runs the specs' slots as given. Raises
    RunInterrupted on Ctrl-C/SIGTERM (actors killed, temporaries removed),
    WeightsError/BackendUnavailable when workers cannot load, ConfigError when the cluster cannot
    be joined, DeviceError when GPUs were asked for and the cluster has none.
    """
    from .pool.worker import resolve_backend_class

    tasks, specs = list(tasks), list(specs)
    if not specs:
        raise ValueError("run_ray needs at least one WorkerSpec")
    jobs = jobs_for(units, len(tasks))
    if not tasks:
        return Ledger([], on_event).report(workers_started=0, recycles={}, worker_crashes=0,
                                           startup_seconds=(), startup_wait_seconds=0.0)
    ray = import_ray()
    for spec in specs:  # BackendUnavailable here, before Ray starts
        resolve_backend_class(spec.backend)
    session = RaySession(ray, address)
    if device is not None and session.local:
        from .devices import resolve_devices  # counts GPUs without creating a CUDA context

        specs = _on_slots(specs[0], resolve_devices(device))  # the instance is this machine
    put_back = _keep_signal_handlers()  # ray.init replaces the SIGTERM handler with sys.exit
    restore = lambda: None  # noqa: E731
    runner: RayRunner | None = None
    finished = False
    try:
        session.open([s.slot.visible_devices for s in specs if s.slot.is_cuda] or None)
        restore = install_termination_handler()
        if device is not None:
            specs = _cluster_specs(specs, device, session, on_event)
        runner = RayRunner(ray, tasks, jobs, specs, policy, on_event, session)
        report = dataclasses.replace(runner.run(), devices=tuple(s.slot.label for s in specs))
        finished = True
        return report
    except (KeyboardInterrupt, Terminated) as exc:
        outcomes, removed = (), []
        if runner is not None:
            runner.stop()
            removed = remove_partials(runner.unfinished_outputs())
            outcomes = tuple(o for o in runner.ledger.outcomes if o is not None)
        what = exc.signal_name if isinstance(exc, Terminated) else "Ctrl-C"
        err = RunInterrupted(f"interrupted by {what}: Ray workers stopped, {len(removed)} "
                             "temporary file(s) removed, finished scenes kept")
        err.outcomes = outcomes
        raise err from None
    finally:
        try:
            if runner is not None:
                runner.stop()
                if not finished:  # any other way out (a load failure, a bug): no temporaries left
                    remove_partials(runner.unfinished_outputs())
        finally:
            restore()
            session.close()
            put_back()


def _on_slots(spec: WorkerSpec, slots: Sequence[DeviceSlot]) -> list[WorkerSpec]:
    return [dataclasses.replace(spec, slot=slot) for slot in slots]


def _cluster_specs(specs: list[WorkerSpec], device: str, session: RaySession,
                   on_event: Callable | None) -> list[WorkerSpec]:
    """The specs on the devices ``device`` means where the workers run (a private local instance:
    already resolved on this machine), announced in a Log event."""
    resources = session.resources()
    if not session.local:
        specs = _on_slots(specs[0], cluster_slots(device, resources, session.where))
    if on_event is not None:
        on_event(Log(f"{session.where} has {resources.get('GPU', 0):g} GPU(s) and "
                     f"{resources.get('CPU', 0):g} CPU(s); device {device!r} runs on "
                     + ",".join(s.slot.label for s in specs)))
    return specs


def _keep_signal_handlers() -> Callable[[], None]:
    """Remember the termination handlers; returns a function that puts them back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    names = ("SIGTERM", "SIGBREAK")  # SIGBREAK exists only on Windows
    saved = {sig: signal.getsignal(sig) for sig in (getattr(signal, n, None) for n in names)
             if sig is not None}

    def put_back():
        for sig, handler in saved.items():
            try:
                signal.signal(sig, handler)
            except (ValueError, OSError, TypeError):  # None: a handler not set from Python
                pass

    return put_back


__all__ = ["run_ray", "RayWorker", "RayRunner", "RaySession", "cluster_slots",
           "describe_actor_death", "import_ray"]
