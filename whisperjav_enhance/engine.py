"""The batched, bounded-memory enhancement engine a worker runs.

Scenes of any length are cut into fixed windows (lazy views, nothing copied until a batch is
built); windows of equal padded length from many scenes go through the network together, under
``torch.inference_mode``; outputs are overlap-added on the CPU with a triangular weight window and
a running weight sum, exactly as long as the inputs. Device memory therefore depends on the batch
and the window, never on the scene length, and a batch that does not fit is halved and retried.

    scenes (np, CPU) --plan_windows--> windows --group_batches--> [B, T] on device
        --backend.enhance_windows--> [B, T] --.cpu()--> out += y * w ; wsum += w --> out / wsum
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from .backends.base import Backend
from .errors import SceneError
from .planning import SceneWindow, WindowPlan, group_batches, plan_windows

# Upper bound on windows per forward when no budget limits it: past this, MossFormer2 on an H100
# gains <5% (MEASUREMENTS.md) while latency per batch keeps growing.
MAX_BATCH_WINDOWS = 64
# On the CPU a bigger batch buys nothing (compute-bound from batch 1) and costs RAM.
CPU_MAX_BATCH_WINDOWS = 4
# Exponent applied to the triangular overlap-add weight; higher = sharper cross-fades.
TRANSITION_POWER = 1.0


class EngineOutOfMemory(SceneError):
    """A single window did not fit on the device even at batch size 1."""

    def __init__(self, scenes: Sequence[int], message: str):
        self.scenes = tuple(scenes)
        super().__init__("out_of_memory", message)


@dataclass
class EngineStats:
    """Counters a worker reports as telemetry."""

    forwards: int = 0                  # network calls made
    windows: int = 0                   # windows enhanced
    oom_events: int = 0                # forwards that ran out of memory (then retried smaller)
    batch_by_length: dict = field(default_factory=dict)  # padded samples -> batch size in use


def _is_oom(exc: BaseException) -> bool:
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
    memory model); None means no budget (CPU, or the caller trusts ``max_batch``).
    """

    def __init__(self, backend: Backend, budget_bytes: int | None = None,
                 max_batch: int | None = None):
        self.backend = backend
        self.budget_bytes = budget_bytes
        self.max_batch = max_batch
        self.stats = EngineStats()
        self._oom_cap: dict[int, int] = {}  # padded length -> largest batch known to fit
        if backend.windowed:
            self.plan = WindowPlan.from_seconds(backend.sample_rate, backend.window_seconds,
                                                backend.overlap_seconds)

    # -- batch sizing --------------------------------------------------------------------------
    def _cap(self) -> int:
        if self.max_batch:
            return self.max_batch
        dev = getattr(self.backend, "device", None)
        on_cpu = dev is None or getattr(dev, "type", str(dev)) == "cpu"
        return CPU_MAX_BATCH_WINDOWS if on_cpu else MAX_BATCH_WINDOWS

    def batch_for_length(self, padded: int) -> int:
        """Largest batch of ``padded``-sample windows that fits the budget (at least 1)."""
        b = min(self._cap(), self._oom_cap.get(padded, 1 << 30))
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
                yield i, self._check_length(self.backend.enhance_scene(a), a)
            return
        import torch

        lengths = [int(a.shape[0]) for a in audios]
        windows = plan_windows(lengths, self.plan)
        remaining = [0] * len(audios)
        for w in windows:
            remaining[w.scene] += 1
        out = [np.zeros(n, dtype=np.float32) for n in lengths]
        wsum = [np.zeros(n, dtype=np.float32) for n in lengths]
        single = [r == 1 for r in remaining]
        pending = list(group_batches(windows, self.batch_for_length))
        weight = overlap_weight(self.plan.window)
        while pending:
            batch = pending.pop(0)
            try:
                # Entered per batch, not around the loop: this is a generator, and a mode held
                # across ``yield`` would leak into the caller's code.
                with torch.inference_mode():
                    y = self._forward(batch, audios)
            except Exception as exc:
                if not _is_oom(exc):
                    raise
                pending[:0] = self._split_after_oom(batch, exc)
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

    def _forward(self, batch: list[SceneWindow], audios) -> np.ndarray:
        import torch

        padded = batch[0].padded
        x = np.zeros((len(batch), padded), dtype=np.float32)
        for row, w in enumerate(batch):
            x[row, :w.length] = audios[w.scene][w.start:w.start + w.length]
        xt = torch.from_numpy(x).to(self.backend.device, non_blocking=True)
        yt = self.backend.enhance_windows(xt)
        if tuple(yt.shape) != tuple(xt.shape):
            raise RuntimeError(f"{self.backend.name} returned shape {tuple(yt.shape)} for input "
                               f"{tuple(xt.shape)}")
        y = yt.float().cpu().numpy()
        del xt, yt
        self.stats.forwards += 1
        self.stats.windows += len(batch)
        return y

    def _split_after_oom(self, batch: list[SceneWindow], exc: BaseException) -> list[list[SceneWindow]]:
        import torch

        self.stats.oom_events += 1
        if torch.cuda.is_available() and getattr(self.backend.device, "type", "") == "cuda":
            torch.cuda.empty_cache()
        if len(batch) == 1:
            w = batch[0]
            raise EngineOutOfMemory([w.scene], f"one {w.padded / self.backend.sample_rate:.1f} s "
                                    f"window does not fit in device memory ({str(exc).splitlines()[0]})") from exc
        half = len(batch) // 2
        self._oom_cap[batch[0].padded] = half
        self.stats.batch_by_length[batch[0].padded] = half
        return [batch[:half], batch[half:]]

    @staticmethod
    def _check_length(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        if y.shape[0] != x.shape[0]:
            raise RuntimeError(f"backend returned {y.shape[0]} samples for {x.shape[0]}")
        return y
