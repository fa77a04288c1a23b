"""When to start warm standbys: replacements that load while the active worker still works, so a
recycle costs little (a start is ~6 s with a model on a GPU, ~3 s here on the CPU). Pure decisions
over the driver's records; the driver starts what these functions ask for."""

from __future__ import annotations

import math
from typing import Sequence

from ..config import PoolPolicy
from .telemetry import MIB, MemorySnapshot
from .workers import Lane, State

# A standby must be spawned this many start-up times before the worker it replaces is expected to
# retire (start-up times vary by a few tens of percent with disk and GPU load).
STANDBY_LEAD = 1.5
# ... or when a drift measure passes this fraction of its limit (drift is not predictable).
STANDBY_AT_FRACTION = 0.75


def near_drift_limit(m: MemorySnapshot, p: PoolPolicy) -> bool:
    """Whether an allocator measure is close enough to its limit that a retirement may come next."""
    f = STANDBY_AT_FRACTION
    return ((m.drift_bytes is not None and m.drift_bytes > f * p.max_drift_mb * MIB)
            or (m.inactive_split_bytes is not None
                and m.inactive_split_bytes > f * p.max_inactive_split_mb * MIB)
            or (m.alloc_retries is not None and m.alloc_retries >= f * p.max_alloc_retries))


def standbys_wanted(lane: Lane, p: PoolPolicy, queued_jobs: int, queued_scenes: int,
                    startup_seconds: Sequence[float]) -> int:
    """How many replacements should be loading now on ``lane``, so each is ready when its
    predecessor retires and no more than the remaining work will use."""
    w = lane.active
    if not p.warm_standby or w is None or w.state is State.STARTING or not queued_jobs:
        return 0
    left = p.max_scenes_per_worker - w.scenes_done - len(w.open)  # scenes before w retires
    successors = math.ceil(max(0, queued_scenes - max(0, left)) / p.max_scenes_per_worker)
    imminent = (w.job is not None and left <= 0) or (
        w.memory is not None and near_drift_limit(w.memory, p))
    if imminent:
        successors = max(successors, 1)
    if not successors:
        return 0  # the run ends before this worker retires
    depth = 1 if imminent else 0
    if w.scenes_done and startup_seconds:
        # Standby k takes over about (k - 1) worker lives after this worker retires; spawn it
        # once that is less than STANDBY_LEAD start-ups away.
        per_scene = w.busy_s / w.scenes_done
        lead = STANDBY_LEAD * max(startup_seconds) - max(0, left) * per_scene
        life = max(p.max_scenes_per_worker * per_scene, 1e-6)
        if lead >= 0:
            depth = max(depth, int(lead // life) + 1)
    return min(depth, successors, p.max_standby_workers)


def spare_jobs(lanes: Sequence[Lane], queued_jobs: int) -> int:
    """Queued jobs no started worker will take: the most standbys worth starting now.

    Each lane asks for its own successors from the whole queue, so near the end of a run every
    lane could start one for the same last job; a standby beyond this could only load (~6 s, ~1 GiB
    of the card) and be stopped unused."""
    return queued_jobs - sum(len(lane.standbys) + (lane.active is not None and lane.active.job is None)
                             for lane in lanes)


__all__ = ["standbys_wanted", "spare_jobs", "near_drift_limit", "STANDBY_LEAD",
           "STANDBY_AT_FRACTION"]
