"""``whisperjav-enhance bench``: the thin hook to the benchmark, which lives in the sibling
package ``whisperjav_enhance_bench`` (installed with this one). Its module ``command`` provides
``add_arguments(parser)`` (every option, ``--quality`` and ``--debug`` included), ``run(args,
argv)`` and ``quality_main(argv, prog)``; it is imported only when the command is ``bench``, so
the other commands never load it.

Without the package the command still parses (``--help`` shows ``--quality`` and ``--debug``)
and accepts the benchmark's options unread (``harness_missing``: the parser's caller lets them
through), so that running it says the package is missing instead of calling the options
unrecognised."""

from __future__ import annotations

import importlib
import importlib.util

from ..errors import ConfigError
from .exits import EXIT_INTERRUPTED, EXIT_NOT_RUN, print_error
from .helpformat import Formatter

HOOK = "whisperjav_enhance_bench.command"
QUALITY_PROG = "whisperjav-enhance bench --quality"


def add_parser(sub, with_harness: bool = True) -> None:
    p = sub.add_parser(
        "bench", formatter_class=Formatter, help="benchmark isolation strategies",
        description="Compare isolation strategies on the same scene set (see benchmarks/); "
                    "`--quality` runs the quality comparison instead. Both live in the package "
                    "whisperjav_enhance_bench, installed with this one.")
    bench = optional_module(HOOK) if with_harness else None
    if bench is not None:
        bench.add_arguments(p)
    else:  # not asked for, or not installed: the two options every form of the command has
        p.add_argument("--quality", action="store_true",
                       help="run the quality comparison instead (its options: `bench --quality "
                            "--help`) (default: off)")
        p.add_argument("--debug", action="store_true", help="show tracebacks (default: off)")
    p.set_defaults(func=cmd_bench, harness_missing=with_harness and bench is None)


def optional_module(name: str):
    """The module ``name``, or None when it (or a package above it) is not installed."""
    try:
        if importlib.util.find_spec(name) is None:
            return None
    except ModuleNotFoundError:
        return None
    return importlib.import_module(name)


def _missing() -> ConfigError:
    return ConfigError("the benchmark package (whisperjav_enhance_bench) is not installed here; it "
                       "ships in the same wheel as whisperjav_enhance: reinstall from the checkout "
                       "(`pip install '.[bench]'`) or run `python -m whisperjav_enhance_bench` "
                       "there")


def cmd_bench(args) -> int:
    bench = optional_module(HOOK)
    if bench is None:
        raise _missing()
    return int(bench.run(args, getattr(args, "argv", None)) or 0)


def run_quality(argv: list[str]) -> int:
    """``bench --quality``: the quality comparison's own command line (its own options)."""
    try:
        bench = optional_module(HOOK)
        if bench is None:
            raise _missing()
        return int(bench.quality_main(argv, QUALITY_PROG) or 0)
    except ConfigError as exc:
        print_error(exc, False)
        return EXIT_NOT_RUN
    except SystemExit as exc:  # its argparse: --help exits 0, bad arguments 2
        return exc.code if isinstance(exc.code, int) else EXIT_NOT_RUN
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


__all__ = ["add_parser", "cmd_bench", "run_quality", "optional_module"]
