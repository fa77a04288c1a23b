"""What a transport is: the part of the executor that differs between spawned processes, Ray
actors and the calling process. The driver (driver.py) holds every rule; a transport only starts,
feeds, watches and ends workers, and says how many lanes a run gets.

    driver -- start/send/dismiss/end/kill --> transport --> worker (process, actor, runtime)
    driver <-- wait(): (worker, message | Exited) ... -- transport <-- its pipe/stream/calls

Every message a worker sends arrives through ``wait`` in order, and a worker's end arrives last as
:class:`Exited` (after ``end``, ``kill``, or on its own: a crash). Nothing a transport reports is
dropped: a dead worker's last messages come before its ``Exited``.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from typing import Callable, ClassVar, Sequence

from ..config import PoolPolicy
from .messages import UnitAssignment, WorkerSpec
from .workers import Lane, Worker

# CPU workers of backends that use threads (torch): one per this many cores, each with that many
# threads. Single-threaded runtimes (Backend.cpu_threads_per_worker == 1) get one worker per core.
CPU_CORES_PER_WORKER = 2


@dataclass(frozen=True)
class Exited:
    """A worker is gone."""

    description: str        # exit code or signal and the likely cause (the driver prefers its
                            # own kill reason when it killed the worker)
    detail: str = ""        # what the worker left behind for diagnosis (its error output, a
                            # faulthandler dump); shown in the debug log


def backend_class_of(spec: WorkerSpec):
    """The backend class a spec names (BackendUnavailable before anything starts)."""
    from ..backends import backend_class

    return backend_class(spec.backend)


def runs_on_gpu(spec: WorkerSpec) -> bool:
    """Whether this spec's workers use its GPU slot (CPU-native backends ignore it)."""
    return spec.slot.is_cuda and backend_class_of(spec).needs_cuda_for_speed


def cpu_lane_count(spec: WorkerSpec, cores: int) -> int:
    """CPU workers for a spec's backend on ``cores`` cores (when ``--workers`` does not say)."""
    if backend_class_of(spec).cpu_threads_per_worker == 1:
        return max(1, cores)
    return max(1, cores // CPU_CORES_PER_WORKER)


def cpu_threads(cores: int, cpu_lanes: int) -> int:
    """Threads each CPU worker may use: its share of the cores."""
    return max(1, cores // max(1, cpu_lanes))


def local_cores() -> int:
    return os.cpu_count() or 1


def plan_lanes(specs: Sequence[WorkerSpec], policy: PoolPolicy, cores: int) -> list[Lane]:
    """The lanes of a run on one machine: per device slot, ``policy.workers_per_device`` or the
    default (one per GPU; on the CPU, :func:`cpu_lane_count`), CPU lanes sharing the cores."""
    plan = []
    for spec in specs:
        gpu = runs_on_gpu(spec)  # BackendUnavailable here, before anything starts
        n = policy.workers_per_device or (1 if gpu else cpu_lane_count(spec, cores))
        plan.append((spec, int(n), gpu))
    cpu_lanes = sum(n for _, n, gpu in plan if not gpu)
    lanes: list[Lane] = []
    for spec, n, gpu in plan:
        threads = None if gpu else cpu_threads(cores, cpu_lanes)
        lanes += [Lane(len(lanes) + i, spec, threads) for i in range(n)]
    return lanes


class Transport(abc.ABC):
    """Starts, feeds, watches and ends workers; see the module docstring."""

    title: ClassVar[str]                 # for people: "pool", "Ray executor", ...
    has_standbys: ClassVar[bool] = False  # warm standbys can load beside an active worker
    has_watchdog: ClassVar[bool] = True  # a hung worker can be killed from the driver
    startup_hint: ClassVar[str] = ""     # added to the not-loaded timeout message
    devices: tuple[str, ...] = ()        # device labels chosen by the transport itself (Ray)

    @abc.abstractmethod
    def open(self, specs: Sequence[WorkerSpec], policy: PoolPolicy,
             on_event: Callable | None) -> list[Lane]:
        """Get ready to start workers (connect, decide devices) and return the run's lanes."""

    @abc.abstractmethod
    def start(self, w: Worker, policy: PoolPolicy) -> None:
        """Begin starting ``w`` on its lane; its Ready or LoadFailed arrives through ``wait``."""

    @abc.abstractmethod
    def send(self, w: Worker, unit: UnitAssignment) -> None:
        """Give ``w`` a unit (a worker that died meanwhile reports its exit through ``wait``)."""

    @abc.abstractmethod
    def dismiss(self, w: Worker) -> None:
        """No more work for an idle, loaded ``w``: its Retiring("shutdown") arrives through wait."""

    @abc.abstractmethod
    def end(self, w: Worker) -> None:
        """``w`` has retired: let it go (its Exited arrives through ``wait``)."""

    @abc.abstractmethod
    def kill(self, w: Worker) -> None:
        """Stop ``w`` now, whatever it is doing (its Exited arrives through ``wait``)."""

    @abc.abstractmethod
    def wait(self, workers: Sequence[Worker], timeout: float) -> list[tuple[Worker, object]]:
        """What the workers reported, in order, waiting at most ``timeout`` seconds for anything."""

    @abc.abstractmethod
    def stop(self, workers: Sequence[Worker]) -> None:
        """Terminate every one of ``workers`` now and wait (bounded) until they are gone."""

    def close(self) -> None:
        """Release what ``open`` took (a Ray connection, diagnostic files)."""


__all__ = ["Transport", "Exited", "backend_class_of", "runs_on_gpu", "cpu_lane_count",
           "cpu_threads", "local_cores", "plan_lanes", "CPU_CORES_PER_WORKER"]
