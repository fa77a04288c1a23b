"""The engine's two scaling checks, on one loaded backend:

  A. memory does not follow scene length: at a fixed batch size, peak allocated device memory for
     scenes of e.g. 30, 60 and 222 s stays within MEMORY_TOLERANCE (fixed windows, overlap-add
     on the CPU);
  B. batching pays: the same windows at many per forward against one per forward
     (MossFormer2's bar: SPEEDUP_TARGET).

Used by ``benchmarks/engine_scaling.py`` (one backend per command) and the GPU acceptance.
Peak memory is measured only on CUDA (None elsewhere).
"""

from __future__ import annotations

import time

import numpy as np

MEMORY_TOLERANCE = 0.10   # part A: (max - min) / min of the peaks
SPEEDUP_TARGET = 10.0     # part B, MossFormer2: many-per-forward / one-per-forward
# Windows per forward in part A: no more than the shortest scene (30 s) holds, so every length
# fills its forwards and only the scene length differs (MossFormer2's 4 s windows with 1 s
# overlap give 10 windows for 30 s).
FIXED_BATCH = 8


def noise(seconds: float, rate: int, seed: int) -> np.ndarray:
    """Seeded noise at a tenth of full scale: time and memory do not depend on content."""
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32)


def sync(device) -> None:
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        torch.cuda.synchronize(device)


def memory_vs_length(backend, device, lengths, batch: int = FIXED_BATCH) -> dict:
    """Part A: one scene of each length through the engine at ``batch`` windows per forward."""
    from whisperjav_enhance.engine import Engine

    on_cuda = getattr(device, "type", "cpu") == "cuda"
    rows = []
    for i, seconds in enumerate(lengths):
        scene = noise(seconds, backend.sample_rate, seed=i)
        engine = Engine(backend, max_batch=batch)
        if on_cuda:
            import torch

            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        (_, out), = list(engine.run([scene]))
        sync(device)
        wall = time.perf_counter() - t0
        assert out.shape == scene.shape, "the engine returns exactly the input's length"
        peak = None
        if on_cuda:
            import torch

            peak = torch.cuda.max_memory_allocated(device) / 2**20
        rows.append({"scene_seconds": seconds, "windows": engine.stats.windows,
                     "forwards": engine.stats.forwards, "peak_allocated_mib": peak,
                     "wall_s": round(wall, 3)})
    peaks = [r["peak_allocated_mib"] for r in rows if r["peak_allocated_mib"] is not None]
    spread = (max(peaks) - min(peaks)) / min(peaks) if peaks else None
    return {"batch": batch, "rows": rows, "peak_spread": spread,
            "passes": None if spread is None else spread <= MEMORY_TOLERANCE}


def batch_speed(backend, device, windows: int, batches=(1, 32)) -> dict:
    """Part B: ``windows`` windows of the backend's window length at each batch size (after one
    warm-up pass at that size); audio seconds per second and the speedup of the last over the
    first."""
    from whisperjav_enhance.engine import Engine

    window_s = backend.window_seconds
    audio = [noise(window_s, backend.sample_rate, seed=100 + i) for i in range(windows)]
    rows = {}
    for batch in batches:
        engine = Engine(backend, max_batch=batch)
        list(engine.run(audio[:batch]))          # warm-up: kernels, allocator, cuDNN plans
        sync(device)
        t0 = time.perf_counter()
        list(engine.run(audio))
        sync(device)
        wall = time.perf_counter() - t0
        rows[batch] = {"batch": batch, "windows": windows, "wall_s": round(wall, 3),
                       "audio_s_per_s": round(windows * window_s / wall, 1)}
    speedup = rows[batches[-1]]["audio_s_per_s"] / rows[batches[0]]["audio_s_per_s"]
    return {"window_seconds": window_s, "rows": list(rows.values()), "speedup": round(speedup, 2),
            "target": SPEEDUP_TARGET if backend.name == "mossformer2" else None}


def markdown(result: dict) -> str:
    """The two parts as markdown (engine_scaling.py's results.md)."""
    w = result["weights"]
    kind = "RANDOM TEST WEIGHTS" if w["random_test_weights"] else "real"
    lines = [f"# Engine scaling: {result['backend']} on {result['device']}", "",
             f"- weights: {kind} ({w['origin']}: {w['path']})",
             f"- torch {result['torch']}"
             + (" (smoke run: shrunk lengths, not the criteria)" if result["smoke"] else ""),
             f"- command: `{result['command']}`", "",
             f"## A. Peak allocated vs scene length (batch {result['a']['batch']})", "",
             "| scene s | windows | forwards | peak allocated MiB | wall s |", "|---|---|---|---|---|"]
    for r in result["a"]["rows"]:
        peak = "-" if r["peak_allocated_mib"] is None else f"{r['peak_allocated_mib']:.0f}"
        lines.append(f"| {r['scene_seconds']:g} | {r['windows']} | {r['forwards']} | {peak} | "
                     f"{r['wall_s']} |")
    spread = result["a"]["peak_spread"]
    lines += ["", f"Spread of peaks: {'n/a (CPU)' if spread is None else f'{spread:.1%}'} "
              f"(criterion <= {MEMORY_TOLERANCE:.0%}).", "",
              f"## B. Windows per forward ({result['b']['window_seconds']:g} s windows)", "",
              "| batch | windows | wall s | audio s/s |", "|---|---|---|---|"]
    for r in result["b"]["rows"]:
        lines.append(f"| {r['batch']} | {r['windows']} | {r['wall_s']} | {r['audio_s_per_s']} |")
    target = result["b"]["target"]
    lines += ["", f"Speedup {result['b']['speedup']}x"
              + (f" (criterion >= {target:g}x)." if target else ".")]
    return "\n".join(lines) + "\n"
