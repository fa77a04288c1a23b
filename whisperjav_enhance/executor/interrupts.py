"""Stopping a run cleanly: the one per-platform hook that turns a termination signal into an
exception in the main thread, so SIGTERM (and Ctrl-Break on Windows) takes Ctrl-C's orderly path."""

from __future__ import annotations

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


__all__ = ["Terminated", "install_termination_handler"]
