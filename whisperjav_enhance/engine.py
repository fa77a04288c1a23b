"""The batched, bounded-memory enhancement engine a worker runs.

Scenes of any length are cut into fixed windows (lazy views, nothing copied until a batch is
built); windows of equal padded length from many scenes go through the network together, under
``torch.inference_mode``; outputs are overlap-added on the CPU with a triangular weight window and
a running weight sum, exactly as long as the inputs. Device memory therefore depends on the batch
and the window, never on the scene length. A batch that does not fit is halved and retried; the
halved size holds for that window length until ``REGROW_AFTER_FORWARDS`` forwards at it succeed,
then the engine tries twice as many again (an OOM is often transient: a standby worker loading,
another process on the card), waiting twice as long after every further OOM at that length.

    scenes (np, CPU) --plan_windows--> windows --group_by_length--> [B, T] on device
        --backend.enhance_windows--> [B, T] --.cpu()--> out += y * w ; wsum += w --> out / wsum
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from .backends.base import Backend
from .devices import is_cuda
from .errors import SceneError
from .status import Reason
from .planning import SceneWindow, WindowPlan, group_by_length, plan_windows

# Upper bound on windows per forward when no budget limits it: past this, MossFormer2 on an H100
# gains <10% (docs/measurements.md: 4 s windows, 1,150 -> 1,241 audio s/s at batch 128, for
# nearly twice the memory) while latency per batch keeps growing.
MAX_BATCH_WINDOWS = 64
# On the CPU a bigger batch buys nothing (compute-bound from batch 1) and costs RAM.
CPU_MAX_BATCH_WINDOWS = 4
# Exponent applied to the triangular overlap-add weight; higher = sharper cross-fades.
TRANSITION_POWER = 1.0
# Successful forwards at an OOM-halved batch size before the engine tries twice that size again
# (doubled after every further OOM at the same window length, so a card that really is full
# costs a handful of failed forwards over a worker's life, not one every few seconds).
REGROW_AFTER_FORWARDS = 32


class EngineOutOfMemory(SceneError):
    """A single window did not fit on the device even at batch size 1."""

    def __init__(self, scenes: Sequence[int], message: str):
        self.scenes = tuple(scenes)
        super().__init__(Reason.OUT_OF_MEMORY, message)


@dataclass
class EngineStats:
    """Counters a worker reports as telemetry."""

    forwards: int = 0                  # network calls made
    windows: int = 0                   # windows enhanced
    oom_events: int = 0                # forwards that ran out of memory (then retried smaller)
    batch_by_length: dict = field(default_factory=dict)  # padded samples -> batch size in use


@dataclass
class _Shrunk:
    """Batch limit for one window length after an out-of-memory error."""

    cap: int          # largest batch allowed now
    needed: int       # successful forwards at ``cap`` before ``cap`` is doubled
    streak: int = 0   # successful forwards at ``cap`` so far


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a device (or host allocator) out-of-memory error from torch."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and ("out of memory" in str(exc).lower()
                                              or "can't allocate memory" in str(exc).lower())


def overlap_weight(length: int) -> np.ndarray:
    """Triangular weight that never reaches zero, so every sample has a positive weight sum."""
    half = length // 2
    w = np.concatenate([np.arange(1, half + 1), np.arange(length - half, 0, -1)]).astype(np.float32)
    return (w / w.max()) ** TRANSITION_POWER


class Engine:
    """Enhances lists of scenes with one loaded backend.

    ``budget_bytes`` bounds what one forward may need above the weights (from the backend's
    memory model); None means no budget (CPU, or the caller trusts ``max_batch``). ``plan``
    replaces the window plan made from the backend's window and overlap (benchmarks use one
    window longer than any scene to measure whole-scene forwards).
    """

    def __init__(self, backend: Backend, budget_bytes: int | None = None,
                 max_batch: int | None = None, plan: WindowPlan | None = None):
        self.backend = backend
        self.budget_bytes = budget_bytes
        self.max_batch = max_batch
        self.stats = EngineStats()
        self._shrunk: dict[int, _Shrunk] = {}  # padded length -> limit after an OOM there
        if backend.windowed:
            self.plan = plan or WindowPlan.from_seconds(backend.sample_rate, backend.window_seconds,
                                                        backend.overlap_seconds)

    # -- batch sizing --------------------------------------------------------------------------
    def _on_cuda(self) -> bool:
        return is_cuda(self.backend.device)

    def _cap(self) -> int:
        if self.max_batch:
            return self.max_batch
        return MAX_BATCH_WINDOWS if self._on_cuda() else CPU_MAX_BATCH_WINDOWS

    def batch_for_length(self, padded: int) -> int:
        """Largest batch of ``padded``-sample windows that fits the budget (at least 1)."""
        shrunk = self._shrunk.get(padded)
        b = min(self._cap(), shrunk.cap if shrunk else self._cap())
        if self.budget_bytes is not None:
            while b > 1 and self.backend.vram_bytes(b, padded) > self.budget_bytes:
                b -= 1 if b <= 8 else max(1, b // 8)
        self.stats.batch_by_length[padded] = max(1, b)
        return max(1, b)

    # -- running ---------------------------------------------------------------------------
    def run(self, audios: Sequence[np.ndarray]) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, enhanced)`` for each scene as soon as its last window is done.

        Raises :class:`EngineOutOfMemory` if a window does not fit even alone; scenes yielded
        before that are complete. Other exceptions from the backend propagate unchanged.
        """
        if not self.backend.windowed:
            for i, a in enumerate(audios):
                yield i, self._check_length(self._whole_scene(i, a), a)
            return
        lengths = [int(a.shape[0]) for a in audios]
        windows = plan_windows(lengths, self.plan)
        remaining = [0] * len(audios)
        for w in windows:
            remaining[w.scene] += 1
        out = [np.zeros(n, dtype=np.float32) for n in lengths]
        wsum = [np.zeros(n, dtype=np.float32) for n in lengths]
        single = [r == 1 for r in remaining]
        weight = overlap_weight(self.plan.window)
        for padded, group in group_by_length(windows).items():
            queue = deque(group)
            while queue:
                size = min(self.batch_for_length(padded), len(queue))
                batch = [queue.popleft() for _ in range(size)]
                y = self._forward_or_shrink(batch, audios)
                if y is None:  # out of memory: the same windows again, in smaller batches
                    queue.extendleft(reversed(batch))
                    continue
                for row, w in enumerate(batch):
                    wt = np.float32(1.0) if single[w.scene] else weight[:w.length]
                    out[w.scene][w.start:w.start + w.length] += y[row, :w.length] * wt
                    wsum[w.scene][w.start:w.start + w.length] += wt
                    remaining[w.scene] -= 1
                    if remaining[w.scene] == 0:
                        result = out[w.scene] / wsum[w.scene]
                        out[w.scene] = wsum[w.scene] = None  # free the scene's buffers at once
                        yield w.scene, result

    def _forward_or_shrink(self, batch: list[SceneWindow], audios) -> np.ndarray | None:
        """The batch's output, or None after an OOM (the batch limit for its length is halved).

        Raises :class:`EngineOutOfMemory` when a single window does not fit.
        """
        if not self.backend.uses_torch:  # numpy in, numpy out: no device, no OOM to halve
            return self._forward_numpy(batch, audios)
        import torch

        try:
            # Entered per batch, not around the loop: ``run`` is a generator, and a mode held
            # across ``yield`` would leak into the caller's code.
            with torch.inference_mode():
                y = self._forward(batch, audios)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        else:
            self._note_success(batch)
            return y
        # Handled here, not in the except block: the exception's traceback holds the failed
        # forward's frames and their device tensors until the block ends, and empty_cache
        # cannot give back memory that is still referenced.
        self._shrink_after_oom(batch, error)
        return None

    @staticmethod
    def _batch_into(x: np.ndarray, batch: list[SceneWindow], audios) -> None:
        """Copy the batch's windows into the rows of ``x`` (zeros past each window's length)."""
        for row, w in enumerate(batch):
            x[row, :w.length] = audios[w.scene][w.start:w.start + w.length]

    def _forward_numpy(self, batch: list[SceneWindow], audios) -> np.ndarray:
        x = np.zeros((len(batch), batch[0].padded), dtype=np.float32)
        self._batch_into(x, batch, audios)
        y = np.asarray(self.backend.enhance_windows(x), dtype=np.float32)
        assert y.shape == x.shape, f"{self.backend.name} returned {y.shape} for {x.shape}"
        self.stats.forwards += 1
        self.stats.windows += len(batch)
        return y

    def _forward(self, batch: list[SceneWindow], audios) -> np.ndarray:
        import torch

        # Staged in page-locked memory on CUDA: the copy then runs asynchronously while the CPU
        # launches the network's kernels (a forward is launch-bound, docs/measurements.md), and at
        # full PCIe speed. From pageable memory ``non_blocking`` would silently block.
        # PyTorch's caching host allocator reuses the pinned blocks across batches.
        host = torch.zeros((len(batch), batch[0].padded), dtype=torch.float32,
                           pin_memory=self._on_cuda())
        self._batch_into(host.numpy(), batch, audios)
        xt = host.to(self.backend.device, non_blocking=True)
        yt = self.backend.enhance_windows(xt)
        if tuple(yt.shape) != tuple(xt.shape):
            raise RuntimeError(f"{self.backend.name} returned shape {tuple(yt.shape)} for input "
                               f"{tuple(xt.shape)}")
        y = yt.float().cpu().numpy()  # a synchronising copy: the result is needed at once
        del host, xt, yt
        self.stats.forwards += 1
        self.stats.windows += len(batch)
        return y

    def _note_success(self, batch: list[SceneWindow]) -> None:
        shrunk = self._shrunk.get(batch[0].padded)
        if shrunk is None or len(batch) < shrunk.cap or shrunk.cap >= self._cap():
            return  # only a full batch at the reduced limit says the limit may be too low
        shrunk.streak += 1
        if shrunk.streak >= shrunk.needed:
            shrunk.cap, shrunk.streak = 2 * shrunk.cap, 0

    def _shrink_after_oom(self, batch: list[SceneWindow], error: str) -> None:
        import torch

        self.stats.oom_events += 1
        if self._on_cuda():
            torch.cuda.empty_cache()
        padded = batch[0].padded
        if len(batch) == 1:
            raise EngineOutOfMemory(
                [batch[0].scene], f"one {padded / self.backend.sample_rate:.1f} s window does not "
                f"fit in device memory ({error}); use shorter windows (--window-seconds), a "
                f"larger --vram-budget-gb, or free the GPU of other work")
        previous = self._shrunk.get(padded)
        needed = REGROW_AFTER_FORWARDS if previous is None else 2 * previous.needed
        self._shrunk[padded] = _Shrunk(cap=len(batch) // 2, needed=needed)
        self.stats.batch_by_length[padded] = len(batch) // 2

    def _whole_scene(self, i: int, audio: np.ndarray) -> np.ndarray:
        """A whole-scene backend's output; running out of memory on it is the scene's
        EngineOutOfMemory (nothing smaller to try here: a fresh worker may have the room)."""
        try:
            return self.backend.enhance_scene(audio)
        except Exception as exc:
            if not (self.backend.uses_torch and is_out_of_memory(exc)):
                raise
            error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        self.stats.oom_events += 1
        raise EngineOutOfMemory([i], f"the whole scene does not fit in memory ({error}); free the "
                                "GPU of other work or use a larger --vram-budget-gb")

    @staticmethod
    def _check_length(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        if y.shape[0] != x.shape[0]:
            raise RuntimeError(f"backend returned {y.shape[0]} samples for {x.shape[0]}")
        return y
