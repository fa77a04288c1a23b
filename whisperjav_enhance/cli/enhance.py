"""``whisperjav-enhance enhance``: its options, the EnhanceOptions/PoolPolicy they make, and the
command (a run through :func:`whisperjav_enhance.pipeline.enhance_scenes`, or ``--dry-run``
through :func:`whisperjav_enhance.dryrun.plan_scenes`). Everything the run decides is the
library's; this module parses, hands over and renders."""

from __future__ import annotations

import argparse
import importlib.util
import textwrap
import time

from .. import audio
from ..backends.base import OptionText
from ..config import EnhanceOptions, PoolPolicy
from ..errors import ConfigError, RunInterrupted
from .exits import EXIT_INTERRUPTED, EXIT_OK, summary_exit_code
from .helpformat import Formatter, default as _d

_OPT = EnhanceOptions()
_POL = PoolPolicy()

_DESCRIPTION = (
    "Enhance scene files (and folders of them, searched recursively for .wav and .flac) into "
    "OUT_DIR, keeping their relative paths and names (as .wav).\n\n"
    "One run at a time per OUT_DIR: a run holds a lock on the folder, and a second run on it is "
    "refused (exit 2) naming the first (pid, host, since when); the lock of a run that died is "
    "taken over.\n\n"
    "Resuming: what produced each output is recorded (backend, weights, output rate and "
    "subtype, clipping, the backend options that change the audio). A rerun skips an output only "
    "when it was made with the same settings, redoes the others and says how many; outputs with "
    "no record (made by an older version) are kept as they are, with a note. So an interrupted "
    "run is resumed by running the same command again; --overwrite redoes everything.")
DESCRIPTION = "\n\n".join(textwrap.fill(p, 100) for p in _DESCRIPTION.split("\n\n"))

EPILOG = (
    "exit codes: 0 all scenes enhanced or already complete; 1 some scenes failed (every other is\n"
    "            complete), or the manifest/summary could not all be written (e.g. a full disk);\n"
    "            2 nothing was run (bad arguments, no inputs, missing weights, unusable device,\n"
    "            unwritable or busy output folder); 130 interrupted (workers stopped, no partial\n"
    "            outputs left, summary written).\n"
    "records:    OUT_DIR/manifest.jsonl (one line per scene and final state), summary.json (see\n"
    "            --summary-json).\n"
    "progress:   the rate is audio seconds enhanced by this run per wall second since it started,\n"
    "            start-up included (summary.json's audio_seconds_per_second); the ETA appears once\n"
    "            there is a pace to base it on (scenes finished over a few seconds of work).")


def backend_option(text: str) -> tuple[str, OptionText]:
    """argparse type of ``--backend-option KEY=VALUE``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r} (e.g. "
                                         "atten_lim_db=12; `whisperjav-enhance models` lists the keys)")
    return key.strip(), OptionText(value.strip())


def _backend_help() -> str:
    hosted = ("whisperjav:<backend>[:<model>] runs one of WhisperJAV's own enhancers in the "
              "workers (e.g. whisperjav:bs-roformer:vocals; `models` lists them)")
    if importlib.util.find_spec("whisperjav") is None:
        hosted += " where WhisperJAV is importable (it is not, here)"
    return ("auto, mossformer2, zipenhancer, deepfilternet or passthrough; WhisperJAV's spellings "
            "(clearvoice, clearvoice:MossFormer2_SE_48K, zipenhancer:torch, none) work too; "
            + hosted + ". auto picks the best backend whose weights are present and says why "
            + _d(_OPT.backend))


def add_parser(sub) -> None:
    p = sub.add_parser("enhance", formatter_class=Formatter, help="enhance scene files into OUT_DIR",
                       description=DESCRIPTION, epilog=EPILOG)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="scene files and/or folders")
    p.add_argument("-o", "--out-dir", required=True, metavar="OUT_DIR",
                   help="folder the enhanced scenes are written to (created if missing; required, "
                        "no default)")
    _add_model_options(p.add_argument_group("model"))
    _add_worker_options(p.add_argument_group("workers"))
    _add_output_options(p.add_argument_group("batching and output"))
    g = p.add_argument_group("planning")
    g.add_argument("--dry-run", action="store_true",
                   help="discover, probe and plan only: print the scenes found, already done, to "
                        "redo for changed settings and rejected (with reasons), the backend auto "
                        "would pick and why, the weights or the download a run would make, the "
                        "workers, the audio seconds and a rough estimate. Starts no worker and "
                        "writes nothing (only --summary-json, when given, gets the plan); exit 2 "
                        "where a run would refuse to start (default: off)")
    g = p.add_argument_group("display")
    g.add_argument("--quiet", action="store_true",
                   help="print only errors (default: off; header, progress line, notices and a "
                        "summary table)")
    g.add_argument("--debug", action="store_true",
                   help="show the library's debug log (worker starts, retirements, kills, crashes, "
                        "requeues, remote tracebacks of failed scenes) above the progress line, "
                        "and tracebacks of errors (default: off)")
    p.set_defaults(func=cmd_enhance)


def _add_model_options(g) -> None:
    g.add_argument("--backend", default=_OPT.backend, metavar="NAME", help=_backend_help())
    g.add_argument("--backend-option", dest="backend_options", action="append", default=[],
                   type=backend_option, metavar="KEY=VALUE",
                   help="a setting of the backend, repeatable (e.g. atten_lim_db=12 or "
                        "post_filter_beta=0.02 for deepfilternet, window_seconds=2 for "
                        "mossformer2); `whisperjav-enhance models` lists each backend's keys, "
                        "types, ranges and defaults. An unknown key or a bad value is exit 2 "
                        "naming the valid ones. Settings that change the audio are part of the "
                        "resume record: outputs made without them are redone (default: none, the "
                        "backend's own defaults)")
    g.add_argument("--weights", default=None, metavar="PATH",
                   help="checkpoint file or model folder for the backend "
                        "(default: search the environment variable and the standard caches; "
                        "`whisperjav-enhance models` shows where)")
    g.add_argument("--device", default=_OPT.device,
                   help="auto (every visible GPU, else CPU), cpu, cuda or cuda:N; with --executor "
                        "ray the cluster's resources decide (auto = every GPU in the cluster, else "
                        "CPU; on a joined cluster use cuda, not cuda:N) " + _d(_OPT.device))
    g.add_argument("--no-download", action="store_true",
                   help="never fetch missing weights; a missing checkpoint is exit 2 saying the "
                        "download was not attempted (default: off, missing MossFormer2/ZipEnhancer "
                        "weights are fetched once into the Hugging Face / ModelScope cache)")
    g.add_argument("--window-seconds", type=float, default=None, metavar="S",
                   help="the same as --backend-option window_seconds=S: window the scenes are cut "
                        "into (default: the backend's, 4 s for MossFormer2)")
    g.add_argument("--overlap-seconds", type=float, default=None, metavar="S",
                   help="the same as --backend-option overlap_seconds=S: overlap between windows "
                        "(default: the backend's, 1 s for MossFormer2)")


def _add_worker_options(g) -> None:
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes per device (default: 1 per GPU; on the CPU one per "
                        "core for single-threaded runtimes such as DeepFilterNet3, one per 2 "
                        "cores for torch backends)")
    g.add_argument("--max-scenes-per-worker", type=int, default=_POL.max_scenes_per_worker,
                   metavar="N", help="retire a worker after this many scenes "
                   + _d(_POL.max_scenes_per_worker))
    g.add_argument("--max-drift-mb", type=float, default=_POL.max_drift_mb, metavar="MB",
                   help="retire a worker when reserved minus allocated GPU memory exceeds this "
                        + _d(f"{_POL.max_drift_mb:g}", " MB"))
    g.add_argument("--vram-budget-gb", type=float, default=None, metavar="GB",
                   help="cap on each worker's GPU memory (default: what is free on the GPU)")
    g.add_argument("--scene-timeout", type=float, default=_POL.scene_timeout_s, metavar="S",
                   help="watchdog: a worker that finishes no scene and no forward for this long is "
                        "killed as hung and replaced " + _d(f"{_POL.scene_timeout_s:g}", " s"))
    g.add_argument("--startup-timeout", type=float, default=_POL.startup_timeout_s, metavar="S",
                   help="longest a worker may take to start and load the model "
                        + _d(f"{_POL.startup_timeout_s:g}", " s"))
    g.add_argument("--max-crashes-per-scene", type=int, default=_POL.max_crashes_per_scene,
                   metavar="N", help="a scene present at this many worker crashes is given up "
                   "(quarantined) " + _d(_POL.max_crashes_per_scene))
    g.add_argument("--executor", choices=("pool", "inprocess", "ray"), default=_OPT.executor,
                   help="pool: spawned, isolated workers; inprocess: this process, no isolation "
                        "(debugging); ray: a Ray cluster " + _d(_OPT.executor))
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="with --executor ray: the cluster to join (default: start a local one)")


def _add_output_options(g) -> None:
    g.add_argument("--batch-seconds", type=float, default=_OPT.batch_seconds, metavar="S",
                   help="audio seconds packed into one work unit " + _d(f"{_OPT.batch_seconds:g}"))
    g.add_argument("--output-sample-rate", type=int, default=None, metavar="HZ",
                   help=f"sample rate of the outputs, {audio.MIN_SAMPLE_RATE_HZ}-"
                        f"{audio.MAX_SAMPLE_RATE_HZ} like an input's (default: keep each input's "
                        "rate)")
    g.add_argument("--output-subtype", choices=audio.SUBTYPES,
                   default=_OPT.output_subtype,
                   help="WAV sample encoding of the outputs " + _d(_OPT.output_subtype))
    g.add_argument("--clip", choices=audio.CLIP_POLICIES, default=_OPT.clip,
                   help="samples past full scale: clip them, normalize the scene down, or none "
                        "(FLOAT output only) " + _d(_OPT.clip))
    g.add_argument("--max-scene-seconds", type=float, default=None, metavar="S",
                   help="scenes longer than this fail as too_long instead of being enhanced "
                        f"(default: {audio.MAX_DURATION_S:g} s, the "
                        f"{audio.MAX_DURATION_S / 3600:g} h upper limit)")
    g.add_argument("--overwrite", action="store_true",
                   help="enhance every scene again even when its output exists and was made with "
                        "the same settings (default: off: such outputs are skipped, which is what "
                        "makes an interrupted run resumable; outputs made with other settings are "
                        "redone either way)")
    g.add_argument("--summary-json", default=None, metavar="PATH",
                   help="where the run summary is written; checked before any work: never an "
                        "input, the manifest, an output or a folder (default: "
                        "OUT_DIR/summary.json; with --dry-run the plan, and only when given)")


# -- options -------------------------------------------------------------------------------------
def options_from_args(args) -> tuple[EnhanceOptions, PoolPolicy]:
    """EnhanceOptions and PoolPolicy from parsed ``enhance`` arguments (ConfigError if invalid)."""
    backend_options: dict[str, OptionText] = {}
    for key, value in getattr(args, "backend_options", None) or ():
        if key in backend_options and backend_options[key] != value:
            raise ConfigError(f"--backend-option {key} is given twice ({backend_options[key]!r} "
                              f"and {str(value)!r}); give it once")
        backend_options[key] = value
    options = EnhanceOptions(
        backend=args.backend, weights=args.weights, device=args.device,
        output_sample_rate=args.output_sample_rate, output_subtype=args.output_subtype,
        clip=args.clip, overwrite=args.overwrite, batch_seconds=args.batch_seconds,
        backend_options=backend_options, window_seconds=args.window_seconds,
        overlap_seconds=args.overlap_seconds, executor=args.executor,
        ray_address=args.ray_address, max_scene_seconds=args.max_scene_seconds,
        download=not args.no_download)
    policy = PoolPolicy(
        workers_per_device=args.workers, max_scenes_per_worker=args.max_scenes_per_worker,
        max_drift_mb=args.max_drift_mb, vram_budget_gb=args.vram_budget_gb,
        scene_timeout_s=args.scene_timeout, startup_timeout_s=args.startup_timeout,
        max_crashes_per_scene=args.max_crashes_per_scene)
    return options, policy


# -- the command ---------------------------------------------------------------------------------
def cmd_enhance(args) -> int:
    from ..backends import parse_backend_spec
    from .consoles import out_console

    options, policy = options_from_args(args)
    parse_backend_spec(options.backend)  # unknown names fail before anything is imported
    if args.dry_run:
        from .plan import run_dry

        run_dry(args, options, policy, out_console(args.quiet))
        return EXIT_OK
    return _run(args, options, policy)


def _run(args, options, policy) -> int:
    """The run, rendered. Once the run is stopping, every later Ctrl-C/SIGTERM is ignored (the
    library's shared termination state) until the command is done; as the program, an interrupted
    command keeps ignoring them until the process exits, so none can turn exit code 130 into a
    traceback or a death by signal."""
    from ..executor.interrupts import Terminated, install_termination_handler
    from ..pipeline import enhance_scenes
    from .consoles import err_console, out_console
    from .debuglog import library_logging
    from .render import Renderer
    from .table import print_summary

    renderer = Renderer(err_console(args.quiet), quiet=args.quiet, debug=args.debug,
                        started=time.monotonic())
    interrupted = False
    with library_logging(renderer, args.debug):
        restore = install_termination_handler()
        try:
            try:
                summary = enhance_scenes(args.inputs, args.out_dir, options, policy,
                                         on_event=renderer, summary_json=args.summary_json)
            finally:
                renderer.stop()
            print_summary(summary, out_console(args.quiet), renderer)
            if args.quiet and summary.problems:
                _print_problems_quietly(summary)
            if args.debug and renderer.render_error is not None:
                err_console().print(f"the display stopped after an error: "
                                    f"{renderer.render_error!r}", markup=False)
            return summary_exit_code(summary)
        except (RunInterrupted, KeyboardInterrupt, Terminated) as exc:
            interrupted = True
            if getattr(args, "program", False):
                ignore_termination_signals()
            renderer.stop()
            _print_interrupted(getattr(exc, "summary", None), args.quiet)
            return EXIT_INTERRUPTED
        finally:
            if not (interrupted and getattr(args, "program", False)):
                restore()


def _print_interrupted(partial, quiet: bool) -> None:
    from .consoles import err_console

    err = err_console(quiet)
    done = ""
    if partial is not None:
        done = (f" ({partial.scenes_enhanced} scene(s) enhanced before it stopped; run the same "
                "command again to finish)")
    err.print(f"[yellow]interrupted[/yellow]: workers stopped, no partial outputs left{done}")
    if partial is not None:
        if partial.summary_path:
            err.print(f"summary: {partial.summary_path}", markup=False)
        for problem in partial.problems:
            err.print("[bold red]not written:[/bold red] ", end="")
            err.print(problem, markup=False)


def _print_problems_quietly(summary) -> None:
    """--quiet still prints errors: the records that could not be written."""
    from .consoles import err_console

    err = err_console()
    for problem in summary.problems:
        err.print(f"not written: {problem}", markup=False)


def ignore_termination_signals() -> None:
    """Ignore Ctrl-C, SIGTERM (and Ctrl-Break) from now on: the command's outcome is decided and
    the process is about to exit with it."""
    import signal

    for name in ("SIGINT", "SIGTERM", "SIGBREAK"):
        sig = getattr(signal, name, None)
        if sig is not None:
            try:
                signal.signal(sig, signal.SIG_IGN)
            except (ValueError, OSError):  # not the main thread: nothing to protect here
                pass


__all__ = ["add_parser", "options_from_args", "cmd_enhance", "backend_option",
           "ignore_termination_signals"]
