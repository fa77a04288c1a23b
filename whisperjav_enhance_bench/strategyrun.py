"""Running one strategy: whether it can run here (and why not), then the in-process runner (a
fresh spawned process, :mod:`.inprocess`) or the pool runner (:mod:`.poolrun`); outputs are
checked against their inputs, then removed unless kept."""

from __future__ import annotations

import shutil
from pathlib import Path

from whisperjav_enhance.errors import EnhanceError, RunInterrupted

from .context import python_probe
from .inprocess import (UPSTREAM_DEPENDENCIES, UPSTREAM_IMPORT_PROBE, WHOLE_SCENE_QUANTUM_S,
                        run_in_child)
from .poolrun import run_pool_strategy
from .results import ERROR, RAN, SKIPPED, StrategyResult, count_outcomes, largest, not_run, rate

# The in-process "whole scene per forward" loops use one window a little longer than the longest
# scene, so no scene is ever split (the loop pads each scene only to WHOLE_SCENE_QUANTUM_S).
WHOLE_SCENE_MARGIN_S = 0.05


def skip_reason(s, ctx, probes: dict) -> str | None:
    """Why ``s`` cannot run here, or None. ``probes`` caches import checks across strategies."""
    if s.requires_cuda and not ctx.slot.is_cuda:
        return (f"needs CUDA (it changes the CUDA caching allocator's behaviour); device here is "
                f"{ctx.slot.label}")
    if s.kind == "upstream":
        if ctx.backend != "mossformer2":
            return f"the upstream clearvoice path runs MossFormer2_SE_48K only; backend is {ctx.backend}"
        if "upstream" not in probes:
            probes["upstream"] = python_probe(UPSTREAM_IMPORT_PROBE)
        if probes["upstream"]:
            return ("clearvoice's decode path (clearvoice.utils.decode_batch, which imports "
                    f"{', '.join(UPSTREAM_DEPENDENCIES)}) does not import here: {probes['upstream']}")
    return ctx.weights_problem


def run_strategy(s, ctx, probes: dict, observer=None) -> StrategyResult:
    """Run one strategy (or say why not); its outputs are checked, then removed unless kept.
    ``observer`` sees the pool's events (pool strategies only)."""
    reason = skip_reason(s, ctx, probes)
    if reason:
        return not_run(s, SKIPPED, reason, ctx)
    out_dir = ctx.work_dir / "outputs" / s.name
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        if s.kind == "pool":
            return run_pool_strategy(ctx, s, out_dir, observer)
        return run_inprocess_strategy(ctx, s, out_dir)
    except RunInterrupted:
        raise
    except EnhanceError as exc:  # weights/backend trouble in a worker, a dead strategy process
        return not_run(s, ERROR, f"{type(exc).__name__}: {exc}", ctx)
    finally:
        if not ctx.keep_outputs:
            shutil.rmtree(out_dir, ignore_errors=True)


# -- in-process strategies -------------------------------------------------------------------------
def inprocess_config(ctx, s, out_dir: Path) -> dict:
    """A small picklable description of the loop the strategy process runs."""
    from whisperjav_enhance.backends import backend_class

    cls = backend_class(ctx.backend)
    return {"kind": s.kind, "backend": ctx.backend, "weights_path": ctx.weights_path,
            "backend_options": dict(ctx.backend_options), "windowed": bool(cls.windowed),
            "uses_torch": bool(getattr(cls, "uses_torch", True)),
            "torch_device": ctx.slot.torch_device, "inputs": list(ctx.scene_paths),
            "outputs": [str(out_dir / Path(p).name) for p in ctx.scene_paths],
            "window_s": max(ctx.durations) + WHOLE_SCENE_MARGIN_S,
            "empty_cache": bool(s.params.get("empty_cache")),
            "reload_every": ctx.scenes_per_recycle if s.params.get("reload_every") else None,
            "vram_budget_gb": ctx.vram_budget_gb}


def child_env(s, slot) -> dict:
    env = {"CUDA_VISIBLE_DEVICES": slot.visible_devices if slot.visible_devices is not None else ""}
    if s.params.get("expandable"):
        env["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    return env


def run_inprocess_strategy(ctx, s, out_dir: Path) -> StrategyResult:
    cfg = inprocess_config(ctx, s, out_dir)
    r = run_in_child(cfg, child_env(s, ctx.slot), ctx.timeout_s)
    outcomes = r["outcomes"]
    ok, failed, reasons, audio_s = count_outcomes(ctx, [o["status"] for o in outcomes],
                                                  [o.get("reason") for o in outcomes],
                                                  cfg["outputs"])
    peaks = [r["final"]] + r["samples"]
    proc = "process"
    return StrategyResult(
        s.name, s.description, s.requires_cuda, RAN, None, ctx.slot.label, ctx.backend,
        ctx.weights_dict, len(ctx.scene_paths), ok, failed, reasons, audio_s, r["wall_seconds"],
        rate(audio_s, r["wall_seconds"]),
        peak_reserved_mib={proc: largest(p["peak_reserved_mib"] for p in peaks)},
        peak_allocated_mib={proc: largest(p["peak_allocated_mib"] for p in peaks)},
        peak_rss_mib={proc: largest(p["rss_mib"] for p in peaks)},
        alloc_retries=r["final"]["alloc_retries"], oom_events=int(r["final"]["oom_count"] or 0),
        recycles={"reload": r["reloads"]} if r["reloads"] else {},
        workers_started=len(r["load_seconds"]), worker_crashes=0,
        startup_wait_seconds=float(sum(r["load_seconds"])),
        first_ready_seconds=float(r["load_seconds"][0]),
        settings=dict(inprocess_settings(cfg, s), torch_imported=r["torch_imported"]),
        series=r["samples"])


def inprocess_settings(cfg: dict, s) -> dict:
    if s.kind == "upstream":
        return {"decode": "clearvoice.utils.decode_batch.decode_one_audio_mossformer2_se_48k",
                "autograd": True, "whole_scene": True}
    if s.kind == "direct":
        return {"backend_options": cfg["backend_options"], "whole_scene": not cfg["windowed"],
                "autograd": False}
    return {"window_s": round(cfg["window_s"], 3), "quantum_s": WHOLE_SCENE_QUANTUM_S, "batch": 1,
            "empty_cache": cfg["empty_cache"], "reload_every": cfg["reload_every"],
            "expandable_segments": bool(s.params.get("expandable")), "autograd": False}
