"""How worker failures are described and what they mean for the run, in one place for every
transport: a dead process's exit code or signal and its likely cause, the watchdog's words, and
whether a load failure ends the run (and as which exception of errors.py)."""

from __future__ import annotations

import signal

from ..backends.base import install_hint
from ..errors import BackendUnavailable, ConfigError, DeviceError, WeightsError
from .messages import LoadFailed, WorkerSpec


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker (attached as ``__cause__``)."""

    def __init__(self, text: str):
        self.text = text
        super().__init__(text)

    def __str__(self):
        return "\n\n" + self.text.rstrip() + "\n(raised in the worker process)"


class LoadFailure(Exception):
    """Raised inside the driver when a load failure ends the run (turned into :func:`load_error`
    by the executor once its workers are stopped)."""

    def __init__(self, msg: LoadFailed, spec: WorkerSpec):
        self.msg, self.spec = msg, spec
        super().__init__(msg.message)


# Load failures that mean the setup is wrong, so every worker would fail the same way: they stop
# the run with the same error class (CLI exit code 2). Others stop it only before any worker of
# the run has loaded.
SETUP_ERRORS = frozenset({"WeightsError", "BackendUnavailable", "DeviceError", "ConfigError",
                          "ImportError", "ModuleNotFoundError"})


def load_failure_is_fatal(msg: LoadFailed, any_worker_loaded: bool) -> bool:
    """Whether a worker's load failure ends the run, or is only that worker's crash.

    Once a worker of this run has loaded, the setup is known to be sound, so a failure that is not
    about the setup is one worker's bad luck: typically a standby's CUDA context that did not fit
    beside the active worker's batch on a small card.
    """
    return msg.error_type in SETUP_ERRORS or not any_worker_loaded


def load_failure_description(msg: LoadFailed) -> str:
    lines = msg.message.strip().splitlines()
    return f"failed to load: {msg.error_type}: {lines[0] if lines else ''}"


def load_error(msg: LoadFailed, spec: WorkerSpec) -> Exception:
    """The parent-side exception for a worker's load failure (same class where it is ours)."""
    classes = {"WeightsError": WeightsError, "BackendUnavailable": BackendUnavailable,
               "DeviceError": DeviceError, "ConfigError": ConfigError}
    if msg.error_type in classes:
        err = classes[msg.error_type](msg.message)
        if isinstance(err, WeightsError):
            err.searched = tuple(msg.searched)  # the message already lists them
        return err
    if msg.error_type in ("ImportError", "ModuleNotFoundError"):
        return BackendUnavailable(f"backend {spec.backend!r} cannot be imported in the worker "
                                  f"({msg.message}); install what it needs: "
                                  f"{install_hint(spec.backend)}")
    return BackendUnavailable(f"backend {spec.backend!r} failed to load in a worker on "
                              f"{spec.slot.label}: {msg.error_type}: {msg.message}")


# -- describing a dead worker process ------------------------------------------------------------
_NATIVE = "native crash in the model runtime or the CUDA driver"
_SIGNAL_CAUSES = {
    "SIGKILL": "killed from outside, or by the operating system's out-of-memory killer "
               "(see `dmesg` on Linux)",
    "SIGSEGV": _NATIVE + " (segmentation fault)",
    "SIGBUS": _NATIVE + " (bus error)",
    "SIGILL": _NATIVE + " (illegal instruction)",
    "SIGFPE": _NATIVE + " (arithmetic fault)",
    "SIGABRT": "native abort in the model runtime or the CUDA driver (a failed check or a panic)",
    "SIGTERM": "terminated from outside",
}
_WINDOWS_STATUS = {
    0xC0000005: _NATIVE + " (access violation)",
    0xC00000FD: _NATIVE + " (stack overflow)",
    0xC0000409: "native abort in the model runtime or the CUDA driver (fail-fast)",
    0xC0000017: "out of memory in native code",
}


def describe_exit(code: int | None, loaded: bool = True) -> str:
    """One line for people: exit code or signal name, and the likely cause. ``loaded`` False: the
    process never reported that its model was loaded (it died starting up)."""
    if code is None:
        return "exited with unknown status"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}: {_SIGNAL_CAUSES.get(name, 'a signal from outside or a native fault')}"
    status = _WINDOWS_STATUS.get(code & 0xFFFFFFFF)
    if status:
        return f"exit code {code & 0xFFFFFFFF:#x}: {status}"
    if not loaded:
        return (f"exit code {code}: the worker process ended before it could load the model (its "
                "Python could not import this package or the backend, or native code failed; "
                "`--debug` shows the worker's own error output)")
    return (f"exit code {code}: the worker exited without reporting (os._exit, or a fatal error "
            "in native code)")


def hung_message(timeout_s: float) -> str:
    """Why the watchdog killed a busy worker (the same words on every transport)."""
    return (f"timeout: no window or scene finished in {timeout_s:g} s (scene_timeout_s, "
            "--scene-timeout); killed as hung")


def not_loaded_message(timeout_s: float, hint: str = "") -> str:
    """Why the watchdog killed a worker that did not finish loading."""
    return (f"timeout: not loaded after {timeout_s:g} s (startup_timeout_s{hint}); killed")


__all__ = ["RemoteTraceback", "LoadFailure", "SETUP_ERRORS", "load_failure_is_fatal",
           "load_failure_description", "load_error", "describe_exit", "hung_message",
           "not_loaded_message"]
