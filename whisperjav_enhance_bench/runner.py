"""One benchmark command from parsed arguments to a results folder.

    scene set (scenesets, seeded) --> for each strategy (and each --repeat, interleaved):
        skipped (needs CUDA / weights / clearvoice's decode imports, with the reason)
        | in-process loop in a fresh spawned process (status quo, its variants, direct runtime)
        | the product's pipeline in this process (which never touches CUDA; workers are spawned)
    --> StrategyResult per strategy --> results.json, results.md, memory.png, throughput.png,
        COMMAND.txt in the results folder

Every strategy starts from a fresh process for its model, so one strategy's allocator state,
CUDA context or leaked memory never colours the next one's numbers.
"""

from __future__ import annotations

import datetime as _dt
import sys
import tempfile
from pathlib import Path

from whisperjav_enhance.errors import ConfigError, EnhanceError, RunInterrupted

from . import scenesets
from .context import (BenchContext, backend_options, environment, pick_backend,
                      resolve_weights)
from .report import fmt_rate, render, write_results
from .results import ERROR, RAN, median_of_repeats, merge, previous_results
from .strategies import STRATEGY_NAMES, selected
from .strategyrun import run_strategy

DEFAULT_BATCH_SECONDS = 120.0
# Recycle period for reload-every-n and the "-n" pool strategies, per set (a fraction of the
# set, so the recycle cost shows on every set); --scenes-per-recycle overrides.
DEFAULT_SCENES_PER_RECYCLE = {"tiny": 3, "film-small": 10, "film": 50, "longtail": 10,
                              "isolation": 4, "micro": 2}
STRATEGY_TIMEOUT_S = 6 * 3600.0   # longest one in-process strategy may run before it is stopped


def validate(args) -> None:
    if args.scenes_per_recycle is not None and args.scenes_per_recycle < 1:
        raise ConfigError("--scenes-per-recycle must be at least 1")
    if args.repeat < 1:
        raise ConfigError("--repeat must be at least 1")
    for name in ("vram_budget_gb", "batch_seconds", "window_seconds", "strategy_timeout"):
        v = getattr(args, name)
        if v is not None and not v > 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive")
    if args.overlap_seconds is not None and args.overlap_seconds < 0:
        raise ConfigError("--overlap-seconds must be >= 0")
    if args.append and not args.out:
        raise ConfigError("--append needs --out naming the results folder to add to")


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
            validate(args)
            chosen = selected(args.strategies)
            ctx, meta, out, previous = prepare(args, argv, Path(scratch))
        except EnhanceError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        try:
            results = run_all(chosen, ctx, args.repeat)
        except (KeyboardInterrupt, RunInterrupted):
            print("bench: interrupted; no results written", file=sys.stderr)
            return 130
    if previous:
        results = merge(previous, results, STRATEGY_NAMES)
    write_results(out, results, meta)
    print(f"bench: results in {out}", file=sys.stderr)
    return 1 if any(r.status == ERROR for r in results) else 0


def prepare(args, argv: list[str], scratch: Path):
    """Device, backend, weights, the results it may append to, then the scenes. Returns
    (context, meta, results folder, previous results); raises EnhanceError for bad arguments."""
    from whisperjav_enhance.devices import resolve_devices

    slot = resolve_devices(args.device)[0]
    backend, backend_note = pick_backend(args.backend, args.random_weights)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    kind = "cuda" if slot.is_cuda else "cpu"
    out = Path(args.out or Path("benchmarks") / "results" / f"{stamp}-{kind}-{args.set}-{backend}")
    scene_set = scenesets.durations(args.set, args.seed)
    budget = args.vram_budget_gb if slot.is_cuda else None
    if args.vram_budget_gb is not None and not slot.is_cuda:
        print("note: --vram-budget-gb applies to CUDA devices only; ignored on CPU", file=sys.stderr)
    opts = backend_options(backend, args.window_seconds, args.overlap_seconds)
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
            "batch_seconds": args.batch_seconds, "vram_budget_gb": budget, "repeat": args.repeat,
            "environment": env, "commands": [env["command"]]}
    previous = previous_results(out, meta) if args.append else []
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


def run_all(chosen: list, ctx: BenchContext, repeat: int = 1) -> list:
    """Every chosen strategy ``repeat`` times, interleaved (so a machine that slows down over
    the run colours every strategy alike); one result per strategy, the run of median wall."""
    probes: dict = {}
    runs: dict[str, list] = {s.name: [] for s in chosen}
    for rep in range(repeat):
        for s in chosen:
            if runs[s.name] and runs[s.name][0].status != RAN:
                continue   # skipped or failed the first time: once is the answer
            tag = f" (run {rep + 1}/{repeat})" if repeat > 1 else ""
            print(f"bench: {s.name}{tag} ...", file=sys.stderr, flush=True)
            r = run_strategy(s, ctx, probes)
            if r.status == RAN:
                print(f"bench: {s.name}: {r.scenes_ok}/{r.scenes_total} ok in {r.wall_seconds:.1f}"
                      f" s ({fmt_rate(r.audio_seconds_per_second)} audio s/s)", file=sys.stderr,
                      flush=True)
            else:
                print(f"bench: {s.name}: {r.status}: {r.reason}", file=sys.stderr, flush=True)
            runs[s.name].append(r)
    return [median_of_repeats(runs[s.name]) for s in chosen]
