"""``whisperjav-enhance bench``: the thin hook to the benchmark, which lives in the sibling
package ``whisperjav_enhance_bench`` (installed with this one). Its module ``command`` provides
``add_arguments(parser)``, ``run(args, argv)`` and ``quality_main(argv, prog)``; it is imported
only when the command is ``bench``, so the other commands never load it."""

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
    elif with_harness:
        # Its options are unknown without the package: accept any, so cmd_bench can say what is
        # missing instead of argparse calling the user's options unrecognised.
        parse_known = p.parse_known_args
        p.parse_known_args = lambda args=None, namespace=None: (parse_known(args, namespace)[0], [])
    for flag, text in (("--quality", "run the quality comparison instead (its options: `bench "
                                     "--quality --help`) (default: off)"),
                       ("--debug", "show tracebacks (default: off)")):
        if flag not in p._option_string_actions:
            p.add_argument(flag, action="store_true", help=text)
    p.set_defaults(func=cmd_bench)


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
