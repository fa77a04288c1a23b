"""A backend that misbehaves on purpose, for the executor's crash-case tests. It lives with the
tests, not in the product: workers import it as ``fault_injection.backend:FaultyBackend`` (the
tests folder is on their path), through the same public backend contract as any backend.

:class:`FaultyBackend` is the identity backend plus faults chosen per scene by the scene's file
name: ``<anything>_<action>.wav`` triggers ``action`` whenever a window of that scene is in a
forward, ``<anything>_<action>_once.wav`` only the first time (a marker file ``<scene>.fired`` is
written just before, so a retry in a fresh worker succeeds: a transient fault). Actions:

=============  ===================================================================================
``raise``      RuntimeError from the forward (a backend bug on one input)
``oom``        torch.cuda.OutOfMemoryError when the forward holds more than one window
``oomalways``  torch.cuda.OutOfMemoryError on every forward holding the scene (even at batch 1)
``exit``       ``os._exit(3)``: the process ends without reporting
``segv``       a real segmentation fault (reads address 0 through ctypes)
``abort``      ``os.abort()`` (SIGABRT), as native runtimes do on a failed check
``hang``       sleeps forever (for the watchdog)
``killme``     SIGKILL to itself (as the out-of-memory killer would)
``wait``       blocks until a file ``<scene>.go`` exists (lets a test order events without timing)
=============  ===================================================================================

Windows are matched to scenes exactly: the worker calls the backend hook
``observe_scenes(paths, audios)`` before each engine run, and the backend recognises a window by
its first samples (a fingerprint of every offset of every marked scene).

``exit_on_load=True`` makes every worker die while loading (for the runaway-start guard).
``fail_second_load=PATH`` makes exactly the second worker to load raise a RuntimeError, as a
standby's CUDA context that does not fit beside the active worker's batch would (PATH is a small
counter file shared by the workers).
``fake_drift_mib_per_forward`` makes the backend's ``allocator_stats`` report a reserved -
allocated gap that grows by that much with every forward, like a leak, so drift recycling runs
through the real decision path on a CPU.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import time
from pathlib import Path

from whisperjav_enhance.backends.base import WeightsInfo
from whisperjav_enhance.backends.passthrough import PassthroughBackend
from whisperjav_enhance.errors import WeightsError

FAULT_ACTIONS = ("raise", "oom", "oomalways", "exit", "segv", "abort", "hang", "killme", "wait")
_MARKER = re.compile(r"_(" + "|".join(FAULT_ACTIONS) + r")(_once)?$")
FINGERPRINT_SAMPLES = 8      # leading samples that identify a window
WAIT_LIMIT_S = 120.0         # "wait" gives up and carries on after this long (a test went wrong)
EXIT_CODE = 3                # what "exit" exits with
LOAD_EXIT_CODE = 5           # what ``exit_on_load=True`` exits with
_MIB = 1024 * 1024


def fault_of(path: str | os.PathLike) -> tuple[str, bool] | None:
    """``(action, once)`` named by a scene's file name, or None for a well-behaved scene."""
    m = _MARKER.search(Path(path).stem)
    return (m.group(1), bool(m.group(2))) if m else None


def _no_core_dump() -> None:
    """Deliberate crashes must not litter the disk with core files."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except Exception:  # not POSIX, or not permitted: the crash still happens
        pass


class FaultyBackend(PassthroughBackend):
    """Identity backend with per-scene faults (see the module docstring)."""

    name = "faulty"
    uses_torch = True     # injected OOMs are torch's exception type

    def __init__(self, weights: WeightsInfo | None = None, sample_rate: int | None = None,
                 window_seconds: float = 0.1, overlap_seconds: float = 0.025,
                 fake_drift_mib_per_forward: float = 0.0, exit_on_load: bool = False,
                 fail_second_load: str | None = None):
        super().__init__(weights or WeightsInfo(None, "none", False, "identity with injected faults"),
                         sample_rate=sample_rate, window_seconds=window_seconds,
                         overlap_seconds=overlap_seconds)
        self.fake_drift_mib_per_forward = float(fake_drift_mib_per_forward)
        self.exit_on_load = bool(exit_on_load)
        self.fail_second_load = fail_second_load
        self.forwards = 0
        self._fingerprints: dict[bytes, tuple[str, str, bool]] = {}

    @classmethod
    def resolve(cls, weights_path=None, **options) -> "FaultyBackend":
        # A weights path is optional; one that is given must exist (tests a fatal load failure).
        if weights_path is not None and not Path(weights_path).exists():
            raise WeightsError(f"faulty test backend: no weights at {weights_path}; pass an existing "
                               "file or none", (str(weights_path),))
        return cls(**options)

    def load(self, device) -> None:
        if self.exit_on_load:  # a worker that dies while starting (a broken runtime or driver)
            os._exit(LOAD_EXIT_CODE)
        if self.fail_second_load:
            counter = Path(self.fail_second_load)
            loads = int(counter.read_text() or 0) + 1 if counter.exists() else 1
            counter.write_text(str(loads))
            if loads == 2:
                raise RuntimeError("CUDA out of memory while creating the context (injected)")
        super().load(device)

    # -- the worker's hook ---------------------------------------------------------------------
    def observe_scenes(self, paths, audios) -> None:
        self._fingerprints = {}
        for path, audio in zip(paths, audios):
            fault = fault_of(path)
            if fault is None:
                continue
            k = min(FINGERPRINT_SAMPLES, len(audio))
            for s in range(len(audio) - k + 1):
                self._fingerprints[audio[s:s + k].tobytes()] = (fault[0], str(path), fault[1])

    # -- inference ---------------------------------------------------------------------------
    def enhance_windows(self, batch):
        self.forwards += 1
        if self._fingerprints:
            rows = batch[:, :FINGERPRINT_SAMPLES].detach().cpu().numpy()
            for row in rows:
                hit = self._fingerprints.get(row.tobytes())
                if hit is not None:
                    self._act(*hit, batch_size=int(batch.shape[0]))
        return batch.clone()

    def _act(self, action: str, path: str, once: bool, batch_size: int) -> None:
        if action == "oom" and batch_size == 1:
            return
        if once:
            fired = Path(path + ".fired")
            if fired.exists():
                return
            fired.touch()
        if action == "raise":
            raise RuntimeError(f"injected backend failure on {Path(path).name}")
        if action in ("oom", "oomalways"):
            import torch

            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected on {Path(path).name}, "
                                              f"batch of {batch_size})")
        if action == "exit":
            os._exit(EXIT_CODE)
        if action == "segv":
            _no_core_dump()
            ctypes.string_at(0)
        if action == "abort":
            _no_core_dump()
            os.abort()
        if action == "killme":
            os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
            time.sleep(60)  # the signal is asynchronous; never carry on past it
        if action == "hang":
            while True:
                time.sleep(1)
        if action == "wait":
            go, deadline = Path(path + ".go"), time.monotonic() + WAIT_LIMIT_S
            while not go.exists() and time.monotonic() < deadline:
                time.sleep(0.02)

    # -- injected telemetry -------------------------------------------------------------------
    def allocator_stats(self, device) -> dict | None:
        if not self.fake_drift_mib_per_forward:
            return super().allocator_stats(device)
        allocated = 100 * _MIB
        drift = int(self.fake_drift_mib_per_forward * self.forwards * _MIB)
        return {"allocated_bytes.all.current": allocated,
                "reserved_bytes.all.current": allocated + drift,
                "inactive_split_bytes.all.current": 0,
                "reserved_bytes.all.peak": allocated + drift,
                "num_alloc_retries": 0, "num_ooms": 0}
