"""The isolation-strategy benchmark: every candidate fix for the subtitle pipeline's out-of-memory
failures run on the same generated scene set, measured the same way, written as one JSON file,
one markdown table and PNG plots.

    scene set (scenesets, seeded) --> for each strategy:
        skipped (needs CUDA / weights / clearvoice's decode imports, with the reason)
        | in-process loop in a fresh spawned process (status quo and its variants)
        | run_pool in this process (which never touches CUDA; workers are spawned)
    --> StrategyResult per strategy --> results.json, results.md, memory.png, throughput.png,
        COMMAND.txt in the results folder

Every strategy starts from a fresh process for its model, so one strategy's allocator state,
CUDA context or leaked memory never colours the next one's numbers.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import scenesets
from .benchloop import (UPSTREAM_DEPENDENCIES, UPSTREAM_IMPORT_PROBE, WHOLE_SCENE_QUANTUM_S,
                        run_in_child)
from .benchreport import fmt_rate, render, write_results
from .errors import ConfigError, EnhanceError, RunInterrupted, SceneError, WeightsError

# The in-process "whole scene per forward" loops use one window a little longer than the longest
# scene, so no scene is ever split (benchloop pads each scene only to WHOLE_SCENE_QUANTUM_S).
WHOLE_SCENE_MARGIN_S = 0.05
# Units of a single scene: any budget below the shortest possible scene (audio.MIN_DURATION_S).
PER_SCENE_BATCH_SECONDS = 0.001
DEFAULT_BATCH_SECONDS = 120.0
# Recycle period for reload-every-n and pool-recycle-n, per set (a fraction of the set, so the
# recycle cost shows on every set); --scenes-per-recycle overrides.
DEFAULT_SCENES_PER_RECYCLE = {"tiny": 3, "film-small": 10, "film": 50, "longtail": 10}
STRATEGY_TIMEOUT_S = 6 * 3600.0   # longest one in-process strategy may run before it is stopped
PROBE_TIMEOUT_S = 180.0           # a `python -c "import ..."` probe
# Effectively "never" for thresholds a strategy switches off (keeps PoolPolicy validation happy).
NEVER = 10 ** 9


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Strategy:
    """One way of running the enhancer over the scenes."""

    name: str                  # stable identifier used on the command line and in results
    description: str           # one line for the table and README
    requires_cuda: bool        # meaningless without a CUDA device (skipped with the reason)
    kind: str                  # "upstream", "inprocess" or "pool": which runner executes it
    params: dict = field(default_factory=dict)  # runner knobs. In-process: empty_cache,
    # expandable, reload_every (bools). Pool: batched (duration units, else one scene per unit),
    # max_scenes (1, "n" = --scenes-per-recycle, None = never, "default" = PoolPolicy's),
    # drift (drift recycling on), standby (warm standby), shipped_default (PoolPolicy() as is)

    def __post_init__(self):
        if self.kind not in ("upstream", "inprocess", "pool"):
            raise ValueError(f"unknown strategy kind {self.kind!r}")


STRATEGIES: tuple[Strategy, ...] = (
    Strategy("upstream-clearvoice",
             "status quo: clearvoice's own numpy path (decode_one_audio_mossformer2_se_48k), "
             "autograd on, whole scene per forward, one process",
             requires_cuda=False, kind="upstream"),
    Strategy("inprocess-scene",
             "ours in one process: inference mode, whole scene per forward (window >= longest "
             "scene, batch 1)", requires_cuda=False, kind="inprocess"),
    Strategy("inprocess-scene-emptycache",
             "inprocess-scene + torch.cuda.empty_cache() after every scene",
             requires_cuda=True, kind="inprocess", params={"empty_cache": True}),
    Strategy("inprocess-expandable",
             "inprocess-scene with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (set before "
             "CUDA starts, in a fresh process)",
             requires_cuda=True, kind="inprocess", params={"expandable": True}),
    Strategy("reload-every-n",
             "inprocess-scene, model dropped and reloaded every N scenes in the same process",
             requires_cuda=False, kind="inprocess", params={"reload_every": True}),
    Strategy("subprocess-per-scene",
             "pool, one fresh worker process per scene (max_scenes_per_worker=1, no standby)",
             requires_cuda=False, kind="pool",
             params={"batched": False, "max_scenes": 1, "drift": False, "standby": False}),
    Strategy("pool-recycle-n",
             "pool, one scene per unit, worker recycled every N scenes (no drift check, no standby)",
             requires_cuda=False, kind="pool",
             params={"batched": False, "max_scenes": "n", "drift": False, "standby": False}),
    Strategy("pool-recycle-drift",
             "pool, one scene per unit, worker recycled only on allocator drift (no standby)",
             requires_cuda=False, kind="pool",
             params={"batched": False, "max_scenes": None, "drift": True, "standby": False}),
    Strategy("pool-batched",
             "pool + duration batching (windows of many scenes per forward), default recycling, "
             "no standby", requires_cuda=False, kind="pool",
             params={"batched": True, "max_scenes": "default", "drift": True, "standby": False}),
    Strategy("pool-batched-standby",
             "pool + duration batching + warm standby: the shipped default",
             requires_cuda=False, kind="pool",
             params={"batched": True, "max_scenes": "default", "drift": True, "standby": True,
                     "shipped_default": True}),
    Strategy("pool-batched-standby-n",
             "pool + duration batching + warm standby, worker recycled every N scenes: what a "
             "recycle costs when a standby hides the start (issue 3's measurement)",
             requires_cuda=False, kind="pool",
             params={"batched": True, "max_scenes": "n", "drift": True, "standby": True}),
)
STRATEGY_NAMES = tuple(s.name for s in STRATEGIES)


def strategy(name: str) -> Strategy:
    for s in STRATEGIES:
        if s.name == name:
            return s
    raise ConfigError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGY_NAMES)}")


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StrategyResult:
    """What one strategy did; one object per strategy in results.json."""

    strategy: str                       # Strategy.name
    description: str                    # Strategy.description
    requires_cuda: bool                 # Strategy.requires_cuda
    status: str                         # "ran", "skipped" or "error" (the harness could not run it)
    reason: str | None                  # why skipped / what went wrong; None when it ran
    device: str                         # "cpu" or "cuda:N"
    backend: str                        # canonical backend name
    weights: dict | None                # WeightsInfo.as_dict(): which weights ran (random or not)
    scenes_total: int                   # scenes in the set
    scenes_ok: int = 0                  # enhanced, output present and as long as the input
    scenes_failed: int = 0              # every other scene (failure_reasons says why)
    failure_reasons: dict = field(default_factory=dict)  # reason -> count
    audio_seconds: float = 0.0          # audio in the scenes that ended ok
    wall_seconds: float | None = None   # start of model load / pool start to last scene written
    audio_seconds_per_second: float | None = None  # audio_seconds / wall_seconds
    peak_reserved_mib: dict = field(default_factory=dict)   # process -> peak reserved (None on CPU)
    peak_allocated_mib: dict = field(default_factory=dict)  # process -> peak allocated (None on CPU)
    allocated_is_peak: bool = True      # False: the pool's telemetry has no allocated peak, so
                                        # the values are the largest allocated seen after a unit
    peak_rss_mib: dict = field(default_factory=dict)        # process -> largest RSS seen (MiB)
    alloc_retries: int | None = None    # cudaMalloc retries summed over processes (None on CPU)
    oom_events: int = 0                 # out-of-memory errors seen by the allocator/engine
    recycles: dict = field(default_factory=dict)  # reason -> count (reloads for reload-every-n)
    workers_started: int = 0            # processes that loaded the model (1 for in-process)
    worker_crashes: int = 0             # workers that died without retiring
    startup_wait_seconds: float = 0.0   # time no model was ready: pool start-up waits, or the
                                        # model loads of an in-process loop
    first_ready_seconds: float | None = None  # start -> first model ready (part of the above)
    batch_sizes: dict = field(default_factory=dict)  # padded window samples -> batch size used
    settings: dict = field(default_factory=dict)     # knobs this strategy ran with
    series: list = field(default_factory=list)       # memory samples for the plots

    def __post_init__(self):
        if self.status not in ("ran", "skipped", "error"):
            raise ValueError(f"status must be ran, skipped or error, not {self.status!r}")
        if (self.status == "ran") == bool(self.reason):
            raise ValueError("a strategy that ran has no reason; one that did not must have one")
        if self.scenes_ok + self.scenes_failed > self.scenes_total:
            raise ValueError(f"{self.strategy}: more outcomes than scenes")


def _skipped(s: Strategy, reason: str, ctx: "BenchContext") -> StrategyResult:
    return StrategyResult(s.name, s.description, s.requires_cuda, "skipped", reason,
                          ctx.slot.label, ctx.backend, ctx.weights_dict, len(ctx.scene_paths))


def _errored(s: Strategy, reason: str, ctx: "BenchContext") -> StrategyResult:
    return StrategyResult(s.name, s.description, s.requires_cuda, "error", reason,
                          ctx.slot.label, ctx.backend, ctx.weights_dict, len(ctx.scene_paths))


# ---------------------------------------------------------------------------------------------
# Context shared by the runners
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BenchContext:
    """Everything a runner needs, fixed for the whole benchmark."""

    scene_set: scenesets.SceneSet
    scene_paths: tuple[str, ...]        # WAVs in run order
    backend: str                        # canonical backend name
    backend_options: dict               # window/overlap overrides for the batched strategies
    weights_path: str | None            # resolved checkpoint (None: backend has none)
    weights_dict: dict | None           # WeightsInfo.as_dict(), None when weights are missing
    weights_problem: str | None         # why weights are missing (strategies needing them skip)
    slot: object                        # devices.DeviceSlot the strategies run on
    work_dir: Path                      # scratch folder for outputs (removed afterwards)
    scenes_per_recycle: int
    batch_seconds: float
    vram_budget_gb: float | None        # CUDA only
    keep_outputs: bool
    timeout_s: float

    @property
    def durations(self) -> tuple[float, ...]:
        return self.scene_set.durations_s


# ---------------------------------------------------------------------------------------------
# In-process strategies (status quo and variants): each in a fresh spawned process (benchloop)
# ---------------------------------------------------------------------------------------------

def _inprocess_config(ctx: BenchContext, s: Strategy, out_dir: Path) -> dict:
    """A small picklable description of the loop the strategy process runs."""
    window_s = max(ctx.durations) + WHOLE_SCENE_MARGIN_S
    return {"kind": s.kind, "backend": ctx.backend, "weights_path": ctx.weights_path,
            "torch_device": ctx.slot.torch_device, "inputs": list(ctx.scene_paths),
            "outputs": [str(out_dir / Path(p).name) for p in ctx.scene_paths],
            "window_s": window_s, "empty_cache": bool(s.params.get("empty_cache")),
            "reload_every": ctx.scenes_per_recycle if s.params.get("reload_every") else None,
            "vram_budget_gb": ctx.vram_budget_gb}


def _child_env(s: Strategy, slot) -> dict:
    env = {"CUDA_VISIBLE_DEVICES": slot.visible_devices if slot.visible_devices is not None else ""}
    if s.params.get("expandable"):
        env["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"
    return env


def _run_inprocess_strategy(ctx: BenchContext, s: Strategy, out_dir: Path) -> StrategyResult:
    cfg = _inprocess_config(ctx, s, out_dir)
    r = run_in_child(cfg, _child_env(s, ctx.slot), ctx.timeout_s)
    ok, failed, reasons, audio_s = _count_outcomes(ctx, [o["status"] for o in r["outcomes"]],
                                                   [o.get("reason") for o in r["outcomes"]],
                                                   out_dir)
    final = r["final"]
    peaks = [final] + r["samples"]
    proc = "process"
    return StrategyResult(
        s.name, s.description, s.requires_cuda, "ran", None, ctx.slot.label, ctx.backend,
        ctx.weights_dict, len(ctx.scene_paths), ok, failed, reasons, audio_s, r["wall_seconds"],
        _rate(audio_s, r["wall_seconds"]),
        peak_reserved_mib={proc: _max(p["peak_reserved_mib"] for p in peaks)},
        peak_allocated_mib={proc: _max(p["peak_allocated_mib"] for p in peaks)},
        peak_rss_mib={proc: _max(p["rss_mib"] for p in peaks)},
        alloc_retries=final["alloc_retries"], oom_events=int(final["oom_count"] or 0),
        recycles={"reload": r["reloads"]} if r["reloads"] else {},
        workers_started=len(r["load_seconds"]), worker_crashes=0,
        startup_wait_seconds=float(sum(r["load_seconds"])),
        first_ready_seconds=float(r["load_seconds"][0]),
        settings=_inprocess_settings(cfg, s),
        series=r["samples"])


def _inprocess_settings(cfg: dict, s: Strategy) -> dict:
    if s.kind == "upstream":
        return {"decode": "clearvoice.utils.decode_batch.decode_one_audio_mossformer2_se_48k",
                "autograd": True, "whole_scene": True}
    return {"window_s": round(cfg["window_s"], 3), "quantum_s": WHOLE_SCENE_QUANTUM_S, "batch": 1,
            "empty_cache": cfg["empty_cache"], "reload_every": cfg["reload_every"],
            "expandable_segments": bool(s.params.get("expandable")), "autograd": False}


# ---------------------------------------------------------------------------------------------
# Pool strategies: the supervisor runs here (it never touches CUDA), workers are spawned
# ---------------------------------------------------------------------------------------------

def _pool_setup(ctx: BenchContext, s: Strategy):
    """Units and policy for a pool strategy (see the params in STRATEGIES)."""
    from .config import PoolPolicy
    from .planning import pack_units

    p = s.params
    if p["batched"]:
        # As the pipeline does: a unit never holds more scenes than a worker may do.
        cap = ctx.scenes_per_recycle if p["max_scenes"] == "n" else None
        units = pack_units(ctx.durations, ctx.batch_seconds, max_scenes=cap)
    else:
        units = pack_units(ctx.durations, PER_SCENE_BATCH_SECONDS, max_scenes=1)
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
    if ctx.vram_budget_gb is not None:
        kw["vram_budget_gb"] = ctx.vram_budget_gb
    return units, PoolPolicy(**kw)


class _EventLog:
    """Collects pool events: scenes finished so far, and memory samples against that count."""

    def __init__(self):
        self.done = 0
        self.samples: list[dict] = []

    def __call__(self, ev) -> None:
        name = type(ev).__name__
        if name == "SceneFinished":
            self.done += 1
        elif name == "Telemetry":
            self.samples.append(_telemetry_sample(ev, self.done))


def _telemetry_sample(t, done: int) -> dict:
    return {"scenes_done": done, "worker": t.worker, "allocated_mib": t.allocated_mib,
            "reserved_mib": t.reserved_mib, "peak_reserved_mib": t.peak_reserved_mib,
            # Telemetry may not carry the peak allocated; the largest sample is the fallback.
            "peak_allocated_mib": getattr(t, "peak_allocated_mib", None) or t.allocated_mib,
            "inactive_split_mib": t.inactive_split_mib, "alloc_retries": t.alloc_retries,
            "oom_count": t.oom_count, "rss_mib": t.rss_mib}


def _run_pool_strategy(ctx: BenchContext, s: Strategy, out_dir: Path) -> StrategyResult:
    from .pool import SceneTask, WorkerSpec, run_pool

    units, policy = _pool_setup(ctx, s)
    tasks = [SceneTask(index=i, input_path=p, output_path=str(out_dir / Path(p).name),
                       duration_s=d, output_sample_rate=None)
             for i, (p, d) in enumerate(zip(ctx.scene_paths, ctx.durations))]
    spec = WorkerSpec(backend=ctx.backend, weights_path=ctx.weights_path,
                      backend_options=dict(ctx.backend_options), slot=ctx.slot)
    log = _EventLog()
    t0 = time.perf_counter()
    report = run_pool(tasks, units, [spec], policy, on_event=log)
    wall = time.perf_counter() - t0
    ok, failed, reasons, audio_s = _count_outcomes(ctx, [o.status for o in report.outcomes],
                                                   [o.reason for o in report.outcomes], out_dir)
    samples = log.samples or [_telemetry_sample(t, 0) for t in report.telemetry]
    by_worker = _per_worker(samples)
    retries = [v["alloc_retries"] for v in by_worker.values() if v["alloc_retries"] is not None]
    return StrategyResult(
        s.name, s.description, s.requires_cuda, "ran", None, ctx.slot.label, ctx.backend,
        ctx.weights_dict, len(tasks), ok, failed, reasons, audio_s, wall, _rate(audio_s, wall),
        peak_reserved_mib={w: v["peak_reserved_mib"] for w, v in by_worker.items()},
        peak_allocated_mib={w: v["peak_allocated_mib"] for w, v in by_worker.items()},
        allocated_is_peak=all(getattr(t, "peak_allocated_mib", None) is not None
                              for t in report.telemetry),
        peak_rss_mib={w: v["rss_mib"] for w, v in by_worker.items()},
        alloc_retries=sum(retries) if retries else None,
        oom_events=sum(v["oom_count"] or 0 for v in by_worker.values()),
        recycles=dict(report.recycles), workers_started=report.workers_started,
        worker_crashes=report.worker_crashes,
        startup_wait_seconds=float(report.startup_wait_seconds),
        first_ready_seconds=float(getattr(report, "first_ready_seconds", 0.0)),
        batch_sizes={str(k): v for k, v in dict(report.batch_sizes).items()},
        settings={"units": len(units), "batched": s.params["batched"],
                  "batch_seconds": ctx.batch_seconds if s.params["batched"] else None,
                  "backend_options": dict(ctx.backend_options), "policy": asdict(policy),
                  "startup_seconds": [round(x, 3) for x in report.startup_seconds]},
        series=samples)


def _per_worker(samples: list[dict]) -> dict:
    """Largest value of each counter per worker (counters are per process and cumulative)."""
    out: dict[str, dict] = {}
    for smp in samples:
        w = out.setdefault(f"worker {smp['worker']}", {})
        for k in ("peak_reserved_mib", "peak_allocated_mib", "rss_mib", "alloc_retries", "oom_count"):
            w[k] = _max([w.get(k), smp.get(k)])
    return out


# ---------------------------------------------------------------------------------------------
# Shared result helpers
# ---------------------------------------------------------------------------------------------

def _count_outcomes(ctx: BenchContext, statuses, reasons, out_dir: Path):
    """Scenes ok (enhanced and an output exactly as long as the input), failed by reason."""
    from .audio import probe

    ok, audio_s, failed = 0, 0.0, {}
    for path, dur, status, reason in zip(ctx.scene_paths, ctx.durations, statuses, reasons):
        if status == "enhanced":
            out = out_dir / Path(path).name
            try:
                same = probe(out).frames == probe(path).frames
            except SceneError:
                same = False
            if same:
                ok += 1
                audio_s += dur
                continue
            reason = "bad_output"
        failed[reason or "unknown"] = failed.get(reason or "unknown", 0) + 1
    return ok, sum(failed.values()), failed, audio_s


def _rate(audio_s: float, wall_s: float | None) -> float | None:
    return audio_s / wall_s if wall_s else None


def _max(values) -> float | None:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


# ---------------------------------------------------------------------------------------------
# Deciding what can run here
# ---------------------------------------------------------------------------------------------

def _python_probe(code: str) -> str | None:
    """Run ``code`` in a fresh interpreter; None if it worked, else the error's last line. Used
    for imports this process must never attempt (torchaudio, clearvoice's decode module)."""
    try:
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"the import check did not finish in {PROBE_TIMEOUT_S:.0f} s"
    if r.returncode == 0:
        return None
    lines = [ln for ln in (r.stderr or r.stdout).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit code {r.returncode}"


def skip_reason(s: Strategy, ctx: BenchContext, probes: dict) -> str | None:
    """Why ``s`` cannot run here, or None."""
    if s.requires_cuda and not ctx.slot.is_cuda:
        return (f"needs CUDA (it changes the CUDA caching allocator's behaviour); device here is "
                f"{ctx.slot.label}")
    if s.kind == "upstream":
        if ctx.backend != "mossformer2":
            return f"the upstream clearvoice path runs MossFormer2_SE_48K only; backend is {ctx.backend}"
        if "upstream" not in probes:
            probes["upstream"] = _python_probe(UPSTREAM_IMPORT_PROBE)
        if probes["upstream"]:
            return ("clearvoice's decode path (clearvoice.utils.decode_batch, which imports "
                    f"{', '.join(UPSTREAM_DEPENDENCIES)}) does not import here: {probes['upstream']}")
    return ctx.weights_problem


def run_strategy(s: Strategy, ctx: BenchContext, probes: dict) -> StrategyResult:
    """Run one strategy (or say why not); its outputs are checked, then removed."""
    reason = skip_reason(s, ctx, probes)
    if reason:
        return _skipped(s, reason, ctx)
    out_dir = ctx.work_dir / "outputs" / s.name
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        if s.kind == "pool":
            return _run_pool_strategy(ctx, s, out_dir)
        return _run_inprocess_strategy(ctx, s, out_dir)
    except RunInterrupted:
        raise
    except EnhanceError as exc:  # weights/backend trouble in a worker, a dead strategy process
        return _errored(s, f"{type(exc).__name__}: {exc}", ctx)
    finally:
        if not ctx.keep_outputs:
            shutil.rmtree(out_dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Backend, weights, device and environment
# ---------------------------------------------------------------------------------------------

def pick_backend(spec: str, slot) -> tuple[str, str]:
    """Canonical backend for ``--backend`` and a note saying why. ``auto`` means MossFormer2 on a
    GPU (what the benchmark is about) and passthrough on a CPU, where a network would not get
    through even the tiny set in CI's two minutes (pass --backend mossformer2 --random-weights
    to time the network there; it takes minutes)."""
    from .backends import parse_backend_spec

    if (spec or "auto").lower() != "auto":
        name = parse_backend_spec(spec)
        if name == "auto":
            raise ConfigError("--backend auto cannot be combined with a model variant")
        return name, f"{name} was requested"
    if slot.is_cuda:
        return "mossformer2", "auto: mossformer2 on a CUDA device"
    return "passthrough", ("auto: passthrough on CPU (no network: measures isolation, I/O and "
                           "process costs only)")


def resolve_weights(backend: str, weights: str | None, random_weights: bool, scratch: Path,
                    backend_options: dict):
    """Returns (weights_path, WeightsInfo dict or None, problem or None)."""
    from .backends import backend_class

    cls = backend_class(backend)
    if random_weights:
        writer = getattr(cls, "write_random_weights", None)
        if writer is None:
            if backend == "passthrough":
                b = cls.resolve(None, **backend_options)
                return None, b.weights.as_dict(), None
            raise ConfigError(f"backend {backend} cannot write random test weights")
        weights = str(writer(scratch / "random-weights"))
    try:
        b = cls.resolve(weights, **backend_options)
    except WeightsError as exc:
        first = str(exc).splitlines()[0]
        where = "; ".join(exc.searched)
        return None, None, (f"needs {backend} weights: {first}"
                            + (f" (searched: {where})" if where else "")
                            + "; pass --weights PATH, or --random-weights to time random weights")
    return b.weights.path, b.weights.as_dict(), None


def _backend_options(backend: str, window_s: float | None, overlap_s: float | None) -> dict:
    """Window overrides for the pool strategies. A window given alone gets an overlap of a
    quarter of it when the backend's default overlap would not fit inside it."""
    from .backends import backend_class

    opts = {}
    if window_s is not None:
        opts["window_seconds"] = float(window_s)
        if overlap_s is None:
            default = float(getattr(backend_class(backend), "overlap_seconds", 0.0))
            overlap_s = default if default < window_s / 2 else window_s / 4
    if overlap_s is not None:
        opts["overlap_seconds"] = float(overlap_s)
    return opts


def environment(slot, argv: list[str]) -> dict:
    """Where the numbers came from. The device is described by a fresh interpreter so this
    process never creates a CUDA context (the pool's workers must have the card to themselves)."""
    import torch

    env = {"device": slot.label, "torch": torch.__version__, "python": platform.python_version(),
           "platform": platform.platform(), "cpu_count": os.cpu_count(),
           "command": command_line(argv), "argv": list(argv),
           "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds")}
    if slot.is_cuda:
        code = ("import json,torch;p=torch.cuda.get_device_properties(0);print(json.dumps("
                "{'name':p.name,'total_mib':p.total_memory/2**20,'cuda':torch.version.cuda}))")
        try:
            r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=PROBE_TIMEOUT_S,
                               env=dict(os.environ, CUDA_VISIBLE_DEVICES=slot.visible_devices or ""))
            info = json.loads(r.stdout.strip().splitlines()[-1])
            env.update(device_name=info["name"], device_total_mib=round(info["total_mib"]),
                       cuda=info["cuda"])
        except Exception as exc:  # the benchmark still runs; the report says what is unknown
            env["device_name"] = f"unknown ({type(exc).__name__})"
    else:
        env["device_name"] = f"CPU: {_cpu_name()} ({os.cpu_count()} logical cores)"
    return env


def _cpu_name() -> str:
    """The processor's model name where the OS says it, else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def command_line(argv: list[str]) -> str:
    """The command as a user would type it again."""
    prog = Path(argv[0]).name if argv else "whisperjav-enhance"
    if prog in ("bench.py", "__main__.py", "-m", "-c"):
        head = ["python", "-m", "whisperjav_enhance.bench"]
    elif prog == "run_bench.py":
        head = ["python", "benchmarks/run_bench.py"]
    else:
        head = [prog, "bench"] if "bench" not in argv[1:2] else [prog]
    return shlex.join(head + list(argv[1:]))


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``whisperjav-enhance bench`` (also ``python -m whisperjav_enhance.bench``)."""
    parser.add_argument("--set", default="tiny", choices=scenesets.SET_NAMES,
                        help="scene set (default tiny: the CPU/CI set)")
    parser.add_argument("--seed", type=int, default=0, help="scene set seed (default 0)")
    parser.add_argument("--backend", default="auto",
                        help="backend to benchmark; auto = mossformer2 on CUDA, passthrough on CPU")
    parser.add_argument("--weights", default=None, help="checkpoint file or model folder")
    parser.add_argument("--random-weights", action="store_true",
                        help="write random-initialised weights in the real format and time those "
                             "(labelled as random in every output)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (one device)")
    parser.add_argument("--strategies", default=None,
                        help="comma-separated subset (default: all): " + ", ".join(STRATEGY_NAMES))
    parser.add_argument("--vram-budget-gb", type=float, default=None,
                        help="per-process allocator cap emulating a smaller card (CUDA only)")
    parser.add_argument("--scenes-per-recycle", type=int, default=None,
                        help="N for reload-every-n and pool-recycle-n (default depends on the set)")
    parser.add_argument("--batch-seconds", type=float, default=DEFAULT_BATCH_SECONDS,
                        help="audio seconds per unit in the batched strategies (default 120)")
    parser.add_argument("--window-seconds", type=float, default=None,
                        help="backend window for the pool strategies (default: the backend's)")
    parser.add_argument("--overlap-seconds", type=float, default=None,
                        help="backend window overlap for the pool strategies")
    parser.add_argument("--out", default=None,
                        help="results folder (default "
                             "benchmarks/results/<timestamp>-<cpu|cuda>-<set>-<backend>)")
    parser.add_argument("--scenes-dir", default=None,
                        help="where the scene WAVs are written and reused (default: a folder in "
                             "the system temp dir named after the set and seed)")
    parser.add_argument("--keep-outputs", action="store_true",
                        help="keep each strategy's enhanced scenes (in --out/outputs)")
    parser.add_argument("--append", action="store_true",
                        help="add to the results already in --out (same set, seed, backend, "
                             "device and settings): for runs split into several commands")
    parser.add_argument("--render", metavar="RESULTS_DIR", default=None,
                        help="only rewrite results.md and the plots of RESULTS_DIR from its "
                             "results.json (runs nothing)")
    parser.add_argument("--strategy-timeout", type=float, default=STRATEGY_TIMEOUT_S,
                        help="seconds after which an in-process strategy is stopped")


def _selected(spec: str | None) -> list[Strategy]:
    if not spec:
        return list(STRATEGIES)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    return [strategy(n) for n in names]


def _validate(args) -> None:
    if args.scenes_per_recycle is not None and args.scenes_per_recycle < 1:
        raise ConfigError("--scenes-per-recycle must be at least 1")
    for name in ("vram_budget_gb", "batch_seconds", "window_seconds", "strategy_timeout"):
        v = getattr(args, name)
        if v is not None and not v > 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    if args.overlap_seconds is not None and args.overlap_seconds < 0:
        raise ConfigError("--overlap-seconds must be >= 0")


def run(args, argv: list[str] | None = None) -> int:
    """Run the benchmark for parsed ``args``. Exit code: 0 every selected strategy ran or was
    skipped with its reason; 1 the harness failed to run some strategy; 2 bad arguments;
    130 interrupted."""
    argv = list(sys.argv if argv is None else argv)
    if args.render:
        try:
            render(Path(args.render))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"error: cannot render {args.render}: {exc}", file=sys.stderr)
            return 2
        return 0
    with tempfile.TemporaryDirectory(prefix="wje-bench-") as scratch:
        try:
            _validate(args)
            selected = _selected(args.strategies)
            ctx, meta, out, previous = _prepare(args, argv, Path(scratch))
        except EnhanceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        try:
            results = _run_all(selected, ctx)
        except (KeyboardInterrupt, RunInterrupted):
            print("bench: interrupted; no results written", file=sys.stderr)
            return 130
    if previous:
        results, meta = _merge(previous, results, meta)
    write_results(out, results, meta)
    print(f"bench: results in {out}", file=sys.stderr)
    return 1 if any(r.status == "error" for r in results) else 0


def _prepare(args, argv: list[str], scratch: Path):
    """Device, backend, weights, the results it may append to, then the scenes. Returns
    (context, meta, results folder, previous results); raises EnhanceError for bad arguments."""
    from .devices import resolve_devices

    slot = resolve_devices(args.device)[0]
    backend, backend_note = pick_backend(args.backend, slot)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    kind = "cuda" if slot.is_cuda else "cpu"
    out = Path(args.out or Path("benchmarks") / "results" / f"{stamp}-{kind}-{args.set}-{backend}")
    if args.append and not args.out:
        raise ConfigError("--append needs --out naming the results folder to add to")
    scene_set = scenesets.durations(args.set, args.seed)
    budget = args.vram_budget_gb if slot.is_cuda else None
    if args.vram_budget_gb is not None and not slot.is_cuda:
        print("note: --vram-budget-gb applies to CUDA devices only; ignored on CPU", file=sys.stderr)
    opts = _backend_options(backend, args.window_seconds, args.overlap_seconds)
    wpath, wdict, wproblem = resolve_weights(backend, args.weights, args.random_weights, scratch,
                                             opts)
    recycle_n = args.scenes_per_recycle or DEFAULT_SCENES_PER_RECYCLE.get(args.set, 10)
    env = environment(slot, argv)
    meta = {"set": args.set, "seed": args.seed,
            "set_description": scenesets.SET_SPECS[args.set].description,
            "scenes": len(scene_set.durations_s), "audio_seconds": scene_set.total_s,
            "scene_set_fingerprint": scene_set.fingerprint(), "backend": backend,
            "backend_note": backend_note, "weights": wdict, "weights_problem": wproblem,
            "backend_options": opts, "scenes_per_recycle": recycle_n,
            "batch_seconds": args.batch_seconds, "vram_budget_gb": budget, "environment": env,
            "commands": [env["command"]]}
    previous = _previous_results(out, meta) if args.append else []
    scenes_dir = Path(args.scenes_dir or Path(tempfile.gettempdir()) / "whisperjav-enhance-bench"
                      / f"{args.set}-seed{args.seed}")
    print(f"bench: set {args.set} ({len(scene_set.durations_s)} scenes, "
          f"{scene_set.total_s:,.1f} s), backend {backend}, device {slot.label}; scenes in "
          f"{scenes_dir}", file=sys.stderr)
    paths = scenesets.write_scene_set(scene_set, scenes_dir)
    ctx = BenchContext(scene_set, tuple(str(p) for p in paths), backend, opts, wpath, wdict,
                       wproblem, slot, out if args.keep_outputs else scratch, recycle_n,
                       args.batch_seconds, budget, args.keep_outputs, args.strategy_timeout)
    return ctx, meta, out, previous


# What must be equal for results of two commands to share one table (--append).
_COMPARABLE = ("set", "seed", "scene_set_fingerprint", "backend", "backend_options",
               "scenes_per_recycle", "batch_seconds", "vram_budget_gb")


def _weights_identity(w: dict | None):
    """Random weights are rewritten (to a new temporary path) on every run; real ones must match."""
    if not w:
        return None
    return ("random", w.get("description")) if w.get("random_test_weights") else (w.get("path"),)


def _previous_results(out: Path, meta: dict) -> list[StrategyResult]:
    """Results already in ``out`` that a run with ``meta`` may be merged with (--append)."""
    path = out / "results.json"
    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text())
        old, results = doc["meta"], [StrategyResult(**d) for d in doc["strategies"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--append: {path} is not a results file of this harness ({exc})")
    differ = [k for k in _COMPARABLE if old.get(k) != meta.get(k)]
    if old["environment"].get("device") != meta["environment"]["device"]:
        differ.append("device")
    if _weights_identity(old.get("weights")) != _weights_identity(meta.get("weights")):
        differ.append("weights")
    if differ:
        raise ConfigError(f"--append: {out} holds results of a different run (differs in "
                          f"{', '.join(differ)}); use a new --out")
    meta["commands"] = list(old.get("commands") or [old["environment"]["command"]]) + meta["commands"]
    return results


def _merge(previous: list[StrategyResult], new: list[StrategyResult], meta: dict):
    """One table: strategies run now replace earlier results of the same name; strategy order."""
    by_name = {r.strategy: r for r in previous}
    by_name.update({r.strategy: r for r in new})
    order = {n: i for i, n in enumerate(STRATEGY_NAMES)}
    return sorted(by_name.values(), key=lambda r: order.get(r.strategy, len(order))), meta


def _run_all(selected: list[Strategy], ctx: BenchContext) -> list[StrategyResult]:
    probes: dict = {}
    results = []
    for s in selected:
        print(f"bench: {s.name} ...", file=sys.stderr, flush=True)
        r = run_strategy(s, ctx, probes)
        if r.status == "ran":
            print(f"bench: {s.name}: {r.scenes_ok}/{r.scenes_total} ok in {r.wall_seconds:.1f} s "
                  f"({fmt_rate(r.audio_seconds_per_second)} audio s/s)", file=sys.stderr, flush=True)
        else:
            print(f"bench: {s.name}: {r.status}: {r.reason}", file=sys.stderr, flush=True)
        results.append(r)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m whisperjav_enhance.bench",
                                     description="Compare isolation strategies on one scene set.")
    add_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return run(args, sys.argv if argv is None else ["bench.py"] + list(argv))


if __name__ == "__main__":
    # Re-import under the package name, so everything a spawned process needs is found by its
    # module path rather than as a function of __main__.
    from whisperjav_enhance.bench import main as _main

    sys.exit(_main())
