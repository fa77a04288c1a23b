"""The whole command line's parser: the commands and their options, each defined beside its
command (enhance.py, info.py, bench.py)."""

from __future__ import annotations

import argparse

from .. import __version__
from . import bench, enhance, info
from .helpformat import Formatter


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``argv`` given, the benchmark's options (an import of
    whisperjav_enhance_bench) are only added when the command is ``bench``."""
    parser = argparse.ArgumentParser(
        prog="whisperjav-enhance", formatter_class=Formatter,
        description="Batched, crash-isolated speech enhancement of scene WAVs for subtitle "
                    "pipelines (MossFormer2, ZipEnhancer, DeepFilterNet3).",
        epilog="Run `whisperjav-enhance COMMAND --help` for a command's options.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    enhance.add_parser(sub)
    info.add_parsers(sub)
    bench.add_parser(sub, with_harness=argv is None or "bench" in argv)
    return parser


__all__ = ["build_parser"]
