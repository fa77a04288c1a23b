"""Turns the library's events (whisperjav_enhance.events) into what a person sees on stderr: two
header lines, the progress line (progress.py, on a terminal only), and one line per notice (a
failed scene, a recycled or crashed worker, a warning, a download).

Rendering never stops the run: the library calls the renderer from inside the run, so any error
while rendering (a console that broke in a way the console itself did not catch, a bug here) makes
the renderer quiet for the rest of the run and is kept in ``render_error`` instead of raised.
Ctrl-C and SIGTERM (BaseExceptions) pass through untouched.
"""

from __future__ import annotations

import time

from ..diskspace import format_bytes
from ..status import Retirement, Status
from .consoles import escape, scene_detail
from .progress import ProgressDisplay, RunProgress


def backend_note(backend: str, note: str) -> str:
    """The library's note minus the obvious "X was requested" (kept: auto's reasons, warnings)."""
    obvious = f"{backend} was requested"
    return note[len(obvious):].lstrip("; ") if note.startswith(obvious) else note


class Renderer:
    """The ``on_event`` callback of a CLI run; ``stop()`` ends any live display (idempotent)."""

    def __init__(self, console, quiet: bool, debug: bool, started: float | None = None):
        self.console = console
        self.quiet = quiet
        self.debug = debug
        self.progress = RunProgress(started if started is not None else time.monotonic())
        self.display: ProgressDisplay | None = None
        self.failed = 0
        self.shown_note = False       # the backend note was printed above the progress line
        self.shown_failures = False   # failed scenes were printed as they happened
        self.shown_warnings: list[str] = []  # warnings printed (problems with the run's records)
        self.render_error: BaseException | None = None
        self.download_bar = None      # rich Progress of a weights download (terminal only)
        self.download_tasks = {}      # file name -> task in download_bar
        self.download_done = set()    # files reported complete (plain output: once each)

    # -- the callback ------------------------------------------------------------------------------
    def __call__(self, event) -> None:
        if self.quiet:
            return
        handler = getattr(self, "on_" + type(event).__name__, None)
        if handler is None:
            return
        try:
            handler(event)
        except Exception as exc:  # noqa: BLE001 - see the module docstring
            self.render_error = exc
            self.quiet = True
            self.stop()

    @property
    def on_terminal(self) -> bool:
        """Whether what was printed landed on a terminal a person is looking at."""
        return not self.quiet and self.console.is_terminal

    def print(self, *parts, **kw) -> None:
        """One notice, above the live line when there is one."""
        if self.quiet:
            return
        kw.setdefault("highlight", False)
        self.console.print(*parts, **kw)

    def print_text(self, text: str, style: str = "dim") -> None:
        """Plain text (no markup), e.g. a debug log record."""
        if self.quiet:
            return
        self.console.print(text, style=style, markup=False, highlight=False)

    # -- a run ---------------------------------------------------------------------------------------
    def on_RunStarted(self, ev) -> None:
        self.progress.start(ev.scenes_total, ev.audio_seconds)
        note = backend_note(ev.backend, ev.note)
        self.print(f"[bold]backend[/bold] {escape(ev.backend)} on {escape(ev.device)}"
                   + (f" [dim]({escape(note)})[/dim]" if note else ""))
        self.shown_note = bool(note)
        rest = ev.scenes_total - ev.scenes_to_run
        self.print(f"[bold]scenes[/bold]  {ev.scenes_total} found, {ev.scenes_to_run} to enhance "
                   f"({ev.audio_seconds:.1f} s of audio)"
                   + (f", {rest} already done or unusable" if rest else ""))
        if self.console.is_terminal and ev.scenes_to_run and self.display is None:
            self.display = ProgressDisplay(self.console, self.progress)

    def on_SceneFinished(self, ev) -> None:
        self.progress.scene_finished(ev.status, ev.duration_s, time.monotonic())
        if ev.status == Status.FAILED:
            self.failed += 1
            self.shown_failures = True
            message = scene_detail(ev.message, ev.input_path, ev.reason)
            self.print(f"[red]failed[/red] {escape(ev.input_path)}: {ev.reason}"
                       + (f" [dim]({escape(message)})[/dim]" if message else ""))
        elif self.debug:
            self.print(f"[dim]{ev.status} {escape(ev.input_path)}[/dim]")
        # The live line picks the new numbers up at its next redraw (REFRESH_PER_SECOND): no
        # redraw per scene, which a run of thousands of short scenes would pay for.

    def on_WorkerStarted(self, ev) -> None:
        self.progress.worker_ready(time.monotonic())
        if self.debug:
            self.print(f"[dim]worker {ev.worker} started on {escape(ev.device)} (pid {ev.pid}, "
                       f"{ev.startup_s:.1f} s to load)[/dim]")

    def on_WorkerRetired(self, ev) -> None:
        if ev.reason != Retirement.SHUTDOWN:
            self.print(f"[cyan]recycled[/cyan] worker {ev.worker} after {ev.scenes_done} scenes "
                       f"({ev.reason})")

    def on_WorkerCrashed(self, ev) -> None:
        self.print(f"[bold red]worker {ev.worker} crashed[/bold red]: {escape(ev.description)}; "
                   f"{ev.requeued} scene(s) requeued")

    def on_Log(self, ev) -> None:
        if ev.level == "warning":
            self.shown_warnings.append(ev.message)
            self.print(f"[yellow]warning[/yellow]: {escape(ev.message)}")
        else:
            self.print(f"[dim]{escape(ev.message)}[/dim]")

    # -- weights downloads (whisperjav_enhance.hub), before any worker starts ------------------------
    def on_DownloadStarted(self, ev) -> None:
        self.print(f"[bold]downloading[/bold] {ev.backend} weights from {ev.hub} "
                   f"({escape(ev.repo_id)}) into {escape(ev.destination)}")
        if self.display is not None or not self.console.is_terminal:
            return  # a run's line is live (one live display at a time), or plain output
        self.download_bar = _download_bar(self.console)
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
            self.print(f"  {escape(ev.filename)}: {format_bytes(ev.bytes_total)} received")

    def on_DownloadFinished(self, ev) -> None:
        self._stop_download()
        if ev.ok:  # a failure is raised to the command, which prints it once
            self.print(f"[green]weights ready[/green] in {escape(ev.path)} "
                       f"({ev.seconds:.1f} s, checked by the backend's strict load)")

    def _stop_download(self) -> None:
        if self.download_bar is not None:
            bar, self.download_bar, self.download_tasks = self.download_bar, None, {}
            bar.stop()

    def stop(self) -> None:
        """End the live displays (the progress line is erased: the summary takes over)."""
        self._stop_download()
        if self.display is not None:
            display, self.display = self.display, None
            try:
                display.stop()
            except Exception as exc:  # noqa: BLE001 - a broken terminal: nothing left to show
                self.render_error = self.render_error or exc


def _download_bar(console):
    """A download's bar, one line at 80 columns (file name cut, bar of fixed width)."""
    from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn,
                               TimeRemainingColumn, TransferSpeedColumn)
    from rich.table import Column

    return Progress(TextColumn("{task.description}", table_column=Column(
                        no_wrap=True, overflow="ellipsis", max_width=24)),
                    BarColumn(bar_width=16), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=console)


__all__ = ["Renderer", "backend_note"]
