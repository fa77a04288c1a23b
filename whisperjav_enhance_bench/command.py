"""The benchmark's command line, and the hook the product's CLI calls.

``whisperjav-enhance bench`` (whisperjav_enhance.cli) imports this module only when it is
installed and calls :func:`add_arguments`, :func:`run` and, for ``bench --quality``,
:func:`quality_main`. ``python -m whisperjav_enhance_bench`` is the same command without the CLI.
"""

from __future__ import annotations

import argparse
import sys

from . import scenesets
from .context import AUTO_HELP
from .runner import DEFAULT_BATCH_SECONDS, STRATEGY_TIMEOUT_S
from .runner import run as _run
from .strategies import STRATEGY_NAMES

PROG = "whisperjav-enhance bench"
QUALITY_PROG = "whisperjav-enhance bench --quality"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``whisperjav-enhance bench`` (also ``python -m whisperjav_enhance_bench``)."""
    a = parser.add_argument
    a("--set", default="tiny", choices=scenesets.SET_NAMES,
      help="scene set (default tiny: the CPU/CI set)")
    a("--seed", type=int, default=0, help="scene set seed (default 0)")
    a("--backend", default="auto", help=f"backend to benchmark; {AUTO_HELP} (default: auto)")
    a("--weights", default=None, help="checkpoint file or model folder (default: search caches)")
    a("--random-weights", action="store_true",
      help="write random-initialised weights in the real format and time those, labelled as "
           "random in every output; needs a named --backend (default: off)")
    a("--device", default="auto", help="auto, cpu, cuda or cuda:N (one device; default: auto)")
    a("--strategies", default=None,
      help="comma-separated subset (default: all): " + ", ".join(STRATEGY_NAMES))
    a("--repeat", type=int, default=1,
      help="run the strategies this many times, interleaved, and report each one's median wall "
           "(default: 1)")
    a("--vram-budget-gb", type=float, default=None,
      help="per-process allocator cap emulating a smaller card, CUDA only (default: none)")
    a("--scenes-per-recycle", type=int, default=None,
      help="N for reload-every-n and the -n pool strategies (default: depends on the set)")
    a("--batch-seconds", type=float, default=DEFAULT_BATCH_SECONDS,
      help="audio seconds per unit in the batched strategies (default: 120)")
    a("--window-seconds", type=float, default=None,
      help="backend window for the pool strategies (default: the backend's)")
    a("--overlap-seconds", type=float, default=None,
      help="backend window overlap for the pool strategies (default: the backend's)")
    a("--out", default=None, help="results folder (default: "
      "benchmarks/results/<timestamp>-<cpu|cuda>-<set>-<backend>)")
    a("--scenes-dir", default=None,
      help="where the scene WAVs are written and reused (default: a folder in the system temp "
           "dir named after the set and seed)")
    a("--keep-outputs", action="store_true",
      help="keep each strategy's enhanced scenes in --out/outputs (default: off)")
    a("--append", action="store_true",
      help="add to the results already in --out (same set, seed, backend, device and settings): "
           "for runs split into several commands (default: off)")
    a("--render", metavar="RESULTS_DIR", default=None,
      help="only rewrite results.md and the plots of RESULTS_DIR from its results.json "
           "(default: off, run the benchmark)")
    a("--strategy-timeout", type=float, default=STRATEGY_TIMEOUT_S,
      help="seconds after which an in-process strategy is stopped (default: 21600)")
    a("--quality", action="store_true",
      help="run the quality comparison (SI-SDR, PESQ, STOI against clean references) instead; "
           f"its options are its own, see `{QUALITY_PROG} --help` (default: off)")
    a("--debug", action="store_true", help="show tracebacks (default: off)")


def run(args, argv: list[str] | None = None) -> int:
    """Run the benchmark for parsed ``args`` (see runner.run for the exit codes)."""
    if getattr(args, "quality", False):
        return quality_main([], QUALITY_PROG)
    return _run(args, argv)


def quality_main(argv: list[str], prog: str = QUALITY_PROG) -> int:
    """The quality comparison's command line (``bench --quality``), with ``prog`` in its help."""
    from .quality import main

    return main(argv, prog)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--quality" in argv:   # the comparison has options of its own (--noisy, --clean, ...)
        return quality_main([a for a in argv if a != "--quality"],
                            "python -m whisperjav_enhance_bench --quality")
    parser = argparse.ArgumentParser(prog="python -m whisperjav_enhance_bench",
                                     description="Compare isolation strategies on one scene set.")
    add_arguments(parser)
    return run(parser.parse_args(argv), ["__main__.py"] + argv)
