"""Subprocess-isolated worker pool (see supervisor.py for the data-flow diagram).

Contract used by the pipeline, the benchmark harness and the Ray executor:

    run_pool(tasks, units, specs, policy, on_event=None) -> PoolReport
    run_inprocess(tasks, units, specs[0], policy, on_event=None) -> PoolReport   # no isolation

``tasks`` are :class:`SceneTask` (one per scene to run); ``units`` are planning.WorkUnit whose
``scenes`` are positions in ``tasks``; ``specs`` are :class:`WorkerSpec` (one per device slot).
Every task ends in exactly one :class:`SceneOutcome` in ``PoolReport.outcomes`` (task order).
Ctrl-C/SIGTERM: workers are stopped, partial files removed, then ``RunInterrupted`` is raised.
"""

from .inprocess import run_inprocess
from .ledger import PoolReport
from .messages import SceneOutcome, SceneTask, WorkerSpec
from .supervisor import RemoteTraceback, run_pool

__all__ = ["run_pool", "run_inprocess", "SceneTask", "WorkerSpec", "SceneOutcome", "PoolReport",
           "RemoteTraceback"]
