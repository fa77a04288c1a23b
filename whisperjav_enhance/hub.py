"""Weights on first use: when a backend's weights are nowhere to be found and downloading is
allowed, fetch them once, in the calling process, before any worker starts.

    ensure_weights("mossformer2", options.weights, on_event, allow_download=options.download)

- Only the miss a download can cure triggers one (:class:`weights.WeightsNotFound`: no explicit
  path, no environment variable, nothing in any standard place). A bad explicit path, a damaged
  file or ``auto`` never download.
- One download at a time per repository and cache, across processes: an OS lock in the cache
  (:func:`locking.hold`) names its holder; a second run says whom it waits for, waits, and then
  finds the weights without downloading anything.
- Nothing that looks complete after an interruption: the hub clients write partial files under
  ``*.incomplete`` names and move them into place only when whole (see :mod:`hub_clients`), and a
  folder is only usable once every file the backend needs is there.
- Afterwards the backend's own strict load (``torch.load(weights_only=True)``, exact keys and
  shapes) must accept the files, or the result is a :class:`WeightsError` naming them.
- ``allow_download=False`` (``--no-download``) and the hubs' offline switches keep the plain
  missing-weights error, which then says that the download was not attempted and why.

Progress leaves as events (DownloadStarted, DownloadProgress, DownloadFinished, Log).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from .errors import (BackendUnavailable, ConfigError, EnhanceError, WeightsError, first_line,
                     one_line)
from .events import DownloadFinished, DownloadStarted, Log
from .locking import LockBusy, describe_holder, hold
from .weights import (HUGGINGFACE, SOURCES, WeightsNotFound, WeightsSource, how_to_get,
                      manual_download_hint)

log = logging.getLogger(__name__)

# How long a run waits for another process that is downloading the same weights. The largest
# checkpoint (MossFormer2, ~220 MB) takes minutes on a slow link; a holder that dies releases the
# OS lock at once, so a long wait never outlives a dead download.
LOCK_WAIT_S = 3600.0
# Values the Hugging Face client reads as "on" for its offline switches (its constants._is_true).
_TRUE = {"1", "ON", "YES", "TRUE"}


def ensure_weights(backend: str, weights_path=None, on_event: Callable | None = None,
                   allow_download: bool = True, *, lock_wait_s: float = LOCK_WAIT_S) -> None:
    """Make ``backend``'s weights resolvable, downloading them if they are missing and may be.

    A no-op when the backend resolves already, for ``auto`` (it picks from what is present) and
    for backends without downloadable weights. Otherwise: WeightsError when the download is not
    allowed, fails, or gives files the backend refuses; BackendUnavailable when the backend's
    packages are missing. Safe in the parent process: CUDA is never touched.
    """
    from .backends import backend_class, parse_backend_spec

    name = parse_backend_spec(backend)
    if name == "auto":
        return
    source = SOURCES.get(name)
    if source is None:
        return  # nothing to download: the run's own search reports a miss
    emit = on_event or (lambda event: None)
    cls = backend_class(name)
    try:
        cls.resolve(weights_path)
        return
    except WeightsNotFound as exc:
        miss = exc
    blocked = download_blocked(source, allow_download)
    if blocked:
        raise WeightsError(f"no {source.title} weights found, and the download was not "
                           f"attempted: {blocked}. {how_to_get(name)} {manual_download_hint(name)}",
                           miss.searched)
    with _download_lock(source, emit, lock_wait_s):
        try:
            cls.resolve(weights_path)
            emit(Log(f"{name}: the weights were downloaded by the other process; using them"))
            return
        except WeightsNotFound:
            pass
        _fetch_and_verify(name, cls, source, emit)
    try:
        cls.resolve(weights_path)
    except WeightsNotFound as exc:  # only if the caches moved while we downloaded
        raise WeightsError(f"{name}: the weights were downloaded into {source.cache()}, but the "
                           f"search does not find them there. {how_to_get(name)}",
                           exc.searched) from exc


def fetch(backend: str, on_event: Callable | None = None, *,
          lock_wait_s: float = LOCK_WAIT_S) -> Path | None:
    """Download ``backend``'s weights into the hub cache now (``models --download``), whether or
    not they resolve already (the hub client skips files it has complete), and check them with
    the backend's strict load. Returns their folder; None for backends with nothing to download."""
    from .backends import backend_class, parse_backend_spec

    name = parse_backend_spec(backend)
    if name == "auto":
        raise ConfigError("models --download needs a backend name, not auto")
    source = SOURCES.get(name)
    if source is None:
        return None
    emit = on_event or (lambda event: None)
    cls = backend_class(name)
    blocked = download_blocked(source, True)
    if blocked:
        raise WeightsError(f"{name}: the download of {source.repo_id} was not attempted: "
                           f"{blocked}. {manual_download_hint(name)}")
    with _download_lock(source, emit, lock_wait_s):
        return _fetch_and_verify(name, cls, source, emit)


def download_blocked(source: WeightsSource, allow_download: bool) -> str | None:
    """Why ``source`` may not be downloaded here and now (a clause naming the way out), or None."""
    if not allow_download:
        return "downloads are turned off (--no-download, or download=False in the options)"
    if source.hub == HUGGINGFACE:
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            if (os.environ.get(var) or "").upper() in _TRUE:
                return f"{var}={os.environ[var]} is set (the Hugging Face client's offline switch)"
        constants = sys.modules.get("huggingface_hub.constants")  # read when it was imported
        if constants is not None and getattr(constants, "HF_HUB_OFFLINE", False):
            return ("the Hugging Face client was imported with HF_HUB_OFFLINE set (its offline "
                    "switch)")
        if importlib.util.find_spec("huggingface_hub") is None:
            return "huggingface_hub is not installed (`pip install huggingface_hub`)"
        return None
    # ModelScope's client has no offline switch of its own: only the package can be missing.
    if importlib.util.find_spec("modelscope") is None:
        return "modelscope is not installed (`pip install modelscope`)"
    return None


# -- the download itself --------------------------------------------------------------------------
def lock_path(source: WeightsSource) -> Path:
    """The lock file guarding downloads of ``source`` into its cache (inside the hub's own lock
    folder, which the hubs' cache tools skip)."""
    owner, repo = source.repo_id.split("/")
    return source.cache() / ".locks" / f"whisperjav-enhance--{owner}--{repo}.lock"


@contextlib.contextmanager
def _download_lock(source: WeightsSource, emit: Callable, wait_s: float):
    """Hold the per-repository cross-process lock, saying whom we wait for if it is taken."""
    path = lock_path(source)
    purpose = f"downloading {source.repo_id}"
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(hold(path, purpose, wait_s=0))
        except OSError as exc:
            raise WeightsError(f"{source.backend}: cannot download into {source.cache()}: "
                               f"{exc.strerror or exc} ({path}). Make the cache folder writable "
                               f"or point the hub's cache variable elsewhere. "
                               + manual_download_hint(source.backend)) from exc
        except LockBusy as busy:
            emit(Log(f"waiting for {describe_holder(busy.holder)} to finish downloading "
                     f"{source.repo_id} (lock {path})"))
            try:
                stack.enter_context(hold(path, purpose, wait_s=wait_s))
            except LockBusy as still:
                raise WeightsError(f"{source.backend}: gave up waiting after {wait_s:g} s: "
                                   f"{still}") from still
        yield


def _fetch_and_verify(name: str, cls, source: WeightsSource, emit: Callable) -> Path:
    """Fetch with the hub client, then load with the backend's strict loader; events around it."""
    from .hub_clients import fetch_files

    cache = source.cache()
    started = time.monotonic()
    emit(DownloadStarted(name, source.hub, source.repo_id, tuple(source.files), str(cache)))
    log.debug("downloading %s from %s into %s", source.repo_id, source.hub, cache)
    try:
        try:
            folder = fetch_files(source, cache, emit)
        except ImportError as exc:
            raise BackendUnavailable(f"{name}: downloading needs {_client_package(source)} "
                                     f"({exc}); `pip install {_client_package(source)}`. "
                                     + manual_download_hint(name)) from exc
        except EnhanceError:
            raise
        except Exception as exc:  # every client failure: network, HTTP, size or hash mismatch
            raise WeightsError(f"{name}: could not download {source.repo_id} from {source.hub} "
                               f"({_describe(exc)}). Nothing was kept that could be taken for "
                               f"weights; run again to retry. "
                               + manual_download_hint(name)) from exc
        _verify(name, cls, source, folder)
    except BaseException as exc:
        emit(DownloadFinished(name, False, None, time.monotonic() - started,
                              first_line(exc)))
        raise
    emit(DownloadFinished(name, True, str(folder), time.monotonic() - started))
    return folder


def _verify(name: str, cls, source: WeightsSource, folder: Path) -> None:
    """The backend's own resolve and strict ``weights_only`` load of what arrived, on the CPU, in
    a short child process: this process (the run's parent) never imports torch."""
    try:
        done = subprocess.run([sys.executable, "-c", _VERIFY_SCRIPT, name, str(folder)],
                              capture_output=True, text=True, timeout=VERIFY_TIMEOUT_S,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    except (OSError, subprocess.SubprocessError) as exc:
        raise WeightsError(f"{name}: downloaded {source.repo_id} into {folder}, but could not "
                           f"check it ({first_line(exc)}); the run's workers will") from exc
    if done.returncode == _VERIFY_REFUSED:
        refused = json.loads(done.stdout.strip().splitlines()[-1])
        raise WeightsError(f"{name}: downloaded {source.repo_id} from {source.hub} into {folder}, "
                           f"but the backend refuses it: {refused['message']}",
                           tuple(refused["searched"]))
    if done.returncode != 0:
        raise WeightsError(f"{name}: downloaded {source.repo_id} into {folder}, but checking it "
                           f"failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")


# Checks a download in a child process (see _verify): exit _VERIFY_REFUSED with the refusal as
# one JSON line when the backend's strict load refuses it.
VERIFY_TIMEOUT_S = 600.0
_VERIFY_REFUSED = 3
_VERIFY_SCRIPT = (
    "import json, sys\n"
    "from whisperjav_enhance.backends import backend_class\n"
    "from whisperjav_enhance.errors import WeightsError\n"
    "try:\n"
    "    b = backend_class(sys.argv[1]).resolve(sys.argv[2]); b.load('cpu'); b.close()\n"
    "except WeightsError as exc:\n"
    "    print(json.dumps({'message': str(exc).split('\\nSearched:')[0],\n"
    "                      'searched': list(exc.searched)}))\n"
    f"    sys.exit({_VERIFY_REFUSED})\n")


def _client_package(source: WeightsSource) -> str:
    return "huggingface_hub" if source.hub == HUGGINGFACE else "modelscope"


def _describe(exc: BaseException) -> str:
    """One line about a client's exception, with the first failed file of a ModelScope batch."""
    failed = getattr(exc, "failed_files", None)  # ModelScope's batch error only
    if isinstance(failed, dict) and failed:
        path, inner = next(iter(failed.items()))
        return f"{path}: {_describe(inner)}"
    return one_line(exc)


__all__ = ["ensure_weights", "fetch", "download_blocked", "LOCK_WAIT_S"]
