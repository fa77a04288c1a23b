"""Pure planning functions: where each scene's windows lie, how long a short window is padded to,
and how scenes are packed into work units. No I/O, no torch: everything here is unit-tested
exhaustively and deterministic (same input, same plan)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class WindowPlan:
    """How one backend cuts audio, in samples at the backend's rate."""

    window: int    # full window length; every window of a scene longer than this is this long
    hop: int       # distance between window starts (window - overlap); the last start is moved
                   # back so the last window ends exactly at the scene's end (no padding)
    quantum: int   # a scene shorter than ``window`` is padded up to a multiple of this, so short
                   # scenes of similar length share a batch shape without padding to a full window

    def __post_init__(self):
        if self.window <= 0 or self.hop <= 0 or self.quantum <= 0:
            raise ValueError(f"window, hop and quantum must be positive: {self}")
        if self.hop > self.window:
            raise ValueError(f"hop ({self.hop}) longer than the window ({self.window}) leaves gaps")
        if self.quantum > self.window:
            raise ValueError(f"quantum ({self.quantum}) longer than the window ({self.window})")

    @classmethod
    def from_seconds(cls, sample_rate: int, window_s: float, overlap_s: float,
                     quantum_s: float | None = None) -> "WindowPlan":
        window = int(round(window_s * sample_rate))
        hop = window - int(round(overlap_s * sample_rate))
        quantum = int(round((quantum_s if quantum_s else window_s / 8) * sample_rate))
        return cls(window=window, hop=hop, quantum=max(1, min(quantum, window)))


def window_starts(n_samples: int, plan: WindowPlan) -> list[int]:
    """Start offsets of the windows covering ``n_samples``; together they cover every sample."""
    if n_samples <= 0:
        raise ValueError("a scene needs at least one sample")
    if n_samples <= plan.window:
        return [0]
    last = n_samples - plan.window
    starts = list(range(0, last + 1, plan.hop))
    if starts[-1] != last:
        starts.append(last)
    return starts


def padded_length(n_samples: int, plan: WindowPlan) -> int:
    """Length a window of ``n_samples`` real samples is padded to before the forward pass."""
    if n_samples >= plan.window:
        return plan.window
    return min(plan.window, math.ceil(n_samples / plan.quantum) * plan.quantum)


@dataclass(frozen=True)
class SceneWindow:
    """One window of one scene, as the engine batches it."""

    scene: int      # index of the scene in the list being enhanced
    start: int      # first sample of the window in the scene
    length: int     # real samples in the window (<= padded)
    padded: int     # length of the forward input; samples past ``length`` are zeros


def plan_windows(lengths: Sequence[int], plan: WindowPlan) -> list[SceneWindow]:
    """Every window of every scene, in scene order."""
    out = []
    for i, n in enumerate(lengths):
        for s in window_starts(n, plan):
            length = min(plan.window, n - s)
            out.append(SceneWindow(i, s, length, padded_length(length, plan)))
    return out


def group_by_length(windows: Sequence[SceneWindow]) -> dict[int, list[SceneWindow]]:
    """Windows grouped by padded length (only equal lengths can share a forward).

    Groups come in order of first appearance and windows keep their order inside a group, so
    scenes early in the list finish early. The engine cuts batches from the front of each group
    as it goes, because the batch size it can afford changes while it runs (out-of-memory
    halving, regrowth).
    """
    groups: dict[int, list[SceneWindow]] = {}
    for w in windows:
        groups.setdefault(w.padded, []).append(w)
    return groups


@dataclass(frozen=True)
class WorkUnit:
    """Scenes one worker enhances together; a unit is never split across workers."""

    unit_id: int
    scenes: tuple[int, ...]   # scene indices into the run's scene list, in run order
    seconds: float            # total audio duration of those scenes


def pack_units(durations_s: Sequence[float], batch_seconds: float,
               max_scenes: int | None = None, first_id: int = 0) -> list[WorkUnit]:
    """Pack scenes, in run order, into units of at most ``batch_seconds`` of audio.

    Consecutive scenes are grouped until adding the next would pass the budget; a scene longer
    than the budget forms a unit of its own (the engine splits it across forwards). Keeping run
    order means outputs appear steadily from the start, never all at the end.
    """
    if batch_seconds <= 0:
        raise ValueError("batch_seconds must be positive")
    if max_scenes is not None and max_scenes < 1:
        raise ValueError("max_scenes must be at least 1")
    units: list[WorkUnit] = []
    current: list[int] = []
    total = 0.0

    def close():
        nonlocal current, total
        if current:
            units.append(WorkUnit(first_id + len(units), tuple(current), total))
            current, total = [], 0.0

    for i, d in enumerate(durations_s):
        if d < 0 or not math.isfinite(d):
            raise ValueError(f"scene {i} has an invalid duration {d!r}")
        full = max_scenes is not None and len(current) >= max_scenes
        if current and (total + d > batch_seconds or full):
            close()
        current.append(i)
        total += d
        if total >= batch_seconds:
            close()
    close()
    return units
