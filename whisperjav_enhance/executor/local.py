"""The local transport: workers are spawned processes (``multiprocess``'s spawn context, the only
start method on Windows), one pipe each, and warm standbys are possible.

    driver --send--> Pipe --> child.worker_main (CUDA_VISIBLE_DEVICES set first, model loaded once)
    driver <--wait-- Pipe <-- Ready | LoadFailed, SceneDone..., UnitDone, Retiring
           <-------- process sentinel: the exit (a crash unless Retiring came first)

The parent never initialises CUDA: every model runs in a spawned child, so when a run returns,
this process holds no GPU memory.

A spawned child normally re-imports its parent's ``__main__`` (multiprocessing's spawn re-runs the
calling script so functions defined there can be unpickled). Workers need nothing from there: their
entry point is child.worker_main, named by module. So the parent's ``__main__`` is hidden while a
worker starts, and a script, notebook or interactive session without
``if __name__ == "__main__":`` works, with its top level run once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import types
from dataclasses import dataclass
from typing import Callable, Sequence

import multiprocess
from multiprocess.connection import wait as _wait

from ..config import PoolPolicy
from .child import worker_main
from .failures import describe_exit
from .interrupts import held_interrupts
from .messages import Shutdown, UnitAssignment, WorkerSpec
from .transport import Exited, Transport, local_cores, plan_lanes
from .workers import Lane, State, Worker

log = logging.getLogger("whisperjav_enhance.executor")

JOIN_TIMEOUT_S = 5.0          # per step of terminate -> kill when stopping workers
LOG_TAIL_BYTES = 16_384       # of a worker's error log, shown in the debug log when it exits

_start_lock = threading.Lock()


@dataclass(eq=False)
class _Process:
    """The transport's handle of one worker."""

    process: object          # multiprocess.Process
    conn: object             # our end of its pipe (None once it is closed)
    log_path: str            # its error output and fault dumps


@contextlib.contextmanager
def _callers_main_hidden():
    """While a worker starts, ``__main__`` is an empty module, so spawn's preparation data names no
    main script or module for the child to import (see the module docstring)."""
    with _start_lock:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            if main is None:
                del sys.modules["__main__"]
            else:
                sys.modules["__main__"] = main


class LocalTransport(Transport):
    """Spawned worker processes on this machine; see the module docstring."""

    title = "pool"
    has_standbys = True

    def __init__(self):
        self.ctx = multiprocess.get_context("spawn")
        self.policy: PoolPolicy | None = None
        self.log_dir: str | None = None

    def open(self, specs: Sequence[WorkerSpec], policy: PoolPolicy,
             on_event: Callable | None) -> list[Lane]:
        self.policy = policy
        lanes = plan_lanes(specs, policy, local_cores())
        self.log_dir = tempfile.mkdtemp(prefix="whisperjav-enhance-workers-")
        return lanes

    # -- one worker -------------------------------------------------------------------------------
    def start(self, w: Worker, policy: PoolPolicy) -> None:
        parent_conn, child_conn = self.ctx.Pipe(duplex=True)
        log_path = os.path.join(self.log_dir, f"worker-{w.id}.log")
        process = self.ctx.Process(
            target=worker_main,
            args=(child_conn, w.id, w.lane.spec, policy, w.lane.threads, log_path),
            name=f"whisperjav-enhance-worker-{w.id}", daemon=True)
        try:
            with _callers_main_hidden(), held_interrupts():
                process.start()
                # Recorded before a Ctrl-C held during the start is let through: the driver
                # then stops a worker it knows how to stop.
                w.handle, w.pid = _Process(process, parent_conn, log_path), process.pid
        except BaseException:
            if w.handle is None:  # not started: nobody else will close our end
                parent_conn.close()
            raise
        finally:
            child_conn.close()  # ours is closed so the pipe reports EOF when the child dies

    def send(self, w: Worker, unit: UnitAssignment) -> None:
        self._send(w, unit)

    def dismiss(self, w: Worker) -> None:
        self._send(w, Shutdown())

    def end(self, w: Worker) -> None:
        pass  # after Retiring the worker exits by itself; its sentinel says when

    def kill(self, w: Worker) -> None:
        w.handle.process.kill()

    def _send(self, w: Worker, msg) -> None:
        h = w.handle
        if h.conn is None:
            return
        try:
            h.conn.send(msg)
        except (OSError, ValueError):
            pass  # it died: its sentinel reports the exit

    # -- waiting -----------------------------------------------------------------------------------
    def wait(self, workers: Sequence[Worker], timeout: float) -> list[tuple[Worker, object]]:
        handles = {}
        for w in workers:
            if w.handle.conn is not None:
                handles[w.handle.conn] = w
            handles[w.handle.process.sentinel] = w
        ready = _wait(list(handles), timeout) if handles else _sleep(timeout)
        out: list[tuple[Worker, object]] = []
        for h in ready:  # messages first: what a worker said before it died still counts
            w = handles[h]
            if h is w.handle.conn:
                out += [(w, msg) for msg in self._drain(w)]
        for h in ready:
            w = handles[h]
            if h is not w.handle.conn:
                out += [(w, msg) for msg in self._drain(w)]
                out.append((w, self._exited(w)))
        return out

    def _drain(self, w: Worker) -> list:
        msgs, h = [], w.handle
        while h.conn is not None:
            try:
                if not h.conn.poll():
                    break
                msgs.append(h.conn.recv())
            except Exception:  # EOF, a broken pipe, or a message cut short by the child's death
                h.conn.close()
                h.conn = None
        return msgs

    def _exited(self, w: Worker) -> Exited:
        h = w.handle
        h.process.join(JOIN_TIMEOUT_S)
        if h.conn is not None:
            h.conn.close()
            h.conn = None
        # The worker's own log is read only for the debug log, the one place that shows it.
        detail = _tail(h.log_path) if log.isEnabledFor(logging.DEBUG) else ""
        return Exited(describe_exit(h.process.exitcode, loaded=w.state is not State.STARTING),
                      detail)

    # -- stopping ----------------------------------------------------------------------------------
    def stop(self, workers: Sequence[Worker]) -> None:
        """Terminate, then kill, each worker; join each with a timeout."""
        workers = [w for w in workers if w.handle is not None]  # a start that failed: nothing
        for w in workers:
            if w.handle.process.is_alive():
                w.handle.process.terminate()
        for w in workers:
            p = w.handle.process
            p.join(JOIN_TIMEOUT_S)
            if p.is_alive():
                p.kill()
                p.join(JOIN_TIMEOUT_S)
            if w.handle.conn is not None:
                w.handle.conn.close()
                w.handle.conn = None

    def close(self) -> None:
        if self.log_dir is not None:
            shutil.rmtree(self.log_dir, ignore_errors=True)
            self.log_dir = None


def _tail(path: str) -> str:
    """The end of a worker's error log ('' when it wrote nothing)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - LOG_TAIL_BYTES))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _sleep(seconds: float) -> list:
    time.sleep(seconds)
    return []


__all__ = ["LocalTransport", "JOIN_TIMEOUT_S"]
