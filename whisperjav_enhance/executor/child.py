"""The spawned worker process's entry point: set the environment up before torch is imported,
leave Ctrl-C to the parent, watch for the parent's death, keep a fault log, then load the backend
and serve units until told to stop or retiring.

This module is the whole of what a spawned worker imports from its parent's world: the local
transport starts workers so that the caller's ``__main__`` is never imported again in the child
(local.py), so a script without ``if __name__ == "__main__":`` works.
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time
import traceback

import multiprocess

from ..config import PoolPolicy
from ..status import Retirement
from .interrupts import release_held_interrupt_in_child
from .messages import LoadFailed, Retiring, Shutdown, WorkerSpec
from .runtime import WorkerRuntime

# Exit code of a worker that saw its parent die (the parent cannot read it; for logs and tests).
PARENT_GONE_EXIT_CODE = 70


def worker_main(conn, worker_id: int, spec: WorkerSpec, policy: PoolPolicy,
                threads: int | None = None, log_path: str | None = None) -> None:
    """Load, then serve units until told to stop or retiring. ``log_path``: a file that takes the
    worker's error output and faulthandler dumps (the parent shows it in its debug log)."""
    _prepare(spec, log_path)
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
            conn.send(Retiring(runtime.worker_id, Retirement.SHUTDOWN, runtime.scenes_done))
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


def _prepare(spec: WorkerSpec, log_path: str | None) -> None:
    """Environment first (before torch is imported); errors and fault dumps to the worker's log;
    Ctrl-C left to the parent, which stops its workers in order rather than mid-write."""
    if spec.slot.visible_devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = spec.slot.visible_devices
    for key, value in spec.env.items():
        os.environ[str(key)] = str(value)
    if log_path:
        # The worker's own error output (warnings, native libraries' messages, tracebacks printed
        # by third-party code) would land in the middle of the parent's progress display; it goes
        # to the log, which the parent shows with --debug.
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    faulthandler.enable(file=sys.stderr, all_threads=True)
    try:
        release_held_interrupt_in_child()
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


__all__ = ["worker_main", "PARENT_GONE_EXIT_CODE"]
