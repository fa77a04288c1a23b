"""What the GPU acceptance runs, how big, and the time it may take.

The real run must finish in under 8 minutes on one H200 including start-up (a device lease is 15
minutes, so a run must fit twice). Every section has an estimate, written down here from the
measurements on an H100 (docs/measurements.md: ~100 ms per MossFormer2 forward however short,
~1,000-1,300 audio s/s batched, ~150 audio s/s for ZipEnhancer, ~6 s per worker start) plus I/O;
the sizes are chosen so the estimates sum to under the default budget. The :class:`Budget` then
guards the estimates with the clock: a section that would end past the budget is skipped with
the reason instead of overrunning.

``--smoke`` runs the same sections and code paths on the CPU with tiny sizes, in under 2 minutes
on a 2-core machine (CI runs it): its numbers prove the script, never a criterion.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .. import scaling

# The default budget of the real run (s): 8 minutes less ~50 s for installing the carried wheels,
# starting Python and writing the report.
FULL_BUDGET_S = 430.0
# The smoke run takes about a minute on a quiet 2-core machine; its guard is looser so a busy CI
# machine still runs every section (the smoke run proves code paths, not speed).
SMOKE_BUDGET_S = 240.0
VRAM_CAP_GB = 8.0              # the card the subtitle pipeline's users have
RECYCLE_EVERY = 25             # scenes per worker in the recycle-cost run


@dataclass(frozen=True)
class Plan:
    """Sizes and time estimates of one acceptance run."""

    mode: str                      # "full" (CUDA: the criteria) or "smoke" (CPU: the code paths)
    device: str                    # "cuda" or "cpu": where the networks and workers run
    budget_s: float                # sections that would end later are skipped with the reason
    agreement: dict                # backend -> (windows, seconds per window) compared CPU/device
    memory_model_batch: int        # windows in the forward checked against vram_bytes (CUDA)
    scaling_lengths: dict          # backend -> scene lengths (s) of the memory-flatness check
    scaling_batch: int             # windows per forward in the memory-flatness check
    speed_windows: int             # windows timed in the batch-speed check
    speed_batches: tuple           # windows per forward compared (first is the baseline)
    windows: dict                  # backend -> window/overlap overrides (smoke shrinks them)
    film_set: str                  # scenesets name of the film-sized set
    film_backend: str              # backend of the MossFormer2 film sections
    per_scene_every: int           # the slow per-scene strategies take every n-th scene (+ long)
    recycle_first: int | None      # the recycle-cost run takes the first n scenes (None: all)
    recycle_every: int             # scenes per worker in the recycle-cost run
    recycle_standbys: int | None   # warm standbys at most in that run (None: the policy's)
    zip_set: str                   # scenesets name of the ZipEnhancer film section
    vram_cap_gb: float | None      # per-process allocator cap (CUDA only)
    estimates: dict = field(default_factory=dict)  # section -> estimated seconds

    def __post_init__(self):
        if self.mode not in ("full", "smoke"):
            raise ValueError(f"mode must be full or smoke, not {self.mode!r}")
        assert self.per_scene_every >= 1 and self.recycle_every >= 1

    @property
    def estimated_total_s(self) -> float:
        return float(sum(self.estimates.values()))


# Section names, in the order they run: the criteria first, the comparisons last, so a run that
# is short of time loses the comparisons, not the criteria.
SECTIONS = ("agreement-mossformer2", "agreement-zipenhancer", "scaling-mossformer2",
            "scaling-zipenhancer", "film-write", "film-pool-batched", "film-recycle",
            "film-zipenhancer", "film-pool-per-scene", "film-inprocess", "film-upstream")


def full_plan(budget_s: float | None = None, standbys: int | None = None) -> Plan:
    """The real run on one CUDA device (sizes from the criteria; estimates for an H200)."""
    return Plan(
        mode="full", device="cuda", budget_s=budget_s or FULL_BUDGET_S,
        agreement={"mossformer2": (2, 1.0), "zipenhancer": (1, 0.5)}, memory_model_batch=8,
        scaling_lengths={"mossformer2": (30.0, 60.0, 222.0), "zipenhancer": (30.0, 60.0, 222.0)},
        scaling_batch=scaling.FIXED_BATCH, speed_windows=64, speed_batches=(1, 32), windows={},
        film_set="film", film_backend="mossformer2", per_scene_every=4, recycle_first=150,
        recycle_every=RECYCLE_EVERY, recycle_standbys=standbys, zip_set="film",
        vram_cap_gb=VRAM_CAP_GB,
        estimates={
            "agreement-mossformer2": 25,   # random weights written, CPU and CUDA loads, 2 windows
            "agreement-zipenhancer": 15,
            "scaling-mossformer2": 25,     # 312 s of audio at batch 8 + 64 windows at batch 1
            "scaling-zipenhancer": 25,     # the same at ~150 audio s/s
            "film-write": 25,              # 700 WAVs, 7,200 s at 48 kHz (~690 MB)
            "film-pool-batched": 45,       # start ~8 s + 7,200 s at ~1,000 audio s/s + I/O
            "film-recycle": 45,            # 150 scenes, 6 workers: each start ~6 s
            "film-zipenhancer": 75,        # 7,200 s at ~150 audio s/s + start
            "film-pool-per-scene": 40,     # ~178 scenes x ~0.15 s (one forward per scene) + start
            "film-inprocess": 35,          # the same scenes, whole scene per forward
            "film-upstream": 40,           # the same scenes with autograd (long ones fail OOM)
        })


def smoke_plan(budget_s: float | None = None, standbys: int | None = None) -> Plan:
    """The same sections on the CPU with tiny sizes (CI): proves the code paths only. The film
    sections run the passthrough backend (the strategy runners do not depend on the network,
    and a 55 M-parameter network on 2 cores would not fit the CI budget); ZipEnhancer's film
    section runs ZipEnhancer, so random weights travel through the pool as in the real run."""
    tiny = {"mossformer2": {"window_seconds": 0.25, "overlap_seconds": 0.0625},
            "zipenhancer": {"window_seconds": 0.25, "overlap_seconds": 0.0625}}
    return Plan(
        mode="smoke", device="cpu", budget_s=budget_s or SMOKE_BUDGET_S,
        agreement={"mossformer2": (1, 0.25), "zipenhancer": (1, 0.25)}, memory_model_batch=2,
        scaling_lengths={"mossformer2": (0.25, 0.5, 1.0), "zipenhancer": (0.25, 0.5, 0.75)},
        scaling_batch=scaling.FIXED_BATCH, speed_windows=2, speed_batches=(1, 32), windows=tiny,
        film_set="micro", film_backend="passthrough", per_scene_every=2, recycle_first=None,
        recycle_every=2, recycle_standbys=standbys, zip_set="micro", vram_cap_gb=None,
        estimates={"agreement-mossformer2": 12, "agreement-zipenhancer": 6,
                   "scaling-mossformer2": 15, "scaling-zipenhancer": 10, "film-write": 1,
                   "film-pool-batched": 4, "film-recycle": 6, "film-zipenhancer": 12,
                   "film-pool-per-scene": 4, "film-inprocess": 3, "film-upstream": 3})


class Budget:
    """The clock against the plan: a section runs only if its estimate fits in what is left."""

    def __init__(self, seconds: float, clock=time.monotonic):
        self.seconds = float(seconds)
        self.clock = clock
        self.start = clock()

    def elapsed(self) -> float:
        return self.clock() - self.start

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def refuse(self, estimate_s: float) -> str | None:
        """Why a section estimated at ``estimate_s`` may not start now, or None."""
        left = self.left()
        if estimate_s > left:
            return (f"time budget: {left:.0f} s of {self.seconds:.0f} s left, the section is "
                    f"estimated at {estimate_s:.0f} s (--budget-s raises the budget)")
        return None
