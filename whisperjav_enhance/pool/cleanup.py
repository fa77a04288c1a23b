"""Stopping a run cleanly: the one per-platform hook that turns a termination signal into an
exception in the main thread, and removal of the temporary files a stopped or crashed worker left
beside its outputs."""

from __future__ import annotations

import re
import signal
import threading
from pathlib import Path
from typing import Callable, Iterable, Sequence

from ..atomic import is_partial_file


class Terminated(BaseException):
    """Raised in the main thread when the process is asked to terminate (SIGTERM; on Windows also
    Ctrl-Break). A BaseException, like KeyboardInterrupt, so no ``except Exception`` swallows it."""

    def __init__(self, signal_name: str):
        self.signal_name = signal_name
        super().__init__(f"terminated by {signal_name}")


def install_termination_handler() -> Callable[[], None]:
    """Make termination signals raise :class:`Terminated`; returns a function that undoes it.

    Ctrl-C needs nothing here: Python already raises KeyboardInterrupt. Signal handlers can only be
    set from the main thread; elsewhere this does nothing (the caller's own handling applies).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise Terminated(signal.Signals(signum).name)

    previous = {}
    for name in ("SIGTERM", "SIGBREAK"):  # SIGBREAK exists only on Windows
        sig = getattr(signal, name, None)
        if sig is None:
            continue
        try:
            previous[sig] = signal.signal(sig, handler)
        except (ValueError, OSError):
            pass

    def restore():
        for sig, old in previous.items():
            try:
                signal.signal(sig, old)
            except (ValueError, OSError, TypeError):
                pass

    return restore


def remove_partials(output_paths: Iterable[str]) -> list[Path]:
    """Delete the ``audio.write_audio_atomic`` temporaries of these outputs; returns what went.

    Only names of the exact form ``.<stem>.<random>.partial`` are touched, so another scene's
    temporary in the same folder (``a.b`` beside ``a``) is left alone.
    """
    by_dir: dict[Path, set[str]] = {}
    for p in output_paths:
        out = Path(p)
        by_dir.setdefault(out.parent, set()).add(out.stem)
    removed = []
    for folder, stems in by_dir.items():
        patterns = [re.compile(re.escape(f".{stem}.") + r"[^.]+\.partial") for stem in stems]
        try:
            entries = list(folder.iterdir())
        except OSError:
            continue
        for entry in entries:
            if is_partial_file(entry) and any(pat.fullmatch(entry.name) for pat in patterns):
                try:
                    entry.unlink()
                    removed.append(entry)
                except OSError:
                    pass
    return removed


def output_paths(tasks: Sequence, positions: Iterable[int]) -> list[str]:
    return [tasks[p].output_path for p in positions]
