"""Running scenes through isolated workers: one driver with the run's rules, thin transports.

    execute(tasks, units, specs, policy, on_event=None, transport=None) -> ExecutorReport

``tasks`` are :class:`SceneTask` (one per scene to run); ``units`` are planning.WorkUnit whose
``scenes`` are positions in ``tasks``; ``specs`` are :class:`WorkerSpec` (one per device slot);
``transport`` is :class:`LocalTransport` (spawned processes, the default),
``InProcessTransport`` or ``RayTransport`` (see :func:`make_transport`). Every task ends in
exactly one records.SceneResult in ``ExecutorReport.outcomes`` (task order). Ctrl-C/SIGTERM:
workers are stopped, partial files removed, then ``RunInterrupted`` is raised.

Where things live: driver.py (the rules: states, lanes, deadlines, watchdog, giving up,
shutdown, interrupts), scheduling.py (queue, crash accounting, quarantine), standby.py (when to
start warm standbys), failures.py (exit descriptions, load failures), runtime.py (a worker's
per-unit code), child.py (a spawned worker's entry point), local.py / ray.py / inprocess.py
(transports), messages.py (what crosses between driver and worker), telemetry.py, interrupts.py.
"""

from .driver import execute
from .failures import RemoteTraceback
from .inprocess import InProcessTransport
from .ledger import ExecutorReport
from .local import LocalTransport
from .messages import SceneTask, WorkerSpec
from .transport import Transport


def make_transport(executor: str, ray_address: str | None = None,
                   device: str | None = None) -> Transport:
    """The transport for ``EnhanceOptions.executor`` ("pool", "inprocess" or "ray")."""
    if executor == "pool":
        return LocalTransport()
    if executor == "inprocess":
        return InProcessTransport()
    if executor == "ray":
        from .ray import RayTransport  # imports ray lazily, in open()

        return RayTransport(ray_address, device)
    raise ValueError(f"unknown executor {executor!r}")


__all__ = ["execute", "make_transport", "SceneTask", "WorkerSpec", "ExecutorReport",
           "RemoteTraceback", "Transport", "LocalTransport", "InProcessTransport"]
