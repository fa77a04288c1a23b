"""The ``whisperjav-enhance`` command: argument parsing, rendering and exit codes, nothing else.

Commands: ``enhance`` (enhance.py: a run, its progress arriving as events from the library, or
``--dry-run``), ``models`` and ``doctor`` (info.py: the reports of whisperjav_enhance.inventory)
and ``bench`` (bench.py: a hook to the sibling package whisperjav_enhance_bench).

    parser.py    the parser (each command's options live beside the command; helpformat.py)
    enhance.py   enhance: options -> EnhanceOptions/PoolPolicy, the run, the dry run (plan.py)
    render.py    events -> header lines, notices and the progress line (progress.py)
    table.py     the summary table and failure list at the end
    consoles.py  rich consoles that survive a closed or broken stdout/stderr
    debuglog.py  --debug: the library's logging through the renderer
    exits.py     exit codes and the one-line error message

Exit codes (exits.py): 0 every scene enhanced or already complete; 1 some scenes failed, or the
run's own records could not all be written; 2 nothing was run (bad arguments, no inputs, missing
weights, unusable device, unwritable or busy output folder); 130 interrupted. Expected failures
print one clear message, never a traceback (``--debug`` adds it). Heavy imports (torch) happen
inside the commands, so ``--help`` is quick.
"""

from __future__ import annotations

import sys

from ..errors import EnhanceError, RunInterrupted
from .enhance import options_from_args
from .exits import (EXIT_INTERRUPTED, EXIT_NOT_RUN, EXIT_OK, EXIT_SCENES_FAILED, exit_code_for,
                    print_error)
from .parser import build_parser
from .render import Renderer


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code (never raises for an expected failure)."""
    from .consoles import ensure_standard_descriptors

    ensure_standard_descriptors()
    program = argv is None   # the process is this command (it exits with the code returned)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"] and "--quality" in argv:
        from .bench import run_quality

        # The quality comparison has its own options (--noisy, --clean, ...): hand them over.
        return run_quality([a for a in argv[1:] if a != "--quality"])
    parser = build_parser(argv)
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown and not getattr(args, "harness_missing", False):  # see bench.py
            parser.error("unrecognized arguments: " + " ".join(unknown))
    except SystemExit as exc:  # argparse: --help/--version exit 0, bad arguments exit 2
        return exc.code if isinstance(exc.code, int) else EXIT_NOT_RUN
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_NOT_RUN
    args.argv = ["whisperjav-enhance", *argv]
    args.program = program
    return _dispatch(args)


def _dispatch(args) -> int:
    from .consoles import err_console

    try:
        return args.func(args)
    except KeyboardInterrupt:
        err_console().print("[yellow]interrupted[/yellow]")
        return EXIT_INTERRUPTED
    except RunInterrupted as exc:
        err_console().print("[yellow]interrupted:[/yellow] ", end="")
        err_console().print(str(exc), markup=False)
        return EXIT_INTERRUPTED
    except EnhanceError as exc:
        print_error(exc, getattr(args, "debug", False))
        return exit_code_for(exc)
    except BaseException as exc:
        if not _is_termination(exc):
            raise
        err_console().print(f"[yellow]interrupted[/yellow] by {exc.signal_name}")
        return EXIT_INTERRUPTED


def _is_termination(exc: BaseException) -> bool:
    """SIGTERM's exception (executor.interrupts.Terminated); only raised once that module is
    loaded, so the check does not load it (--help stays quick)."""
    module = sys.modules.get("whisperjav_enhance.executor.interrupts")
    return module is not None and isinstance(exc, module.Terminated)


__all__ = ["main", "build_parser", "options_from_args", "Renderer", "EXIT_OK",
           "EXIT_SCENES_FAILED", "EXIT_NOT_RUN", "EXIT_INTERRUPTED"]
