"""The in-process transport: the same per-unit code (runtime.WorkerRuntime) run in the calling
process, one unit at a time, under the same driver rules.

Used by ``executor="inprocess"`` as the baseline the pool is measured against, and for debugging
(breakpoints, profilers). What isolation would have bought is visible here by its absence: a
native crash takes the caller down with it, a hang is never killed (there is no watchdog), and a
"recycle" only reloads the model in this process, which keeps its allocator. This transport calls
into CUDA in the calling process, which is the point; it must not be used where the caller needs
its GPU memory back afterwards (the cache is released and any cap lifted when the run ends).
"""

from __future__ import annotations

import gc
import os
import time
import traceback
from typing import Callable, Sequence

from ..config import PoolPolicy
from ..devices import is_cuda
from ..status import Retirement
from .messages import LoadFailed, Retiring, UnitAssignment, WorkerSpec
from .runtime import WorkerRuntime
from .transport import Exited, Transport
from .workers import Lane, Worker


class InProcessTransport(Transport):
    """Workers that are runtimes in this process; see the module docstring."""

    title = "in-process executor"
    has_watchdog = False

    def __init__(self):
        self.pending: list[tuple[Worker, object]] = []   # what workers said, not yet collected
        self.units: dict[int, UnitAssignment] = {}        # worker id -> unit to run at next wait
        self.used_cuda: list = []                         # runtimes that touched a CUDA device

    def open(self, specs: Sequence[WorkerSpec], policy: PoolPolicy,
             on_event: Callable | None) -> list[Lane]:
        return [Lane(0, list(specs)[0])]

    def start(self, w: Worker, policy: PoolPolicy) -> None:
        spec = w.lane.spec
        # The user's device numbering applies here: no CUDA_VISIBLE_DEVICES remapping in-process.
        device = spec.slot.label if spec.slot.is_cuda else "cpu"
        runtime = WorkerRuntime(w.id, spec, policy, device)
        w.handle, w.pid = runtime, os.getpid()
        try:
            self.pending.append((w, runtime.load(time.perf_counter())))
        except Exception as exc:
            self.pending.append((w, LoadFailed(w.id, type(exc).__name__, str(exc),
                                               traceback.format_exc(),
                                               tuple(getattr(exc, "searched", ()) or ()))))
        if is_cuda(runtime.device):
            self.used_cuda.append(runtime)

    def send(self, w: Worker, unit: UnitAssignment) -> None:
        self.units[w.id] = unit

    def dismiss(self, w: Worker) -> None:
        self.pending.append((w, Retiring(w.id, Retirement.SHUTDOWN, w.handle.scenes_done)))

    def end(self, w: Worker) -> None:
        w.handle.close()
        self.pending.append((w, Exited("left")))

    def kill(self, w: Worker) -> None:
        self.end(w)

    def wait(self, workers: Sequence[Worker], timeout: float) -> list[tuple[Worker, object]]:
        """Runs one pending unit to its end; its messages are collected, then handed over (a
        callback of the caller's must not run inside the unit, where the runtime would take its
        exceptions for the scene's)."""
        out, self.pending = self.pending, []
        if out:
            return out
        for w in workers:
            unit = self.units.pop(w.id, None)
            if unit is None:
                continue
            said: list = []
            try:
                retiring = w.handle.run_unit(unit, said.append)
            except Exception as exc:
                retiring = w.handle.error_retiring(exc)
            return [(w, m) for m in said] + ([(w, retiring)] if retiring else [])
        time.sleep(timeout)
        return []

    def stop(self, workers: Sequence[Worker]) -> None:
        for w in workers:
            if w.handle is not None:
                w.handle.close()
        self.units.clear()

    def close(self) -> None:
        """Give the caller its device back: cache released, allocator cap lifted."""
        gc.collect()
        for runtime in self.used_cuda:
            import torch

            torch.cuda.empty_cache()
            if runtime.cap_bytes is not None:
                torch.cuda.set_per_process_memory_fraction(1.0, runtime.device)
        self.used_cuda.clear()


__all__ = ["InProcessTransport"]
