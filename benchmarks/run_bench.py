"""Run the isolation-strategy benchmark from a checkout: the same as `whisperjav-enhance bench`.

    python benchmarks/run_bench.py --set tiny
    python benchmarks/run_bench.py --set film --backend mossformer2 --vram-budget-gb 8

See benchmarks/README.md for the strategies, the scene sets and how to read the results.
"""

import sys
from pathlib import Path

# Works from a checkout without an install: the packages live beside this folder.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from whisperjav_enhance_bench.command import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
