"""The two hub clients, driven the same way: fetch a backend's files into the hub's standard cache
with the client's own download code, turning its progress into events on the caller's thread.

- Hugging Face: ``huggingface_hub.hf_hub_download`` file by file, in the source's order, into
  the hub cache. The client writes each file to a process-unique ``*.incomplete`` name beside
  the blobs, checks its size, and only then moves it under its content name and links it into the
  snapshot folder, so an interrupted file never appears there. Fetching the checkpoint before
  the pointer that names it means a snapshot folder holds the pointer only once the checkpoint
  is complete.
- ModelScope: ``modelscope.hub.snapshot_download`` limited to the source's files. The client
  writes ``<file>.incomplete`` (kept, so a later call resumes it), checks size and the listed
  SHA-256, then renames it into the snapshot folder.

The clients report progress from their own threads (ModelScope downloads files in a thread pool),
and both print to stderr: warnings through their loggers, and ModelScope its own tqdm bars, which
it has no switch for. So the download runs in one background thread; its progress goes through a
queue and is handed to ``on_event`` here, on the caller's thread; the clients' log records go to
this module's logger at debug level (shown with ``--debug``); and while it runs, writes to stderr
from any thread but the caller's are dropped (they can only be the clients' bars).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from .events import DownloadProgress
from .weights import HUGGINGFACE, WeightsSource

log = logging.getLogger(__name__)

# Least time between two progress events of one file: often enough for a smooth bar, rare enough
# that a 10 MB/s download does not flood a callback with one event per received chunk.
PROGRESS_INTERVAL_S = 0.25
# How often the caller's thread looks at the queue while the download thread works; also how
# quickly Ctrl-C is noticed there.
PUMP_POLL_S = 0.1
# After Ctrl-C: how long to wait for the download thread to notice and stop. It is a daemon
# thread, so a client stuck in a read cannot keep the process alive past this.
CANCEL_JOIN_S = 5.0
# Loggers of the hub clients, quietened while they run (their records go to ours, at debug).
CLIENT_LOGGERS = ("huggingface_hub", "modelscope_hub", "modelscope")

_DONE = object()


class DownloadCancelled(Exception):
    """Raised inside a client's progress callback when the caller was interrupted."""


def fetch_files(source: WeightsSource, cache: Path, on_event: Callable) -> Path:
    """Fetch ``source.files`` into ``cache`` with the source's hub client; returns the folder that
    holds them. ImportError when the client is not installed; client errors propagate unchanged
    (the caller words them)."""
    # Imported here, on the caller's thread and before the client's loggers are rerouted: a
    # client sets up its own log handler on first import.
    if source.hub == HUGGINGFACE:
        from huggingface_hub import hf_hub_download as client

        fetch = _fetch_huggingface
    else:
        from modelscope.hub.snapshot_download import snapshot_download as client

        fetch = _fetch_modelscope
    return _in_background(lambda emit, cancel: fetch(client, source, cache, emit, cancel),
                          on_event)


# -- the clients ----------------------------------------------------------------------------------
def _fetch_huggingface(hf_hub_download, source: WeightsSource, cache: Path, emit, cancel) -> Path:
    accepts = inspect.signature(hf_hub_download).parameters
    path = None
    for filename in source.files:
        kwargs = {"repo_id": source.repo_id, "filename": filename, "cache_dir": str(cache)}
        if "tqdm_class" in accepts:  # older clients have no hook (and then show their own bar)
            kwargs["tqdm_class"] = _progress_bar_class(source.backend, filename, emit, cancel)
        path = Path(hf_hub_download(**kwargs))
    return path.parent


def _fetch_modelscope(snapshot_download, source: WeightsSource, cache: Path, emit, cancel) -> Path:
    accepts = inspect.signature(snapshot_download).parameters
    kwargs = {"cache_dir": str(cache)}
    patterns = list(source.files)
    kwargs["allow_patterns" if "allow_patterns" in accepts else "allow_file_pattern"] = patterns
    if "progress_callbacks" in accepts:
        kwargs["progress_callbacks"] = [_progress_callback_class(source.backend, emit, cancel)]
    return Path(snapshot_download(source.repo_id, **kwargs))


# -- progress adapters ----------------------------------------------------------------------------
class _Meter:
    """Counts one file's bytes and emits throttled DownloadProgress events."""

    def __init__(self, backend: str, filename: str, total, initial: int, emit, cancel):
        self.backend, self.filename, self.emit, self.cancel = backend, filename, emit, cancel
        self.total = int(total) if total else None
        self.done = int(initial or 0)
        self.last = 0.0
        self._send(force=True)

    def add(self, n) -> None:
        if self.cancel.is_set():
            raise DownloadCancelled("interrupted")
        self.done += int(n or 0)
        self._send(force=self.total is not None and self.done >= self.total)

    def _send(self, force: bool) -> None:
        now = time.monotonic()
        if force or now - self.last >= PROGRESS_INTERVAL_S:
            self.last = now
            self.emit(DownloadProgress(self.backend, self.filename, max(0, self.done), self.total))


def _progress_bar_class(backend: str, filename: str, emit, cancel):
    """A stand-in for tqdm that huggingface_hub creates per file (``tqdm_class``): it counts, it
    does not print."""

    class Bar:
        def __init__(self, *args, total=None, initial=0, **kwargs):
            self.meter = _Meter(backend, filename, total, initial, emit, cancel)

        def update(self, n=1):
            self.meter.add(n)

        def close(self):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    return Bar


def _progress_callback_class(backend: str, emit, cancel):
    """modelscope's ProgressCallback shape: created per file as ``cls(filename, file_size)``."""

    class Callback:
        def __init__(self, filename: str, file_size: int):
            self.meter = _Meter(backend, Path(filename).name, file_size, 0, emit, cancel)

        def update(self, size: int) -> None:
            self.meter.add(size)

        def end(self) -> None:
            self.meter._send(force=True)

    return Callback


# -- running a client off the caller's thread -----------------------------------------------------
def _in_background(work: Callable, on_event: Callable):
    """Run ``work(emit, cancel)`` in a daemon thread; hand what it emits to ``on_event`` on this
    thread; return its result or raise its exception. Ctrl-C here cancels it (best effort)."""
    events: queue.Queue = queue.Queue()
    cancel = threading.Event()
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = work(events.put, cancel)
        except BaseException as exc:  # handed to the caller's thread below
            outcome["error"] = exc
        finally:
            events.put(_DONE)

    thread = threading.Thread(target=run, name="whisperjav-enhance-download", daemon=True)
    with _client_logs_to_debug(), _stderr_for_this_thread_only():
        thread.start()
        try:
            while True:
                try:
                    item = events.get(timeout=PUMP_POLL_S)
                except queue.Empty:
                    continue
                if item is _DONE:
                    break
                on_event(item)
        except BaseException:
            cancel.set()
            thread.join(CANCEL_JOIN_S)
            raise
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class _ToDebug(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            log.debug("%s: %s", record.name, record.getMessage())
        except Exception:  # a malformed record must not break a download
            pass


@contextlib.contextmanager
def _client_logs_to_debug():
    """While a client runs, its warnings (retries, fallbacks) go to our logger at debug level
    instead of its own stderr handler, which would print into the progress display."""
    saved = []
    forward = _ToDebug()
    for name in CLIENT_LOGGERS:
        lg = logging.getLogger(name)
        saved.append((lg, list(lg.handlers), lg.propagate))
        lg.handlers = [forward]
        lg.propagate = False
    try:
        yield
    finally:
        for lg, handlers, propagate in saved:
            lg.handlers = handlers
            lg.propagate = propagate


class _ThreadStderr:
    """Stands in for ``sys.stderr``: passes through what the owning thread writes and drops what
    other threads write, until switched off (then it passes everything, so it stays harmless if
    someone else's later swap of ``sys.stderr`` keeps it installed)."""

    def __init__(self, real, owner: threading.Thread):
        self._real, self._owner, self.active = real, owner, True

    def write(self, text):
        if self.active and threading.current_thread() is not self._owner:
            return len(text)
        return self._real.write(text)

    def flush(self):
        if not self.active or threading.current_thread() is self._owner:
            self._real.flush()

    def __getattr__(self, name):  # isatty, fileno, encoding, ...: the real stream's
        return getattr(self._real, name)


@contextlib.contextmanager
def _stderr_for_this_thread_only():
    proxy = _ThreadStderr(sys.stderr, threading.current_thread())
    sys.stderr = proxy
    try:
        yield
    finally:
        proxy.active = False
        if sys.stderr is proxy:
            sys.stderr = proxy._real
