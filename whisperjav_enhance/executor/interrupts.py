"""Signals, in one place: the per-platform hook that turns a termination signal into an
exception in the main thread (so SIGTERM, and Ctrl-Break on Windows, take Ctrl-C's orderly path),
and once a run is stopping, nothing more cuts it short; Ctrl-C held while a worker starts or
deferred while Ray starts; termination handlers kept across what third-party code replaces."""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Callable


class Terminated(BaseException):
    """Raised in the main thread when the process is asked to terminate (SIGTERM; on Windows also
    Ctrl-Break). A BaseException, like KeyboardInterrupt, so no ``except Exception`` swallows it."""

    def __init__(self, signal_name: str):
        self.signal_name = signal_name
        super().__init__(f"terminated by {signal_name}")


# Shared by nested installs (the pipeline around the executor): once a run is stopping, further
# Ctrl-C or SIGTERM are ignored until the outermost install is undone, so they cannot cut the
# clean-up short (workers stopped, temporaries removed, summary written).
_state = {"depth": 0, "stopping": False}


def _handler(signum, frame):
    if _state["stopping"]:
        return
    _state["stopping"] = True
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signal.Signals(signum).name)


def install_termination_handler() -> Callable[[], None]:
    """Make termination signals raise :class:`Terminated` (Ctrl-C: KeyboardInterrupt, where the
    caller left Python's default handling), once: later ones are ignored while the run stops.
    Returns a function that undoes it. Signal handlers can only be set from the main thread;
    elsewhere this does nothing (the caller's own handling applies)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {}
    names = ["SIGTERM", "SIGBREAK"]  # SIGBREAK exists only on Windows
    if signal.getsignal(signal.SIGINT) in (signal.default_int_handler, _handler):
        names.append("SIGINT")
    for name in names:
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            previous[sig] = signal.signal(sig, _handler)
        except (ValueError, OSError):
            pass
    _state["depth"] += 1

    def restore():
        _state["depth"] -= 1
        if _state["depth"] == 0:
            _state["stopping"] = False
        for sig, old in previous.items():
            try:
                signal.signal(sig, old)
            except (ValueError, OSError, TypeError):
                pass

    return restore


@contextlib.contextmanager
def held_interrupts():
    """SIGINT held back for the block (a process started inside it inherits the block).

    A terminal's Ctrl-C reaches the whole process group: a worker still importing, before its
    entry point ignores SIGINT, would die with a traceback on the parent's stderr. So workers
    start with SIGINT blocked (child.py ignores it, then unblocks), and this process gets a Ctrl-C
    pressed meanwhile when the block ends. POSIX only: Windows has no signal masks, and there the
    console's Ctrl-C is the parent's to handle."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def deferred_interrupts():
    """Hold a Ctrl-C that arrives while ray.init runs and raise it once init has returned.

    Interrupted half-way, ray.init leaves daemons it has started but not yet recorded (seen here:
    the raylet's agents outlive the run); complete, ``ray.shutdown`` stops every one. Ray's
    daemons block SIGINT themselves, so the terminal's Ctrl-C reaches only this process."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        _state["stopping"] = True  # the run stops now: later presses must not cut it short
        raise KeyboardInterrupt


def keep_signal_handlers() -> Callable[[], None]:
    """Remember the termination handlers; returns a function that puts them back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    names = ("SIGTERM", "SIGBREAK")  # SIGBREAK exists only on Windows
    saved = {sig: signal.getsignal(sig) for sig in (getattr(signal, n, None) for n in names)
             if sig is not None}

    def put_back():
        for sig, handler in saved.items():
            try:
                signal.signal(sig, handler)
            except (ValueError, OSError, TypeError):  # None: a handler not set from Python
                pass

    return put_back


def release_held_interrupt_in_child() -> None:
    """In a worker started inside :func:`held_interrupts`: ignore SIGINT, then unblock it (a
    Ctrl-C pressed during the start is dropped, as the parent has it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


__all__ = ["Terminated", "install_termination_handler", "held_interrupts",
           "deferred_interrupts", "keep_signal_handlers", "release_held_interrupt_in_child"]
