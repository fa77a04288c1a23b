"""Engine scaling check (issue 2's GPU criteria), one backend per run:

  A. memory does not follow scene length: at a fixed batch size, peak allocated device memory for
     one 30 s, one 60 s and one 222 s scene stays within 10% (fixed windows + overlap-add on the
     CPU);
  B. batching pays: windows per forward 32 against 1 (MossFormer2: >= 10x the audio seconds per
     second, MEASUREMENTS.md predicts ~20x on an H100).

    python benchmarks/engine_scaling.py --backend mossformer2 --device cuda --random-weights
    python benchmarks/engine_scaling.py --backend zipenhancer --device cuda --random-weights
    python benchmarks/engine_scaling.py --backend mossformer2 --device cpu --random-weights --smoke

Writes results.json, results.md and COMMAND.txt to --out. --smoke shrinks every length (for CPU
and CI); its numbers prove the script, not the criteria. Peak memory is reported only on CUDA.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCENE_SECONDS = (30.0, 60.0, 222.0)
SMOKE_SCENE_SECONDS = (1.0, 2.0, 4.0)
FIXED_BATCH = 16          # windows per forward in part A
BATCHES = (1, 32)         # part B
B_WINDOWS = 64            # windows timed in part B (after one warm-up pass)
MEMORY_TOLERANCE = 0.10   # part A criterion
SPEEDUP_TARGET = 10.0     # part B criterion (MossFormer2)


def _load(args):
    import torch

    from whisperjav_enhance.backends import backend_class

    cls = backend_class(args.backend)
    weights = args.weights
    if args.random_weights and weights is None and hasattr(cls, "write_random_weights"):
        weights = str(cls.write_random_weights(Path(tempfile.mkdtemp(prefix="wje-scaling-"))))
    options = {}
    if args.smoke:
        options = {"window_seconds": 0.5, "overlap_seconds": 0.125}
    backend = cls.resolve(weights, **options)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    backend.load(device)
    return backend, device


def _noise(seconds: float, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32)


def _sync(device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def part_a(backend, device, lengths) -> dict:
    import torch

    from whisperjav_enhance.engine import Engine

    rows = []
    for i, seconds in enumerate(lengths):
        scene = _noise(seconds, backend.sample_rate, seed=i)
        engine = Engine(backend, max_batch=FIXED_BATCH)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        (_, out), = list(engine.run([scene]))
        _sync(device)
        wall = time.perf_counter() - t0
        assert out.shape == scene.shape
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        rows.append({"scene_seconds": seconds, "windows": engine.stats.windows,
                     "forwards": engine.stats.forwards, "peak_allocated_mib": peak,
                     "wall_s": round(wall, 3)})
    peaks = [r["peak_allocated_mib"] for r in rows if r["peak_allocated_mib"] is not None]
    spread = (max(peaks) - min(peaks)) / min(peaks) if peaks else None
    return {"batch": FIXED_BATCH, "rows": rows, "peak_spread": spread,
            "passes": None if spread is None else spread <= MEMORY_TOLERANCE}


def part_b(backend, device) -> dict:
    from whisperjav_enhance.engine import Engine

    window_s = backend.window_seconds
    windows = [_noise(window_s, backend.sample_rate, seed=100 + i) for i in range(B_WINDOWS)]
    rows = {}
    for batch in BATCHES:
        engine = Engine(backend, max_batch=batch)
        list(engine.run(windows[:batch]))          # warm-up: kernels, allocator, cuDNN plans
        _sync(device)
        t0 = time.perf_counter()
        list(engine.run(windows))
        _sync(device)
        wall = time.perf_counter() - t0
        rows[batch] = {"batch": batch, "windows": B_WINDOWS, "wall_s": round(wall, 3),
                       "audio_s_per_s": round(B_WINDOWS * window_s / wall, 1)}
    speedup = rows[BATCHES[-1]]["audio_s_per_s"] / rows[BATCHES[0]]["audio_s_per_s"]
    return {"window_seconds": window_s, "rows": list(rows.values()), "speedup": round(speedup, 2),
            "target": SPEEDUP_TARGET if backend.name == "mossformer2" else None}


def _markdown(result: dict) -> str:
    w = result["weights"]
    lines = [f"# Engine scaling: {result['backend']} on {result['device']}", "",
             f"- weights: {'RANDOM TEST WEIGHTS' if w['random_test_weights'] else 'real'} ({w['origin']}: {w['path']})",
             f"- torch {result['torch']}{' (smoke run: shrunk lengths, not the criteria)' if result['smoke'] else ''}",
             f"- command: `{result['command']}`", "",
             f"## A. Peak allocated vs scene length (batch {result['a']['batch']})", "",
             "| scene s | windows | forwards | peak allocated MiB | wall s |", "|---|---|---|---|---|"]
    for r in result["a"]["rows"]:
        peak = "-" if r["peak_allocated_mib"] is None else f"{r['peak_allocated_mib']:.0f}"
        lines.append(f"| {r['scene_seconds']:g} | {r['windows']} | {r['forwards']} | {peak} | {r['wall_s']} |")
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="mossformer2", help="mossformer2 or zipenhancer (default: mossformer2)")
    p.add_argument("--device", default="cuda", help="torch device (default: cuda)")
    p.add_argument("--weights", default=None, help="checkpoint file or model folder (default: search)")
    p.add_argument("--random-weights", action="store_true",
                   help="write and load random-initialised weights (time and memory only)")
    p.add_argument("--smoke", action="store_true", help="shrunk lengths for CPU/CI (default: off)")
    p.add_argument("--out", default=None, help="results folder (default: benchmarks/results/<time>-scaling-<backend>-<device>)")
    args = p.parse_args(argv)
    import torch

    backend, device = _load(args)
    result = {"backend": backend.name, "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "weights": backend.weights.as_dict(), "smoke": args.smoke,
              "command": "python " + " ".join(shlex.quote(a) for a in sys.argv)}
    result["a"] = part_a(backend, device, SMOKE_SCENE_SECONDS if args.smoke else SCENE_SECONDS)
    result["b"] = part_b(backend, device)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or Path(__file__).parent / "results" / f"{stamp}-scaling-{backend.name}-{device.type}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(_markdown(result))
    (out / "COMMAND.txt").write_text(result["command"] + "\n")
    print(_markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
