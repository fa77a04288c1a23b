"""The pool's semantics without isolation: the same per-unit code (worker.WorkerRuntime) run in
this process, one unit after the other.

Used by ``executor="inprocess"`` and by the benchmark's in-process strategies, as the baseline the
pool is measured against. What isolation would have bought is visible here by its absence: a
native crash or a hang takes the caller down with it; a worker "recycle" cannot happen (this
process keeps its allocator), so recycling decisions are only logged; an OOM at batch 1 is retried
once after releasing the cache instead of in a fresh process. This module calls into CUDA in the
calling process, which is the point; it must not be used where the caller needs its GPU memory
back afterwards."""

from __future__ import annotations

import gc
import os
import time
from collections import deque
from typing import Callable, Sequence

from ..config import PoolPolicy
from ..errors import RunInterrupted
from ..events import Log, WorkerStarted
from .cleanup import Terminated, install_termination_handler, output_paths, remove_partials
from .ledger import Ledger, PoolReport, validate_units
from .messages import SceneResult, UnitAssignment, UnitDone, WorkerSpec
from .worker import WorkerRuntime

INPROCESS_WORKER_ID = 0  # the "worker" id reported for scenes run in the calling process


def run_inprocess(tasks: Sequence, units: Sequence, spec: WorkerSpec | Sequence[WorkerSpec],
                  policy: PoolPolicy, on_event: Callable | None = None) -> PoolReport:
    """Enhance ``tasks`` in this process; same outcomes, events and report as ``run_pool``."""
    if not isinstance(spec, WorkerSpec):
        spec = list(spec)[0]
    tasks = list(tasks)
    positions = validate_units(len(tasks), units)
    unit_ids = [u.unit_id for u in units if len(u.scenes)]
    ledger = Ledger(tasks, on_event)
    if not tasks:
        return ledger.report(workers_started=0, recycles={}, worker_crashes=0,
                             startup_seconds=(), startup_wait_seconds=0.0)
    # The user's device numbering applies here: no CUDA_VISIBLE_DEVICES remapping in-process.
    device = spec.slot.label if spec.slot.is_cuda else "cpu"
    runtime = WorkerRuntime(INPROCESS_WORKER_ID, spec, policy, device)
    restore = install_termination_handler()
    t0 = time.perf_counter()
    try:
        runtime.load(t0)
        startup = time.perf_counter() - t0
        ledger.emit(WorkerStarted(INPROCESS_WORKER_ID, spec.slot.label, os.getpid(), startup))
        _run_units(runtime, ledger, deque(zip(unit_ids, positions)), tasks)
        return ledger.report(workers_started=1, recycles={}, worker_crashes=0,
                             startup_seconds=(startup,), startup_wait_seconds=startup,
                             first_ready_seconds=startup)
    except (KeyboardInterrupt, Terminated) as exc:
        unfinished = [p for p in range(len(tasks)) if not ledger.done(p)]
        removed = remove_partials(output_paths(tasks, unfinished))
        what = exc.signal_name if isinstance(exc, Terminated) else "Ctrl-C"
        err = RunInterrupted(f"interrupted by {what}: {len(removed)} temporary file(s) removed, "
                             "finished scenes kept")
        err.outcomes = tuple(o for o in ledger.outcomes if o is not None)
        raise err from None
    finally:
        restore()
        runtime.close()
        gc.collect()
        _release_cuda_cache(runtime)


def _run_units(runtime: WorkerRuntime, ledger: Ledger, queue: deque, tasks: list) -> None:
    def emit(msg):
        if isinstance(msg, SceneResult):
            ledger.scene_result(msg)
        elif isinstance(msg, UnitDone):
            ledger.unit_done(msg)

    oom_positions: set[int] = set()
    logged: set[str] = set()
    while queue:
        unit_id, job = queue.popleft()
        items = tuple((p, tasks[p]) for p in job if not ledger.done(p))
        if not items:
            continue
        unit = UnitAssignment(unit_id, items, tuple(p for p, _ in items if p in oom_positions))
        retiring = runtime.run_unit(unit, emit)
        if retiring is None:
            continue
        unfinished = [p for p in retiring.unfinished if not ledger.done(p)]
        if retiring.reason == "oom":
            # No fresh process to move to: the cache was released after the unit; retry once, and
            # the culprit fails if it runs out of memory again.
            if retiring.culprit is not None:
                oom_positions.add(retiring.culprit)
            if unfinished:
                queue.appendleft((unit_id, tuple(unfinished)))
        elif unfinished:  # cuda_error / worker_error: nothing else to fall back on in-process
            for p in unfinished:
                ledger.finish(p, "failed", "backend_error", retiring.message.splitlines()[0],
                              worker=INPROCESS_WORKER_ID)
        if retiring.reason not in logged:
            logged.add(retiring.reason)
            ledger.emit(Log(f"in-process run would recycle its worker now ({retiring.reason}: "
                            f"{retiring.message.splitlines()[0] if retiring.message else ''}); "
                            "without isolation it carries on", "warning"))


def _release_cuda_cache(runtime: WorkerRuntime) -> None:
    """Give the caller its device back: cache released, allocator cap lifted."""
    if runtime.device is not None and runtime.device.type == "cuda":
        import torch

        torch.cuda.empty_cache()
        if runtime.cap_bytes is not None:
            torch.cuda.set_per_process_memory_fraction(1.0, runtime.device)
