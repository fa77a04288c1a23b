"""Engine scaling check, one backend per run (the GPU acceptance runs the same checks for both
native backends; see benchmarks/gpu_acceptance.py):

  A. memory does not follow scene length: at a fixed batch size, peak allocated device memory for
     one 30 s, one 60 s and one 222 s scene stays within 10%;
  B. batching pays: windows per forward 32 against 1 (MossFormer2: >= 10x).

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

# Works from a checkout without an install: the packages live beside this folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SCENE_SECONDS = (30.0, 60.0, 222.0)
SMOKE_SCENE_SECONDS = (1.0, 2.0, 4.0)
BATCHES = (1, 32)         # part B
B_WINDOWS = 64            # windows timed in part B (after one warm-up pass)


def _load(args):
    import torch

    from whisperjav_enhance.backends import backend_class

    cls = backend_class(args.backend)
    weights = args.weights
    if args.random_weights and weights is None and args.backend != "passthrough":
        weights = str(cls.write_random_weights(Path(tempfile.mkdtemp(prefix="wje-scaling-"))))
    options = {"window_seconds": 0.5, "overlap_seconds": 0.125} if args.smoke else {}
    backend = cls.resolve(weights, **options)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    backend.load(device)
    return backend, device


def main(argv=None) -> int:
    from whisperjav_enhance_bench import scaling

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
    result["a"] = scaling.memory_vs_length(backend, device,
                                           SMOKE_SCENE_SECONDS if args.smoke else SCENE_SECONDS)
    result["b"] = scaling.batch_speed(backend, device, B_WINDOWS, BATCHES)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(args.out or Path(__file__).parent / "results" / f"{stamp}-scaling-{backend.name}-{device.type}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "results.md").write_text(scaling.markdown(result))
    (out / "COMMAND.txt").write_text(result["command"] + "\n")
    print(scaling.markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
