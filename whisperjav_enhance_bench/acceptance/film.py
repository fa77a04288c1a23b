"""The film-sized sections of the GPU acceptance: the benchmark's own strategies (the same code as
``whisperjav-enhance bench``) over one seeded film set under the 8 GiB cap, with the driver's
per-worker memory sampled while the pool runs.

    film-write            the set's WAVs (~700 scenes, ~7,200 s), written once
    film-pool-batched     the shipped default (batching, warm standby): no OOM, > 1,000 audio s/s
    film-recycle          batching + recycling every 25 scenes + standby: the wait per recycle
    film-zipenhancer      ZipEnhancer, shipped default, same cap: no OOM
    film-pool-per-scene   the pool with one scene per forward           } comparisons, on every
    film-inprocess        our in-process loop, whole scene per forward  } n-th scene plus every
    film-upstream         the status quo (clearvoice's path, autograd)  } long one (plan)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .. import scenesets
from ..context import BenchContext
from whisperjav_enhance.status import Reason

from ..results import BAD_OUTPUT, RAN, StrategyResult
from ..strategies import strategy
from ..strategyrun import run_strategy
from .criteria import Criterion, Section, judged
from .drivermem import DriverMemorySampler

STRATEGY_OF = {"film-pool-batched": "pool-batched-standby",
               "film-recycle": "pool-batched-standby-n",
               "film-zipenhancer": "pool-batched-standby",
               "film-pool-per-scene": "pool-recycle-drift",
               "film-inprocess": "inprocess-scene",
               "film-upstream": "upstream-clearvoice"}
RATE_TARGET = 1_000.0          # audio s/s, batched pool, MossFormer2 on the film set
RECYCLE_TARGET_S = 0.5         # wait per recycle with a warm standby
BATCH_SECONDS = 120.0          # the shipped default unit size


@dataclasses.dataclass
class FilmRun:
    """What the film sections share: the plan, the two contexts, results as they come."""

    plan: object
    moss: BenchContext             # the film set with the MossFormer2 sections' backend
    zip: BenchContext              # the ZipEnhancer section's set and backend
    probes: dict = dataclasses.field(default_factory=dict)
    results: dict = dataclasses.field(default_factory=dict)   # section -> StrategyResult
    workers: list = dataclasses.field(default_factory=list)   # driver vs allocator rows


def write_film(plan, work_dir: Path, weights: dict, slot) -> tuple[FilmRun, Section]:
    """Write the scene sets and build the contexts. ``weights``: backend -> (path, info dict)."""
    def context(set_name: str, backend: str) -> BenchContext:
        ss = scenesets.durations(set_name, 0)
        paths = scenesets.write_scene_set(ss, work_dir / "scenes" / f"{set_name}-seed0")
        wpath, wdict = weights[backend]
        return BenchContext(ss, tuple(str(p) for p in paths), backend,
                            dict(plan.windows.get(backend, {})), wpath, wdict, None, slot,
                            work_dir, plan.recycle_every, BATCH_SECONDS,
                            plan.vram_cap_gb if slot.is_cuda else None, False, 3600.0)

    run = FilmRun(plan, context(plan.film_set, plan.film_backend),
                  context(plan.zip_set, "zipenhancer"))
    ss = run.moss.scene_set
    data = {"set": ss.name, "scenes": len(ss.durations_s), "audio_seconds": round(ss.total_s, 1),
            "shortest_s": round(min(ss.durations_s), 3), "longest_s": round(max(ss.durations_s), 1),
            "over_29_s": sum(d > 29.0 for d in ss.durations_s), "fingerprint": ss.fingerprint()}
    return run, Section("film-write", data=data)


def _narrowed(ctx: BenchContext, every: int = 1, first: int | None = None) -> BenchContext:
    sub, picked = scenesets.subset(ctx.scene_set, every, first=first)
    return dataclasses.replace(ctx, scene_set=sub,
                               scene_paths=tuple(ctx.scene_paths[i] for i in picked))


def film_section(run: FilmRun, name: str, timeout_s: float) -> Section:
    """Run the strategy of film section ``name`` and describe it."""
    plan = run.plan
    ctx = run.zip if name == "film-zipenhancer" else run.moss
    if name == "film-recycle":
        ctx = _narrowed(ctx, 1, plan.recycle_first)
    elif name in ("film-pool-per-scene", "film-inprocess", "film-upstream"):
        ctx = _narrowed(ctx, plan.per_scene_every)
    ctx = dataclasses.replace(ctx, timeout_s=max(30.0, timeout_s))
    s = strategy(STRATEGY_OF[name])
    if name == "film-recycle" and plan.recycle_standbys is not None:
        s = dataclasses.replace(s, params=dict(s.params, standbys=plan.recycle_standbys))
    sampler = DriverMemorySampler(enabled=ctx.slot.is_cuda and s.kind == "pool")
    with sampler:
        result = run_strategy(s, ctx, run.probes, observer=None)
    run.results[name] = result
    workers = sampler.per_worker(result) if s.kind == "pool" and result.status == RAN else []
    run.workers.extend(workers)
    data = {"strategy": s.name, "set": ctx.scene_set.name, "scenes": len(ctx.scene_paths),
            "audio_seconds_in_set": round(ctx.scene_set.total_s, 1), "backend": ctx.backend,
            "driver_memory": sampler.status(), "workers": workers,
            "result": dataclasses.asdict(result)}
    if result.status != RAN:
        return Section(name, status=result.status,
                       reason=result.reason, data=data)
    return Section(name, data=data)


def _no_oom(r: StrategyResult) -> bool:
    """No out-of-memory error anywhere and every scene enhanced by the product (an output that
    is not exactly as long as its input is a separate fault, counted in the value)."""
    enhanced = r.scenes_ok + r.failure_reasons.get(BAD_OUTPUT, 0)
    return (enhanced == r.scenes_total and r.oom_events == 0
            and Reason.OUT_OF_MEMORY not in r.failure_reasons)


def _ok_text(r: StrategyResult) -> str:
    bad = r.failure_reasons.get(BAD_OUTPUT, 0)
    return (f"{r.strategy} {r.scenes_ok}/{r.scenes_total} ok, {r.oom_events} OOM"
            + (f", {bad} output(s) not as long as the input" if bad else ""))


def film_verdicts(run: FilmRun) -> list[Criterion]:
    """The film criteria from the results of the sections that ran."""
    smoke = run.plan.mode == "smoke"
    got = {k: r for k, r in run.results.items() if r.status == RAN}
    out = []
    pools = [got[k] for k in ("film-pool-batched", "film-recycle", "film-pool-per-scene") if k in got]
    if "film-pool-batched" in got:
        passed, note = judged(all(_no_oom(r) for r in pools), smoke)
        out.append(Criterion("nooom-mossformer2", "; ".join(_ok_text(r) for r in pools),
                             passed, note))
        r = got["film-pool-batched"]
        passed, note = judged((r.audio_seconds_per_second or 0) > RATE_TARGET, smoke)
        out.append(Criterion("rate-mossformer2", f"{r.audio_seconds_per_second:,.0f} audio s/s "
                             f"({r.audio_seconds:,.0f} s in {r.wall_seconds:.1f} s, start-up "
                             "included)", passed, note))
    if "film-recycle" in got:
        r = got["film-recycle"]
        cost = r.recycle_cost_seconds
        if cost is None:
            out.append(Criterion("recycle-cost", "no worker was recycled", None,
                                 "the run was shorter than one worker's life"))
        else:
            passed, note = judged(cost < RECYCLE_TARGET_S, smoke)
            n = r.workers_started
            out.append(Criterion("recycle-cost", f"{cost:.2f} s per recycle ({n} workers, "
                                 f"{r.startup_wait_seconds:.1f} s waiting in all)", passed, note))
    if "film-zipenhancer" in got:
        r = got["film-zipenhancer"]
        passed, note = judged(_no_oom(r), smoke)
        out.append(Criterion("nooom-zipenhancer", _ok_text(r) + f", "
                             f"{r.audio_seconds_per_second:,.0f} audio s/s", passed, note))
    return out
