"""Every GPU criterion in one command, on one CUDA device, in under 8 minutes on an H200:

- CUDA vs CPU agreement of MossFormer2 and ZipEnhancer, and each forward's peak within the
  backend's memory model;
- peak device memory flat (within 10%) across 30, 60 and 222 s scenes, both backends;
- 32 windows per forward against 1 (MossFormer2: >= 10x);
- a film-sized set (~700 scenes, ~7,200 s) under an 8 GiB cap: the batched pool (no OOM,
  > 1,000 audio s/s), recycling every 25 scenes with a warm standby (< 0.5 s per recycle),
  ZipEnhancer (no OOM), and for comparison the pool with one scene per forward, our in-process
  loop and the status quo (clearvoice's own path), with each worker's device memory as
  nvidia-smi reports it next to the allocator's view.

Random weights (written in each backend's real format) are used and labelled in every output:
time and memory do not depend on weight values. Writes benchmarks/results/<date>-<gpu name>/
(results.json, results.md, plots, COMMAND.txt) and prints the pass/fail table last.

    python benchmarks/gpu_acceptance.py                 # on the GPU machine
    python benchmarks/gpu_acceptance.py --smoke --out /tmp/acc   # CPU, tiny sizes (CI)

benchmarks/README.md has the one command that installs the carried wheels
(benchmarks/fetch_wheels.py) on the device machine and runs this.
"""

import sys
from pathlib import Path

# Works from a checkout without an install: the packages live beside this folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

if __name__ == "__main__":
    from whisperjav_enhance_bench.acceptance.main import main

    sys.exit(main())
