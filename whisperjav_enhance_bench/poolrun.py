"""Pool strategies: the product's own pipeline (``whisperjav_enhance.pipeline.run_scenes``) with the
options and policy each strategy names, run from this process (which never touches CUDA; the
pipeline's workers are spawned), its events collected for the memory plots and per-worker peaks.

    Strategy.params --pool_plan--> EnhanceOptions + PoolPolicy --run_scenes--> RunSummary
        + events (SceneFinished, Telemetry, WorkerStarted/Retired/Crashed) --> StrategyResult

"One scene per unit" is a tiny ``batch_seconds`` (below the shortest possible scene), so the
pipeline packs every scene alone; batched strategies pack ``--batch-seconds`` of audio per unit.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from whisperjav_enhance.config import EnhanceOptions, PoolPolicy
from whisperjav_enhance.events import (SceneFinished, Telemetry, WorkerCrashed, WorkerRetired,
                                       WorkerStarted)

from .results import RAN, StrategyResult, count_outcomes, largest, rate

# Units of a single scene: any budget below the shortest possible scene (audio.MIN_DURATION_S).
PER_SCENE_BATCH_SECONDS = 0.001
# Effectively "never" for thresholds a strategy switches off (keeps PoolPolicy validation happy).
NEVER = 10 ** 9


@dataclass(frozen=True)
class PoolPlan:
    """How the pipeline is called for one pool strategy."""

    options: EnhanceOptions   # backend, weights, device, windows, unit size
    policy: PoolPolicy        # workers, recycling, standby, budget


def pool_plan(ctx, s) -> PoolPlan:
    """Options and policy for pool strategy ``s`` (see its params in strategies.STRATEGIES)."""
    p = s.params
    # Never a download: the benchmark measures the weights it was given (or says they are
    # missing), and a device machine has no network.
    options = EnhanceOptions(
        backend=ctx.backend, weights=ctx.weights_path, device=ctx.slot.label,
        batch_seconds=ctx.batch_seconds if p["batched"] else PER_SCENE_BATCH_SECONDS,
        backend_options=dict(ctx.backend_options), executor="pool", download=False)
    if p.get("shipped_default"):
        kw = {}
    else:
        kw = {"workers_per_device": 1, "warm_standby": bool(p["standby"])}
        max_scenes = p["max_scenes"]
        if max_scenes == "n":
            kw["max_scenes_per_worker"] = ctx.scenes_per_recycle
        elif max_scenes is None:
            kw["max_scenes_per_worker"] = NEVER
        elif max_scenes != "default":
            kw["max_scenes_per_worker"] = int(max_scenes)
            kw["max_worker_starts"] = 2 * len(ctx.scene_paths) + 4
        if not p["drift"]:
            kw.update(max_drift_mb=NEVER, max_inactive_split_mb=NEVER, max_alloc_retries=NEVER)
    if "workers" in p:
        kw["workers_per_device"] = int(p["workers"])
    if "standbys" in p:
        kw["max_standby_workers"] = int(p["standbys"])
    if ctx.vram_budget_gb is not None:
        kw["vram_budget_gb"] = ctx.vram_budget_gb
    return PoolPlan(options, PoolPolicy(**kw))


class EventLog:
    """Collects pipeline events: scenes finished so far, memory samples against that count, which
    process each worker is, and how many workers were alive at once. ``also`` sees every event
    too (the GPU acceptance's driver-memory sampler)."""

    def __init__(self, also=None):
        self.done = 0
        self.samples: list[dict] = []
        self.pids: dict[int, int] = {}
        self.alive: set[int] = set()
        self.most_alive = 0
        self.peak_allocated_reported = True
        self.also = also

    def __call__(self, ev) -> None:
        if isinstance(ev, SceneFinished):
            self.done += 1
        elif isinstance(ev, Telemetry):
            self.samples.append(telemetry_sample(ev, self.done))
            if ev.allocated_mib is not None and ev.peak_allocated_mib is None:
                self.peak_allocated_reported = False
        elif isinstance(ev, WorkerStarted):
            self.pids[ev.worker] = ev.pid
            self.alive.add(ev.worker)
            self.most_alive = max(self.most_alive, len(self.alive))
        elif isinstance(ev, (WorkerRetired, WorkerCrashed)):
            self.alive.discard(ev.worker)
        if self.also is not None:
            self.also(ev)


def telemetry_sample(t: Telemetry, done: int) -> dict:
    return {"scenes_done": done, "worker": t.worker, "allocated_mib": t.allocated_mib,
            "reserved_mib": t.reserved_mib, "peak_reserved_mib": t.peak_reserved_mib,
            # A unit's peak allocated may be missing; the largest sample is the fallback.
            "peak_allocated_mib": t.peak_allocated_mib or t.allocated_mib,
            "inactive_split_mib": t.inactive_split_mib, "alloc_retries": t.alloc_retries,
            "oom_count": t.oom_count, "rss_mib": t.rss_mib}


def run_pool_strategy(ctx, s, out_dir: Path, observer=None) -> StrategyResult:
    """Run pool strategy ``s`` over the context's scenes into ``out_dir``."""
    from whisperjav_enhance.pipeline import run_scenes
    from whisperjav_enhance.scenes import scenes_from_pairs

    plan = pool_plan(ctx, s)
    scenes = scenes_from_pairs([(p, Path(p).name) for p in ctx.scene_paths], out_dir)
    log = EventLog(observer)
    t0 = time.perf_counter()
    summary = run_scenes(scenes, out_dir, plan.options, plan.policy, log)
    wall = time.perf_counter() - t0
    rows = sorted(summary.scenes, key=lambda r: r.index)
    ok, failed, reasons, audio_s = count_outcomes(
        ctx, [r.status for r in rows], [r.reason for r in rows], [r.output_path for r in rows])
    by_worker = per_worker(log.samples)
    retries = [v["alloc_retries"] for v in by_worker.values() if v["alloc_retries"] is not None]
    return StrategyResult(
        s.name, s.description, s.requires_cuda, RAN, None, ctx.slot.label, ctx.backend,
        ctx.weights_dict, len(scenes), ok, failed, reasons, audio_s, wall, rate(audio_s, wall),
        peak_reserved_mib={w: v["peak_reserved_mib"] for w, v in by_worker.items()},
        peak_allocated_mib={w: v["peak_allocated_mib"] for w, v in by_worker.items()},
        allocated_is_peak=log.peak_allocated_reported,
        peak_rss_mib={w: v["rss_mib"] for w, v in by_worker.items()},
        alloc_retries=sum(retries) if retries else None,
        oom_events=sum(v["oom_count"] or 0 for v in by_worker.values()),
        recycles=dict(summary.recycles), workers_started=summary.workers_started,
        workers_at_once=max(1, log.most_alive), worker_crashes=summary.worker_crashes,
        startup_wait_seconds=float(summary.startup_wait_seconds),
        first_ready_seconds=float(summary.first_ready_seconds),
        batch_sizes={str(k): v for k, v in dict(summary.batch_sizes).items()},
        worker_pids={str(k): v for k, v in log.pids.items()},
        settings={"batched": s.params["batched"],
                  "batch_seconds": plan.options.batch_seconds,
                  "backend_options": dict(ctx.backend_options), "policy": asdict(plan.policy),
                  "startup_seconds": [round(x, 3) for x in summary.startup_seconds],
                  "peak_vram_mib": summary.peak_vram_mib},
        series=log.samples)


def per_worker(samples: list[dict]) -> dict:
    """Largest value of each counter per worker (counters are per process and cumulative)."""
    out: dict[str, dict] = {}
    for smp in samples:
        w = out.setdefault(f"worker {smp['worker']}", {})
        for k in ("peak_reserved_mib", "peak_allocated_mib", "rss_mib", "alloc_retries", "oom_count"):
            w[k] = largest([w.get(k), smp.get(k)])
    return out
