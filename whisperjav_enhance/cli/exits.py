"""Exit codes and how an error that ends a command is told: one line naming the fix, never a
traceback unless ``--debug`` asked for it.

    0    every scene enhanced, or already complete from an earlier run with the same settings
    1    some scenes failed (every other is complete), or the run's own records (manifest,
         summary) could not all be written
    2    nothing was run: bad arguments, no inputs, missing weights, unusable device, unwritable,
         too small or busy output folder (another run holds it)
    130  interrupted (Ctrl-C, SIGTERM): workers stopped, no partial outputs left
"""

from __future__ import annotations

from ..errors import (BackendUnavailable, ConfigError, DeviceError, OutputError, RunInterrupted,
                      WeightsError)

EXIT_OK = 0
EXIT_SCENES_FAILED = 1
EXIT_NOT_RUN = 2
EXIT_INTERRUPTED = 130

_LABELS = {WeightsError: "missing weights", DeviceError: "device", OutputError: "output",
           BackendUnavailable: "backend unavailable", ConfigError: "error"}


def exit_code_for(exc: BaseException) -> int:
    """The exit code of a command ended by ``exc`` (an EnhanceError)."""
    if isinstance(exc, RunInterrupted):
        return EXIT_INTERRUPTED
    if isinstance(exc, (ConfigError, BackendUnavailable, WeightsError, DeviceError, OutputError)):
        return EXIT_NOT_RUN
    return EXIT_SCENES_FAILED


def summary_exit_code(summary) -> int:
    """0 when every scene is complete and every record was written, else 1."""
    if summary.scenes_failed or summary.problems or not summary.complete:
        return EXIT_SCENES_FAILED
    return EXIT_OK


def print_error(exc: BaseException, debug: bool, console=None) -> None:
    """``label: message`` on stderr; the traceback first with ``debug``."""
    from .consoles import err_console

    console = console or err_console()
    if debug:
        import traceback

        console.print("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
                      markup=False, highlight=False)
    # by class and its bases: weights.WeightsNotFound is a WeightsError too
    label = next((_LABELS[c] for c in type(exc).__mro__ if c in _LABELS), "error")
    console.print(f"[bold red]{label}:[/bold red] ", end="")
    console.print(str(exc), markup=False, highlight=False)


__all__ = ["EXIT_OK", "EXIT_SCENES_FAILED", "EXIT_NOT_RUN", "EXIT_INTERRUPTED", "exit_code_for",
           "summary_exit_code", "print_error"]
