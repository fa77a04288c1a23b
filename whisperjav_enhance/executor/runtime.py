"""The worker's per-unit code (:class:`WorkerRuntime`), the same in a spawned process (child.py),
a Ray actor (ray.py) and the calling process (inprocess.py).

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
  memory back to a warm standby on the same card; it cost ~3 ms per scene (docs/measurements.md).
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
* Backends that do not use torch (``Backend.uses_torch`` False: DeepFilterNet3, passthrough) run
  without torch ever being imported: a smaller worker that starts faster.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Callable

from .. import audio, diskspace
from ..config import PoolPolicy
from ..devices import is_cuda
from ..engine import EngineOutOfMemory
from ..errors import AudioError, OutputError, SceneError, first_line, one_line
from ..status import Reason, Retirement, Status
from ..preflight import output_bytes
from . import telemetry
from .messages import Alive, Ready, Retiring, SceneDone, SceneTask, UnitAssignment, UnitDone, WorkerSpec

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
# Substrings of errors after which a CUDA context cannot be trusted any more.
_DEVICE_FATAL_MARKERS = ("CUDA error", "CUBLAS_STATUS", "CUDNN_STATUS", "cuDNN error",
                         "device-side assert", "illegal memory access")


# -- building the backend -----------------------------------------------------------------------
def build_backend(spec: WorkerSpec):
    """Resolve the spec's backend (weights located, nothing loaded yet)."""
    from ..backends import backend_class

    return backend_class(spec.backend).resolve(spec.weights_path, **dict(spec.backend_options))


def _is_device_fatal(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")  # a backend without torch raises no CUDA errors
    if torch is None:
        return False
    accel = getattr(torch, "AcceleratorError", None)
    if accel is not None and isinstance(exc, accel):
        return True
    return any(marker in str(exc) for marker in _DEVICE_FATAL_MARKERS)


@dataclass(frozen=True)
class _Scene:
    """A readable scene of the unit in flight (the decoded audio lives only during the unit)."""

    task: SceneTask
    audio: object         # np.ndarray at the backend's rate
    input_rate: int       # Hz of the file, the default output rate
    input_frames: int     # samples of the file: the output is exactly as long (at its rate)


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


# -- the per-unit code --------------------------------------------------------------------------
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
        self.device = None                     # torch.device, or "cpu" for backends without torch
        self.cap_bytes: int | None = None      # allocator cap from vram_budget_gb
        self.total_bytes: int | None = None
        self.scenes_done = 0
        self.units_done = 0
        self.open: set[int] = set()            # scenes of the current unit not yet reported
        self._last_emit = 0.0                  # when the unit's last SceneDone was sent
        self._beat_at = 0.0                    # ... or its last Alive
        self._emit: Callable = lambda msg: None

    # -- loading -------------------------------------------------------------------------------
    def load(self, started: float) -> Ready:
        from ..engine import Engine

        backend = build_backend(self.spec)
        name = "cpu"
        if backend.uses_torch:
            name = self._set_up_torch()
        else:
            self.device = "cpu"
        backend.cpu_threads = self.threads
        backend.load(self.device)
        self.backend = backend
        self.engine = Engine(_Heartbeat(backend, self._beat), budget_bytes=self.forward_budget())
        return Ready(worker=self.worker_id, pid=os.getpid(),
                     startup_s=time.perf_counter() - started, device=str(self.device),
                     device_name=name, budget_bytes=self.engine.budget_bytes,
                     total_bytes=self.total_bytes)

    def _set_up_torch(self) -> str:
        """The torch device, allocator cap and threads; returns the device's name."""
        import torch

        from ..devices import apply_memory_cap

        self.device = torch.device(self.device_str)
        if self.device.type != "cuda":
            if self.threads:
                torch.set_num_threads(self.threads)
            return "cpu"
        torch.cuda.set_device(self.device)
        # TF32 matmuls, as in the H100 figures the defaults are fitted to (docs/measurements.md).
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        props = torch.cuda.get_device_properties(self.device)
        self.total_bytes = int(props.total_memory)
        self.cap_bytes = apply_memory_cap(self.device, self.policy.vram_budget_gb)
        return props.name

    def forward_budget(self) -> int | None:
        """Bytes one forward may use above the weights (None off CUDA: no device budget)."""
        if not is_cuda(self.device):
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
        self.open = {t.index for t in unit.tasks}
        if self.cap_bytes is None and is_cuda(self.device):
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
        """The unit's readable scenes whose outputs have room on disk; the others fail here,
        before anything is computed for them."""
        scenes, room_needed = [], 0
        for task in unit.tasks:
            try:
                data, info = audio.read_audio(task.input_path, self.backend.sample_rate)
            except AudioError as exc:
                self._fail(task, exc.reason, exc)
                continue
            except Exception as exc:  # MemoryError, a decoder bug: this scene only
                self._fail(task, Reason.UNREADABLE, exc, with_type=True)
                continue
            need = output_bytes(task.duration_s, task.output_sample_rate or info.sample_rate,
                                task.subtype)
            try:  # the unit's outputs so far, this one included, must fit
                diskspace.ensure_room(os.path.dirname(task.output_path), room_needed + need,
                                      task.output_path)
            except diskspace.DiskFull as exc:
                self._fail(task, exc.reason, exc)
                continue
            room_needed += need
            scenes.append(_Scene(task, data, info.sample_rate, info.frames))
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
                if self.units_done == 0 or culprit.task.index in unit.oom_final:
                    pending.remove(culprit)
                    self._fail(culprit.task, Reason.OUT_OF_MEMORY, exc)
                    continue
                raise _Retire(Retiring(self.worker_id, Retirement.OOM, self.scenes_done,
                                       tuple(s.task.index for s in pending), culprit.task.index,
                                       first_line(exc)))
            except Exception as exc:
                if _is_device_fatal(exc):
                    raise _Retire(Retiring(self.worker_id, Retirement.CUDA_ERROR, self.scenes_done,
                                           tuple(s.task.index for s in pending), None,
                                           one_line(exc) + "\n" + traceback.format_exc()))
                if len(group) > 1 and self.backend.windowed:
                    isolate = True  # find the culprit: the same scenes again, one at a time
                    continue
                # One scene alone, or a whole-scene backend: its scenes run one after the other,
                # so the culprit is the first not yet written.
                culprit = pending.pop(0)
                own = isinstance(exc, SceneError)  # the backend's own words for this scene
                reason = exc.reason if own else Reason.BACKEND_ERROR
                self._fail(culprit.task, reason, exc, with_type=not own)

    def _run_group(self, group: list[_Scene], pending: list[_Scene]) -> None:
        self.backend.observe_scenes([s.task.input_path for s in group], [s.audio for s in group])
        for i, enhanced in self.engine.run([s.audio for s in group]):
            scene = group[i]
            pending.remove(scene)
            self._write(scene, enhanced)

    def _write(self, scene: _Scene, enhanced) -> None:
        import numpy as np

        task = scene.task
        try:
            if not np.isfinite(enhanced).all():
                raise SceneError(Reason.NON_FINITE_OUTPUT, f"{self.backend.name} produced NaN or "
                                 "infinite samples")
            rate = task.output_sample_rate or scene.input_rate
            out = audio.fit_length(audio.resample(enhanced, self.backend.sample_rate, rate),
                                   audio.output_frames(scene.input_frames, scene.input_rate, rate))
            audio.write_audio_atomic(task.output_path, out, rate, task.subtype, task.clip,
                                     root=task.out_dir)
        except SceneError as exc:
            self._fail(task, exc.reason, exc)
        except diskspace.DiskFull as exc:
            self._fail(task, exc.reason, exc)
        except OutputError as exc:
            self._fail(task, Reason.WRITE_FAILED, exc)
        except Exception as exc:
            self._fail(task, Reason.WRITE_FAILED, exc, with_type=True)
        else:
            self._report(task.result(Status.ENHANCED, worker=self.worker_id))

    def _fail(self, task: SceneTask, reason: str, exc: BaseException, with_type=False) -> None:
        """Report ``task`` failed because of ``exc`` (this is called inside its except block, so
        the traceback is the remote one the parent logs at debug level)."""
        message = one_line(exc) if with_type else first_line(exc)
        self._report(task.result(Status.FAILED, reason, message, self.worker_id,
                                 detail=traceback.format_exc()))

    def _report(self, result) -> None:
        now = time.perf_counter()
        seconds, self._last_emit, self._beat_at = now - self._last_emit, now, now
        self.open.discard(result.index)
        self.scenes_done += 1
        self._emit(SceneDone(self.worker_id, dataclasses.replace(result, seconds=seconds)))

    def _beat(self) -> None:
        now = time.perf_counter()
        if now - self._beat_at >= HEARTBEAT_S:
            self._beat_at = now
            self._emit(Alive(self.worker_id))

    def error_retiring(self, exc: Exception) -> Retiring:
        """The worker's last word when ``run_unit`` itself raised: a bug around the model, not a
        scene's fault, so the scenes it did not report are charged a crash and run elsewhere.
        Call it inside the ``except`` block (the message carries the traceback)."""
        return Retiring(self.worker_id, Retirement.WORKER_ERROR, self.scenes_done,
                        tuple(sorted(self.open)), None,
                        one_line(exc) + "\n" + traceback.format_exc())

    # -- after a unit ------------------------------------------------------------------------------
    def _release_and_measure(self) -> telemetry.MemorySnapshot:
        gc.collect()
        cached = None
        if is_cuda(self.device):
            import torch

            torch.cuda.synchronize(self.device)
            if EMPTY_CACHE_AFTER_UNIT:
                cached = telemetry.snapshot(self.backend.allocator_stats(self.device)).drift_bytes
                torch.cuda.empty_cache()
        memory = telemetry.snapshot(self.backend.allocator_stats(self.device), cached_bytes=cached)
        telemetry.reset_peak(self.device)
        return memory

    def retire_decision(self, memory: telemetry.MemorySnapshot) -> Retiring | None:
        """Whether to retire after a unit, from the scene count and the allocator's state."""
        p = self.policy
        mib = 1024 * 1024
        checks = [
            (Retirement.MAX_SCENES, self.scenes_done, p.max_scenes_per_worker, "scenes", 1, True),
            (Retirement.DRIFT, memory.drift_bytes, p.max_drift_mb * mib, "MiB reserved - allocated",
             mib, False),
            (Retirement.INACTIVE_SPLIT, memory.inactive_split_bytes, p.max_inactive_split_mb * mib,
             "MiB inactive split", mib, False),
            (Retirement.ALLOC_RETRIES, memory.alloc_retries, p.max_alloc_retries,
             "allocation retries", 1, True),
        ]
        for reason, value, limit, unit, scale, inclusive in checks:
            if value is not None and (value >= limit if inclusive else value > limit):
                return Retiring(self.worker_id, reason, self.scenes_done,
                                message=f"{value / scale:.0f} {unit} (limit {limit / scale:.0f})")
        return None


__all__ = ["WorkerRuntime", "build_backend", "HEARTBEAT_S"]
