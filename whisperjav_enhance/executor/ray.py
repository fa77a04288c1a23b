"""The Ray transport: the driver's workers are Ray actors, for many GPUs and many machines.

    driver (this process, never touches CUDA)              Ray actors, one per lane
      start: RayWorker.remote(), load.remote() -----------> RayWorker: runtime.WorkerRuntime
      send:  run_unit.remote(UnitAssignment) -------------->   loaded once, reads/writes scene
      <---- streaming generator: SceneDone/Alive..., UnitDone [Retiring]   files itself
      RayActorError = an exit (a crash unless it retired); end/kill = ray.kill

* Devices: ``device`` (``auto``, ``cpu``, ``cuda``) is decided by the cluster's resources, not by
  the machine that runs the driver, which may have no GPU (ray_session.cluster_slots). A private
  local instance is this machine, so there the device is resolved as the local pool does
  (``cuda:N`` included).
* Lanes: one actor per GPU of the cluster (``num_gpus=1``; ``workers_per_device`` N shares each GPU
  between N actors at ``num_gpus=1/N``), or on the CPU ``workers_per_device`` actors, by default as
  many as the local pool would start on the cluster's cores (``num_cpus=1`` each). Ray, not
  ``CUDA_VISIBLE_DEVICES`` from the driver, gives each actor its GPU.
* The per-unit code is the local worker's, so batching, OOM handling, per-scene failures,
  telemetry and the recycling decision are identical. Each message is yielded to the driver as it
  happens, so a dead actor's finished scenes are known and only its unfinished scenes go back.
* No warm standby: an actor holds its GPU's whole Ray resource, so a standby could not load beside
  it; a recycle costs one start.
* Every node needs this package, the backend's packages and its weights at the same path, and must
  reach the input and output folders under the same paths (shared storage).
"""

from __future__ import annotations

import dataclasses
import os
import queue
import re
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..config import PoolPolicy
from ..errors import BackendUnavailable, DeviceError, first_line
from ..events import Log
from ..status import Retirement
from .messages import LoadFailed, Retiring, UnitAssignment, UnitDone, UnitLost, WorkerSpec
from .interrupts import keep_signal_handlers
from .ray_session import RaySession, cluster_slots, import_ray
from .transport import (Exited, Transport, backend_class_of, cpu_lane_count, cpu_threads,
                        runs_on_gpu)
from .workers import Lane, Worker

KILL_WAIT_S = 10.0               # after ray.kill: longest wait for a local actor process to exit
REMOTE_KILL_GRACE_S = 2.0        # ... for an actor on another node (its pid cannot be watched)


# -- the actor --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ActorLoaded:
    """What an actor's ``load()`` returns: the worker's own answer and where the actor runs."""

    message: object              # messages.Ready or messages.LoadFailed
    node_id: str                 # Ray node id (tells the driver whether it can watch the pid)
    node_ip: str                 # node address, for device labels on other machines
    gpu_ids: tuple[str, ...]     # GPUs Ray assigned to the actor (empty on the CPU)


class RayWorker:
    """The actor body: one ``WorkerRuntime`` built once, running units on request.

    ``ray.remote`` is applied in the driver (ray stays an optional import of this module)."""

    def __init__(self, worker_id: int, spec: WorkerSpec, policy: PoolPolicy, threads: int | None,
                 use_gpu: bool):
        import faulthandler

        from .runtime import WorkerRuntime

        faulthandler.enable(all_threads=True)  # a native crash's stack lands in Ray's worker log
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


# -- the transport -------------------------------------------------------------------------------------
@dataclass(eq=False)
class _Actor:
    """The transport's handle of one worker."""

    actor: object                     # the Ray actor handle
    ready_ref: object                 # ObjectRef of load(), until it is collected
    stream: object = None             # ObjectRefGenerator of the unit in flight
    unit_closed: bool = False         # the stream brought the unit's UnitDone (or Retiring)
    local: bool = True                # on the driver's node (its pid can be watched)


class RayTransport(Transport):
    """Ray actors as workers; see the module docstring."""

    title = "Ray executor"
    startup_hint = "; on a cluster also: no node had the resources free"

    def __init__(self, address: str | None = None, device: str | None = None):
        self.address = address
        self.device = device              # None: run the specs' slots as given
        self.ray = None
        self.session: RaySession | None = None
        self.remote_class = None
        self.driver_node = None
        self.pending: list[tuple[Worker, object]] = []

    def open(self, specs: Sequence[WorkerSpec], policy: PoolPolicy,
             on_event: Callable | None) -> list[Lane]:
        self.ray = ray = import_ray()
        for spec in specs:  # BackendUnavailable here, before Ray starts
            backend_class_of(spec)
        self.session = session = RaySession(ray, self.address)
        specs = list(specs)
        if self.device is not None and session.local:
            from ..devices import resolve_devices  # counts GPUs without creating a CUDA context

            specs = _on_slots(specs[0], resolve_devices(self.device))  # the instance is this machine
        put_back = keep_signal_handlers()  # ray.init replaces the SIGTERM handler with sys.exit
        try:
            session.open([s.slot.visible_devices for s in specs if s.slot.is_cuda] or None)
        finally:
            put_back()
        resources = session.resources()
        if self.device is not None:
            if not session.local:
                specs = _on_slots(specs[0], cluster_slots(self.device, resources, session.where))
            if on_event is not None:
                on_event(Log(f"{session.where} has {resources.get('GPU', 0):g} GPU(s) and "
                             f"{resources.get('CPU', 0):g} CPU(s); device {self.device!r} runs on "
                             + ",".join(s.slot.label for s in specs)))
        self.devices = tuple(s.slot.label for s in specs)
        self.remote_class = ray.remote(RayWorker)
        self.driver_node = ray.get_runtime_context().get_node_id()
        return self._lanes(specs, policy, resources)

    def _lanes(self, specs: list[WorkerSpec], policy: PoolPolicy, resources: dict) -> list[Lane]:
        gpu_specs = [s for s in specs if runs_on_gpu(s)]
        per_device = policy.workers_per_device
        if gpu_specs:
            gpus = int(resources.get("GPU", 0))
            if gpus < 1:
                raise DeviceError(f"{self.session.where} has no GPUs; start the Ray nodes on GPU "
                                  "machines (`ray start ... --num-gpus N`) or use --device cpu")
            n = per_device or 1
            opts = {"num_gpus": 1.0 / n, "num_cpus": 0, "use_gpu": True}
            return [Lane(i, gpu_specs[0], None, dict(opts)) for i in range(gpus * n)]
        cpus = max(1, int(resources.get("CPU", 0)))
        n = per_device or cpu_lane_count(specs[0], cpus)
        threads = cpu_threads(cpus, n)
        return [Lane(i, specs[0], threads, {"num_cpus": 1, "use_gpu": False}) for i in range(n)]

    # -- one worker ---------------------------------------------------------------------------------
    def start(self, w: Worker, policy: PoolPolicy) -> None:
        opts = {k: v for k, v in w.lane.options.items() if k != "use_gpu"}
        actor = self.remote_class.options(
            max_restarts=0, max_task_retries=0, scheduling_strategy="SPREAD", **opts).remote(
            w.id, w.lane.spec, policy, w.lane.threads, w.lane.options["use_gpu"])
        w.handle = _Actor(actor, actor.load.remote())

    def send(self, w: Worker, unit: UnitAssignment) -> None:
        w.handle.stream = w.handle.actor.run_unit.options(num_returns="streaming").remote(unit)
        w.handle.unit_closed = False

    def dismiss(self, w: Worker) -> None:
        # Nothing to tell an idle actor: its shutdown is announced here, then it is ended.
        self.pending.append((w, Retiring(w.id, Retirement.SHUTDOWN, w.scenes_done)))

    def end(self, w: Worker) -> None:
        # A retired actor has nothing in flight: no need to hold the driver until it is gone.
        self._kill_all([w], wait=False)
        self.pending.append((w, Exited("ended with ray.kill after retiring")))

    def kill(self, w: Worker) -> None:
        self._kill_all([w])
        self.pending.append((w, Exited("killed with ray.kill")))

    # -- waiting --------------------------------------------------------------------------------------
    def wait(self, workers: Sequence[Worker], timeout: float) -> list[tuple[Worker, object]]:
        out, self.pending = self.pending, []
        if out:
            return out
        waiting = [(w.handle.ready_ref if w.handle.ready_ref is not None else w.handle.stream, w)
                   for w in workers if w.handle.ready_ref is not None or w.handle.stream is not None]
        if not waiting:
            time.sleep(timeout)
            return []
        ready, _ = self.ray.wait([ref for ref, _ in waiting], num_returns=1, timeout=timeout)
        for obj in ready:
            w = next(w for ref, w in waiting if ref is obj or ref == obj)
            out += self._loaded(w) if w.handle.ready_ref is not None else self._drain(w)
        return out

    def _loaded(self, w: Worker) -> list[tuple[Worker, object]]:
        h = w.handle
        ref, h.ready_ref = h.ready_ref, None
        try:
            loaded = self.ray.get(ref)
        except self.ray.exceptions.RayActorError as err:
            if getattr(err, "actor_init_failed", False):
                raise BackendUnavailable(
                    f"a Ray worker could not be created ({first_line(err)}); install the same "
                    "whisperjav-enhance version and the backend's packages on every node") from err
            return [(w, Exited(describe_actor_death(err)))]
        msg = loaded.message
        if not isinstance(msg, LoadFailed):
            h.local = loaded.node_id == self.driver_node
            w.pid = msg.pid
            w.label = (f"cuda:{loaded.gpu_ids[0]}" if w.lane.options["use_gpu"] and loaded.gpu_ids
                       else "cpu")
            if not h.local:
                w.label = f"{loaded.node_ip}/{w.label}"
        return [(w, msg)]

    def _drain(self, w: Worker) -> list[tuple[Worker, object]]:
        """Every message of the unit's stream that has arrived."""
        out, h = [], w.handle
        while h.stream is not None:
            ready, _ = self.ray.wait([h.stream], num_returns=1, timeout=0)
            if not ready:
                break
            try:
                ref = next(h.stream)
            except StopIteration:
                h.stream = None
                if not h.unit_closed:
                    out.append((w, UnitLost(w.id)))
                break
            try:
                msg = self.ray.get(ref)
            except self.ray.exceptions.RayActorError as err:
                h.stream = None
                out.append((w, Exited(describe_actor_death(err))))
                break
            h.unit_closed = h.unit_closed or isinstance(msg, (UnitDone, Retiring))
            out.append((w, msg))
        return out

    # -- stopping ----------------------------------------------------------------------------------------
    def stop(self, workers: Sequence[Worker]) -> None:
        self._kill_all([w for w in workers if w.handle is not None])

    def _kill_all(self, workers: list[Worker], wait: bool = True) -> None:
        """ray.kill each actor and (``wait``) until its process is gone, so nothing it writes can
        appear after its temporaries are removed."""
        for w in workers:
            try:
                self.ray.kill(w.handle.actor, no_restart=True)
            except Exception:  # already dead, or the cluster is going away
                pass
            w.handle.stream = w.handle.ready_ref = None
        deadline = time.monotonic() + KILL_WAIT_S
        for w in workers if wait else ():
            if w.pid is None:
                continue
            if not w.handle.local:
                time.sleep(max(0.0, min(REMOTE_KILL_GRACE_S, deadline - time.monotonic())))
                continue
            while _pid_alive(w.pid) and time.monotonic() < deadline:
                time.sleep(0.02)

    def close(self) -> None:
        if self.session is not None:
            put_back = keep_signal_handlers()  # whatever ray.shutdown does to them
            try:
                self.session.close()
            finally:
                put_back()


def _on_slots(spec: WorkerSpec, slots) -> list[WorkerSpec]:
    return [dataclasses.replace(spec, slot=slot) for slot in slots]


__all__ = ["RayTransport", "RayWorker", "describe_actor_death"]
