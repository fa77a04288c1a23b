"""Where the command line writes: rich consoles that survive their own output channels.

A closed or broken stdout/stderr (``cmd 2>&1 >/dev/null | head -c 10``, a log collector that
restarts, a terminal that went away) stops the RENDERING, never the work: the first write that
fails makes its console quiet for the rest of the run, and the broken descriptor is pointed at the
null device so nothing else in the process (Python's final flush, a warning) trips over it again.
rich's own handler raises ``SystemExit(1)`` from inside whatever printed, which would end the run
mid-scene; :class:`SafeConsole` replaces it. Records and exit codes are the library's and are
unaffected.

On a terminal, lines are folded at its width by rich (nothing is left for the terminal to wrap);
elsewhere (a pipe, a file) every message stays on one line, so logs can be searched line by line.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.markup import escape as _rich_escape


class _GuardedStream:
    """A text stream whose writes never raise: the first OS error (EPIPE, EIO, ENOSPC, a closed
    descriptor) silences it and the console using it."""

    def __init__(self, stream):
        self._stream = stream
        self.broken = False
        self.console: Console | None = None

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self._stream.write(text)
            except (OSError, ValueError):
                self._break()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._break()

    def isatty(self) -> bool:
        try:
            return bool(self._stream.isatty())
        except (OSError, ValueError, AttributeError):
            return False

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self._stream, "encoding", None) or "utf-8"

    def _break(self) -> None:
        self.broken = True
        if self.console is not None:
            self.console.quiet = True
        silence(self._stream)


def silence(stream) -> None:
    """Point ``stream``'s descriptor at the null device and drop what it still buffers, so later
    writes (and the interpreter's last flush) succeed without going anywhere."""
    try:
        fd = stream.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, fd)
        finally:
            os.close(null)
        stream.flush()
    except (OSError, ValueError, AttributeError):
        pass


class SafeConsole(Console):
    """A rich Console that goes quiet instead of exiting when its channel breaks."""

    def on_broken_pipe(self) -> None:
        self.quiet = True


def make_console(stderr: bool, quiet: bool = False) -> SafeConsole:
    """The console for stderr (progress, notices, errors) or stdout (tables, reports)."""
    stream = sys.stderr if stderr else sys.stdout
    stream = getattr(stream, "rich_proxied_file", stream)   # not a live display's redirect
    if stream is None:  # the descriptor was closed before Python started
        return SafeConsole(file=open(os.devnull, "w"), quiet=True, highlight=False)
    guarded = _GuardedStream(stream)
    console = SafeConsole(file=guarded, quiet=quiet, highlight=False)
    guarded.console = console
    console.soft_wrap = not console.is_terminal
    return console


def err_console(quiet: bool = False) -> SafeConsole:
    return make_console(True, quiet)


def out_console(quiet: bool = False) -> SafeConsole:
    return make_console(False, quiet)


def write_out(text: str) -> None:
    """Plain text to stdout (``--json``), surviving a closed or broken stdout."""
    stream = sys.stdout
    if stream is None:
        return
    try:
        stream.write(text if text.endswith("\n") else text + "\n")
        stream.flush()
    except (OSError, ValueError):
        silence(stream)


def ensure_standard_descriptors() -> None:
    """Open the null device on any of descriptors 0-2 that is closed (``cmd >&-``): otherwise the
    run's first file (a lock, the manifest) would get that number, and a worker started later would
    write its output into it."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                null = os.open(os.devnull, os.O_RDWR)
            except OSError:
                return
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def print_indented(console, text: str, indent: int, style: str | None = None) -> None:
    """``text`` (no markup) ``indent`` columns in; on a terminal, folded lines keep the indent."""
    if console.is_terminal:
        from rich.padding import Padding
        from rich.text import Text

        console.print(Padding(Text(text, style=style or ""), (0, 0, 0, indent)))
    else:
        console.print(" " * indent + text, markup=False, style=style)


def escape(text) -> str:
    """``text`` with rich markup characters escaped (paths may hold ``[``)."""
    return _rich_escape(str(text))


def scene_detail(message: str | None, path: str, reason: str | None = None) -> str | None:
    """A scene's message for a line that already names the scene and its reason: a leading
    ``path: `` or ``reason: `` is dropped (the library's messages stand alone in the manifest)."""
    for prefix in (f"{path}: ", f"{reason}: " if reason else None):
        if message and prefix and message.startswith(prefix):
            message = message[len(prefix):]
    return message


__all__ = ["SafeConsole", "make_console", "err_console", "out_console", "write_out", "silence",
           "ensure_standard_descriptors", "print_indented", "escape", "scene_detail"]
