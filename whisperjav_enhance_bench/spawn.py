"""Run one function in a fresh spawned process and get its result back.

The benchmark's own process never creates a CUDA context: an in-process strategy or a network
check runs in a child that is gone (with its context and its allocator) before the next one
starts, so nothing of one measurement colours the next, and environment variables such as
``PYTORCH_CUDA_ALLOC_CONF`` apply from the child's first allocation.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import traceback
from multiprocessing.connection import wait

from whisperjav_enhance.errors import EnhanceError

EXIT_WAIT_S = 30.0   # a child that sent its result should be gone by then


def _child_main(module: str, function: str, kwargs: dict, conn) -> None:
    try:
        fn = getattr(importlib.import_module(module), function)
        conn.send(("ok", fn(**kwargs)))
    except BaseException as exc:  # the parent reports it; nothing may escape unreported
        conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
    finally:
        conn.close()


def call_in_child(module: str, function: str, kwargs: dict, timeout_s: float,
                  env: dict | None = None):
    """``module.function(**kwargs)`` in a spawned process with ``env`` added to its environment
    (this process's own is left as it was); its return value (picklable), or an EnhanceError
    with the child's traceback, or one saying it ran out of time or died."""
    ctx = multiprocessing.get_context("spawn")
    reader, writer = ctx.Pipe(duplex=False)
    env = env or {}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)   # a spawned child takes the environment as it is at start()
    try:
        proc = ctx.Process(target=_child_main, args=(module, function, kwargs, writer),
                           daemon=True)
        proc.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    writer.close()
    try:
        if not wait([reader, proc.sentinel], timeout=timeout_s):
            raise EnhanceError(f"{function} still running after {timeout_s:.0f} s; stopped")
        try:
            msg = reader.recv()
        except EOFError:
            proc.join(EXIT_WAIT_S)
            raise EnhanceError(f"{function}: the process died without a result (exit code "
                               f"{proc.exitcode})") from None
        proc.join(EXIT_WAIT_S)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(EXIT_WAIT_S)
        reader.close()
    if msg[0] != "ok":
        raise EnhanceError(f"{msg[1]}\n{msg[2]}")
    return msg[1]
