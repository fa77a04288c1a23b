"""The worker: the child process's entry point, and the per-unit code it shares with the in-process
executor (:class:`WorkerRuntime`).

A worker builds its backend once, then enhances work units: it reads the unit's scenes itself
(the parent passes paths, never audio), runs the engine over all of them together so windows from
many scenes share forwards, writes each output atomically and reports each scene the moment it is
written. After a unit it frees the unit's tensors and measures the allocator, then decides whether
to retire; its last message always says why.

Decisions made here (and why):

* Drift is measured after ``gc.collect()`` and ``torch.cuda.empty_cache()``. Before the cache is
  released, reserved - allocated is mostly the unit's own working set, which the allocator keeps
  on purpose (it equals the batch's peak, e.g. ~2 GiB at 64 x 4 s for MossFormer2) and says
  nothing about health. After the release, what remains held but unused sits in segments pinned by
  live blocks: fragmentation or leaks, the thing recycling is for. The pre-release figure is still
  reported (``MemorySnapshot.cached_bytes``). Releasing the cache after every unit also hands the
  memory back to a warm standby on the same card; it cost ~3 ms per scene (MEASUREMENTS.md).
* Faults inside a unit: a non-OOM backend exception in a batched run retries the unit's unfinished
  scenes one at a time, so only the culprit fails (``backend_error``). A window that does not fit
  even at batch 1 (the engine has already halved down to 1) fails its scene with
  ``out_of_memory`` when this worker is fresh (its allocator has seen only this unit) or when the
  scene already ran out of memory in another worker; otherwise the worker retires with reason
  ``oom`` and the parent gives the unfinished scenes to a fresh worker. A CUDA error that leaves
  the context unusable retires the worker (``cuda_error``): every later call would fail too.
* Batch sizing: the engine sizes each forward from the backend's memory model and a byte budget:
  the ``vram_budget_gb`` cap minus the weights, or, without a cap, what the device has free at the
  start of each unit (other workers on the card change that) plus this worker's own cache, less a
  safety margin. The engine halves a batch that still runs out of memory.
"""

from __future__ import annotations

import gc
import importlib
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Callable

import multiprocess

from .. import audio
from ..config import PoolPolicy
from ..engine import EngineOutOfMemory
from ..errors import AudioError, BackendUnavailable, OutputError, SceneError
from . import telemetry
from .messages import (Alive, LoadFailed, Ready, Retiring, SceneResult, Shutdown,
                       UnitAssignment, UnitDone, WorkerSpec)

GIB = 1024 ** 3
# Safety margin kept out of a forward's byte budget: the larger of these (the memory model is an
# estimate, and cuDNN/cuBLAS workspaces come and go).
BUDGET_MARGIN_MIB = 256
BUDGET_MARGIN_FRACTION = 0.10
# Release the allocator's cache after every unit (see the module docstring).
EMPTY_CACHE_AFTER_UNIT = True
# Seconds between Alive messages while forwards keep finishing (the watchdog's sign of life; a
# forward takes ~0.1 s on a GPU, so one per forward would only fill the pipe).
HEARTBEAT_S = 5.0
# Exit code of a worker that saw its parent die (the parent cannot read it; for logs and tests).
PARENT_GONE_EXIT_CODE = 70
# Substrings of errors after which a CUDA context cannot be trusted any more.
_DEVICE_FATAL_MARKERS = ("CUDA error", "CUBLAS_STATUS", "CUDNN_STATUS", "cuDNN error",
                         "device-side assert", "illegal memory access")


# -- building the backend -----------------------------------------------------------------------
def resolve_backend_class(name: str):
    """A backend class from a registry name or ``"package.module:Class"``.

    A missing package is a :class:`BackendUnavailable` (the registry already phrases it so).
    """
    if ":" in name and "." in name.split(":", 1)[0]:
        module, cls_name = name.split(":", 1)
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise BackendUnavailable(f"backend class {name!r} cannot be imported ({exc})") from exc
        try:
            return getattr(mod, cls_name)
        except AttributeError as exc:
            raise BackendUnavailable(f"module {module} has no backend class {cls_name!r}") from exc
    from ..backends import backend_class

    return backend_class(name)


def build_backend(spec: WorkerSpec):
    """Resolve the spec's backend (weights located, nothing loaded yet)."""
    return resolve_backend_class(spec.backend).resolve(spec.weights_path, **dict(spec.backend_options))


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _is_device_fatal(exc: BaseException) -> bool:
    import torch

    accel = getattr(torch, "AcceleratorError", None)
    if accel is not None and isinstance(exc, accel):
        return True
    return any(marker in str(exc) for marker in _DEVICE_FATAL_MARKERS)


@dataclass
class _Scene:
    """A readable scene of the unit in flight (the decoded audio lives only during the unit)."""

    pos: int
    task: object          # SceneTask
    audio: object         # np.ndarray at the backend's rate
    input_rate: int       # Hz of the file, the default output rate


class _Heartbeat:
    """The backend as the engine sees it: each finished forward also calls ``beat``. (The engine
    yields only whole scenes; this is the one place that sees every forward.)"""

    def __init__(self, backend, beat: Callable[[], None]):
        self._backend = backend
        self._beat = beat

    def __getattr__(self, name):
        return getattr(self._backend, name)

    def enhance_windows(self, batch):
        out = self._backend.enhance_windows(batch)
        self._beat()
        return out


class _Retire(Exception):
    """Raised inside a unit when the worker must leave before finishing it."""

    def __init__(self, message: Retiring):
        self.message = message


# -- the per-unit code (shared by the child and the in-process executor) ------------------------
class WorkerRuntime:
    """One loaded backend and its engine, processing units one after the other."""

    def __init__(self, worker_id: int, spec: WorkerSpec, policy: PoolPolicy, device: str,
                 threads: int | None = None):
        self.worker_id = worker_id
        self.spec = spec
        self.policy = policy
        self.device_str = device
        self.threads = threads
        self.backend = None
        self.engine = None
        self.device = None
        self.cap_bytes: int | None = None     # allocator cap from vram_budget_gb
        self.total_bytes: int | None = None
        self.scenes_done = 0
        self.units_done = 0
        self.open_positions: set[int] = set()  # scenes of the current unit not yet reported
        self._last_emit = 0.0                  # when the unit's last SceneResult was sent
        self._beat_at = 0.0                    # ... or its last Alive
        self._emit: Callable = lambda msg: None

    # -- loading -------------------------------------------------------------------------------
    def load(self, started: float) -> Ready:
        import torch

        from ..engine import Engine

        self.device = torch.device(self.device_str)
        name = "cpu"
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            # TF32 matmuls: ~1.5x at these sizes with no audible difference (MEASUREMENTS.md).
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            props = torch.cuda.get_device_properties(self.device)
            name, self.total_bytes = props.name, int(props.total_memory)
            if self.policy.vram_budget_gb is not None:
                self.cap_bytes = int(min(self.policy.vram_budget_gb * GIB, self.total_bytes))
                torch.cuda.set_per_process_memory_fraction(self.cap_bytes / self.total_bytes,
                                                           self.device)
        elif self.threads:
            torch.set_num_threads(self.threads)
        self.backend = build_backend(self.spec)
        self.backend.load(self.device)
        self.engine = Engine(_Heartbeat(self.backend, self._beat),
                             budget_bytes=self.forward_budget())
        return Ready(worker=self.worker_id, pid=os.getpid(),
                     startup_s=time.perf_counter() - started, device=str(self.device),
                     device_name=name, budget_bytes=self.engine.budget_bytes,
                     total_bytes=self.total_bytes)

    def forward_budget(self) -> int | None:
        """Bytes one forward may use above the weights (None on the CPU: no device budget)."""
        if self.device is None or self.device.type != "cuda":
            return None
        import torch

        allocated = torch.cuda.memory_allocated(self.device)
        if self.cap_bytes is not None:
            room = self.cap_bytes - allocated
        else:
            free, _ = torch.cuda.mem_get_info(self.device)
            room = free + torch.cuda.memory_reserved(self.device) - allocated
        margin = max(BUDGET_MARGIN_MIB * 1024 * 1024, int(BUDGET_MARGIN_FRACTION * room))
        return max(0, int(room - margin))

    def close(self) -> None:
        if self.backend is not None:
            try:
                self.backend.close()
            finally:
                self.backend = self.engine = None

    # -- one unit --------------------------------------------------------------------------------
    def run_unit(self, unit: UnitAssignment, emit: Callable) -> Retiring | None:
        """Enhance one unit, reporting through ``emit``; returns the retirement, if any."""
        start = self._last_emit = self._beat_at = time.perf_counter()
        self._emit = emit
        self.open_positions = {pos for pos, _ in unit.items}
        if self.cap_bytes is None and self.device.type == "cuda":
            self.engine.budget_bytes = self.forward_budget()
        retiring = None
        scenes = self._read(unit)
        try:
            self._enhance(scenes, unit)
        except _Retire as r:
            retiring = r.message
        finally:
            del scenes
        memory = self._release_and_measure()
        self.units_done += 1
        retiring = retiring or self.retire_decision(memory)
        emit(UnitDone(worker=self.worker_id, unit_id=unit.unit_id, scenes_done=self.scenes_done,
                      busy_s=time.perf_counter() - start, memory=memory,
                      batch_sizes=dict(self.engine.stats.batch_by_length),
                      forwards=self.engine.stats.forwards, oom_events=self.engine.stats.oom_events,
                      retiring=retiring.reason if retiring else None))
        return retiring

    def _read(self, unit: UnitAssignment) -> list[_Scene]:
        scenes = []
        for pos, task in unit.items:
            try:
                data, info = audio.read_audio(task.input_path, self.backend.sample_rate)
            except AudioError as exc:
                self._report(pos, "failed", exc.reason, str(exc).splitlines()[0])
                continue
            except Exception as exc:  # MemoryError, a decoder bug: this scene only
                self._report(pos, "failed", "unreadable", _one_line(exc))
                continue
            scenes.append(_Scene(pos, task, data, info.sample_rate))
        return scenes

    def _enhance(self, scenes: list[_Scene], unit: UnitAssignment) -> None:
        pending = list(scenes)
        isolate = unit.isolate
        while pending:
            group = pending[:1] if isolate else list(pending)
            try:
                self._run_group(group, pending)
            except EngineOutOfMemory as exc:
                culprit = group[exc.scenes[0]]
                if self.units_done == 0 or culprit.pos in unit.oom_final:
                    pending.remove(culprit)
                    self._report(culprit.pos, "failed", "out_of_memory", str(exc).splitlines()[0])
                    continue
                raise _Retire(Retiring(self.worker_id, "oom", self.scenes_done,
                                       tuple(s.pos for s in pending), culprit.pos,
                                       str(exc).splitlines()[0]))
            except Exception as exc:
                if _is_device_fatal(exc):
                    raise _Retire(Retiring(self.worker_id, "cuda_error", self.scenes_done,
                                           tuple(s.pos for s in pending), None, _one_line(exc)))
                if len(group) > 1:
                    isolate = True  # find the culprit: the same scenes again, one at a time
                    continue
                pending.remove(group[0])
                reason = exc.reason if isinstance(exc, SceneError) else "backend_error"
                self._report(group[0].pos, "failed", reason, _one_line(exc))

    def _run_group(self, group: list[_Scene], pending: list[_Scene]) -> None:
        # Optional backend hook (diagnostics, fault injection): which scenes the next forwards hold.
        observe = getattr(self.backend, "observe_scenes", None)
        if observe is not None:
            observe([s.task.input_path for s in group], [s.audio for s in group])
        for i, enhanced in self.engine.run([s.audio for s in group]):
            scene = group[i]
            pending.remove(scene)
            self._write(scene, enhanced)

    def _write(self, scene: _Scene, enhanced) -> None:
        import numpy as np

        task = scene.task
        try:
            if not np.isfinite(enhanced).all():
                raise SceneError("non_finite_output", f"{self.backend.name} produced NaN or "
                                 "infinite samples")
            rate = task.output_sample_rate or scene.input_rate
            out = audio.resample(enhanced, self.backend.sample_rate, rate)
            audio.write_audio_atomic(task.output_path, out, rate, task.subtype, task.clip)
        except SceneError as exc:
            self._report(scene.pos, "failed", exc.reason, str(exc).splitlines()[0])
        except OutputError as exc:
            self._report(scene.pos, "failed", "write_failed", str(exc).splitlines()[0])
        except Exception as exc:
            self._report(scene.pos, "failed", "write_failed", _one_line(exc))
        else:
            self._report(scene.pos, "enhanced", None, None, task.output_path)

    def _report(self, pos, status, reason, message, output_path=None) -> None:
        now = time.perf_counter()
        seconds, self._last_emit, self._beat_at = now - self._last_emit, now, now
        self.open_positions.discard(pos)
        self.scenes_done += 1
        self._emit(SceneResult(self.worker_id, pos, status, reason, message, output_path, seconds))

    def _beat(self) -> None:
        now = time.perf_counter()
        if now - self._beat_at >= HEARTBEAT_S:
            self._beat_at = now
            self._emit(Alive(self.worker_id))

    def error_retiring(self, exc: Exception) -> Retiring:
        """The worker's last word when ``run_unit`` itself raised: a bug around the model, not a
        scene's fault, so the scenes it did not report are charged a crash and run elsewhere.
        Call it inside the ``except`` block (the message carries the traceback)."""
        return Retiring(self.worker_id, "worker_error", self.scenes_done,
                        tuple(sorted(self.open_positions)), None,
                        _one_line(exc) + "\n" + traceback.format_exc())

    # -- after a unit ------------------------------------------------------------------------------
    def _release_and_measure(self) -> telemetry.MemorySnapshot:
        gc.collect()
        cached = None
        if self.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.device)
            if EMPTY_CACHE_AFTER_UNIT:
                cached = telemetry.snapshot(self.device).drift_bytes
                torch.cuda.empty_cache()
        memory = telemetry.snapshot(self.device, cached_bytes=cached)
        telemetry.reset_peak(self.device)
        return memory

    def retire_decision(self, memory: telemetry.MemorySnapshot) -> Retiring | None:
        """Whether to retire after a unit, from the scene count and the allocator's state."""
        p = self.policy
        mib = 1024 * 1024
        checks = [
            ("max_scenes", self.scenes_done, p.max_scenes_per_worker, "scenes", 1, True),
            ("drift", memory.drift_bytes, p.max_drift_mb * mib, "MiB reserved - allocated", mib, False),
            ("inactive_split", memory.inactive_split_bytes, p.max_inactive_split_mb * mib,
             "MiB inactive split", mib, False),
            ("alloc_retries", memory.alloc_retries, p.max_alloc_retries, "allocation retries", 1, True),
        ]
        for reason, value, limit, unit, scale, inclusive in checks:
            if value is not None and (value >= limit if inclusive else value > limit):
                return Retiring(self.worker_id, reason, self.scenes_done,
                                message=f"{value / scale:.0f} {unit} (limit {limit / scale:.0f})")
        return None


# -- the child process ------------------------------------------------------------------------------
def _prepare_child(spec: WorkerSpec) -> None:
    """Environment first (before torch is imported), then leave Ctrl-C to the parent, which stops
    its workers in order rather than having them die mid-write."""
    if spec.slot.visible_devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = spec.slot.visible_devices
    for key, value in spec.env.items():
        os.environ[str(key)] = str(value)
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):  # not the main thread, or a platform without it
        pass


def _exit_with_parent() -> None:
    """Leave at once when the parent dies (even by SIGKILL).

    A worker notices a dead parent at its next pipe read or write, but one stuck in a forward, a
    native call or a hang never gets there and would hold its GPU memory forever. The parent's
    process sentinel (portable: a pipe on POSIX, a handle on Windows) is watched by a thread.
    A scene being written at that moment leaves only a ``.partial`` temporary, which the next run
    removes.
    """
    parent = multiprocess.parent_process()
    if parent is None:
        return

    def watch():
        parent.join()
        os._exit(PARENT_GONE_EXIT_CODE)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def worker_main(conn, worker_id: int, spec: WorkerSpec, policy: PoolPolicy,
                threads: int | None = None) -> None:
    """Entry point of a spawned worker: load, then serve units until told to stop or retiring."""
    _prepare_child(spec)
    _exit_with_parent()
    started = time.perf_counter()
    runtime = WorkerRuntime(worker_id, spec, policy, spec.slot.torch_device, threads)
    try:
        ready = runtime.load(started)
    except Exception as exc:
        conn.send(LoadFailed(worker_id, type(exc).__name__, str(exc), traceback.format_exc(),
                             tuple(getattr(exc, "searched", ()) or ())))
        conn.close()
        return
    try:
        conn.send(ready)
        _serve(conn, runtime)
    except (EOFError, OSError):
        pass  # the parent is gone or closed our pipe: nothing left to report to
    finally:
        runtime.close()
        conn.close()


def _serve(conn, runtime: WorkerRuntime) -> None:
    while True:
        msg = conn.recv()
        if isinstance(msg, Shutdown):
            conn.send(Retiring(runtime.worker_id, "shutdown", runtime.scenes_done))
            return
        try:
            retiring = runtime.run_unit(msg, conn.send)
        except (EOFError, OSError):
            raise
        except Exception as exc:
            retiring = runtime.error_retiring(exc)
        if retiring is not None:
            conn.send(retiring)
            return


__all__ = ["WorkerRuntime", "worker_main", "resolve_backend_class", "build_backend"]
