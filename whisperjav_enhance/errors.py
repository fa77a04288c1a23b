"""The package's exception hierarchy: every expected failure is one of these, and its message
names the fix. The CLI maps the classes to exit codes; a per-scene failure carries a short
machine-readable ``reason`` for manifests and summaries."""

from __future__ import annotations


class EnhanceError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(EnhanceError):
    """Invalid options or arguments (CLI exit code 2)."""


class BackendUnavailable(EnhanceError):
    """A backend's Python packages are not installed (CLI exit code 2)."""


class WeightsError(EnhanceError):
    """Model weights are missing, unreadable or do not match the network (CLI exit code 2).

    ``searched`` lists every place that was looked at, in order, so the message can say exactly
    where the weights were expected.
    """

    def __init__(self, message: str, searched: tuple[str, ...] = ()):
        self.searched = tuple(searched)
        if searched:
            message += "\nSearched:\n" + "\n".join(f"  - {p}" for p in searched)
        super().__init__(message)


class DeviceError(EnhanceError):
    """The requested device cannot be used (CLI exit code 2)."""


class SceneError(EnhanceError):
    """One scene cannot be enhanced; the run goes on without it.

    ``reason`` is a short stable code, one of status.Reason (their meanings: status.REASON_MEANINGS
    in whisperjav_enhance/status.py); the message is one line for people.
    """

    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


class AudioError(SceneError):
    """A scene file cannot be read as usable audio."""


class OutputError(EnhanceError):
    """The output location cannot be written (unwritable directory, full disk)."""


class RunInterrupted(EnhanceError):
    """The run was stopped by Ctrl-C or SIGTERM (CLI exit code 130)."""

    def __init__(self, message: str, outcomes: tuple = (), report=None, summary=None):
        super().__init__(message)
        self.outcomes = tuple(outcomes)  # the scenes' records made before the stop (executor)
        self.report = report             # the executor's counters so far (an incomplete report)
        self.summary = summary           # the run's summary, written with "interrupted": true


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its class name when it has none."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else type(exc).__name__


def one_line(exc: BaseException) -> str:
    """``Class: first line`` of an exception: one line for people that still names its kind."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__
