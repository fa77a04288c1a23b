"""What ``enhance`` prints at the end, on stdout: the summary table (what was done, the rate and
what it means, where the records are), then every failed scene and every record that could not be
written, one line each (``path: reason - message``).

Nothing is printed twice on one screen: when the notices went to the same terminal as this table
(the usual interactive run), the table leaves out what was already shown above it (auto's reasons,
each failed scene, the records' problems) and says where it is. Otherwise (stdout to a file or a
pipe) the table and the list are complete, for scripts and logs.
"""

from __future__ import annotations

from .consoles import escape, scene_detail
from .progress import RATE_MEANING
from .render import backend_note


def shown_above(renderer, console) -> bool:
    """Whether the renderer's notices landed on the same screen as ``console``'s output."""
    return renderer is not None and renderer.on_terminal and console.is_terminal


def print_summary(summary, console, renderer=None) -> None:
    """The table and the failure list of a finished (or interrupted) run."""
    from rich.table import Table

    seen = shown_above(renderer, console)
    table = Table(title="whisperjav-enhance", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in summary_rows(summary, seen and renderer.shown_note):
        table.add_row(label, value)
    console.print(table)
    _print_failures(summary, console, seen and renderer.shown_failures)
    _print_problems(summary, console, seen)


def summary_rows(summary, note_shown: bool) -> list[tuple[str, str]]:
    """(label, rich text) rows of the table."""
    w = summary.weights
    weights = escape(w.get("path") or "none needed")
    if w.get("origin") and w.get("path"):
        weights += f" ({escape(w['origin'])})"
    if w.get("random_test_weights"):
        weights += " [bold red]RANDOM TEST WEIGHTS[/bold red]"
    note = backend_note(summary.backend, summary.backend_note)
    if note and note_shown:
        note = "auto's choice, reasons above" if note.startswith("auto picked") else "see above"
    rows = [("backend", escape(summary.backend) + (f" [dim]({escape(note)})[/dim]" if note else "")),
            ("weights", weights),
            ("device", f"{escape(summary.device)} ({summary.executor})"),
            ("scenes", _scenes_text(summary)),
            ("audio", f"{summary.audio_seconds:.1f} s enhanced in {summary.wall_seconds:.1f} s"),
            ("rate", _rate_text(summary)),
            ("workers", _workers_text(summary)),
            ("peak VRAM", f"{summary.peak_vram_mib:.0f} MiB" if summary.peak_vram_mib is not None
             else "n/a (CPU)")]
    if summary.problems:
        rows.append(("problems", f"[bold red]{len(summary.problems)} record(s) not written[/bold "
                     "red] (listed below)"))
    if summary.manifest_path:
        rows.append(("manifest", escape(summary.manifest_path)))
    rows.append(("summary", escape(summary.summary_path) if summary.summary_path
                 else "[red]not written[/red]"))
    return rows


def _scenes_text(summary) -> str:
    text = (f"{summary.scenes_total} total: [green]{summary.scenes_enhanced} enhanced[/green], "
            f"{summary.scenes_skipped} already done, "
            + (f"[red]{summary.scenes_failed} failed[/red]" if summary.scenes_failed
               else "0 failed"))
    if summary.scenes_redone:
        text += f"; {summary.scenes_redone} redone for changed settings"
    pending = summary.count("pending")
    if pending:
        text += f"; [yellow]{pending} not reached[/yellow]"
    return text


def _rate_text(summary) -> str:
    """summary.rate, the number summary.json holds (n/a only when it has none)."""
    rate = summary.rate
    shown = "n/a" if rate is None else f"{rate:.1f} audio s/s"
    return f"{shown} [dim]({RATE_MEANING})[/dim]"


def _workers_text(summary) -> str:
    recycles = ", ".join(f"{k} {v}" for k, v in summary.recycles.items()) or "none"
    return (f"{summary.workers_started} started, recycled: {recycles}, crashes: "
            f"{summary.worker_crashes}")


def _print_failures(summary, console, shown: bool) -> None:
    failures = summary.failures
    if not failures:
        return
    if shown:
        console.print(f"[bold red]{len(failures)} scene(s) failed[/bold red] (listed above; "
                      "every reason is in the manifest)")
        return
    console.print(f"[bold red]{len(failures)} scene(s) failed:[/bold red]")
    for f in failures:
        message = scene_detail(f.message, f.input_path, f.reason)
        console.print(f"  {f.input_path}: {f.reason}" + (f" - {message}" if message else ""),
                      markup=False)


def _print_problems(summary, console, shown: bool) -> None:
    """The run's own records that could not be written (a full disk): exit code 1."""
    if shown and summary.problems:
        what = ", ".join(p.split(":", 1)[0] for p in summary.problems)
        console.print(f"[bold red]not written:[/bold red] {escape(what)} (why: the warnings above)")
        return
    for problem in summary.problems:
        console.print("[bold red]not written:[/bold red] ", end="")
        console.print(problem, markup=False)


__all__ = ["print_summary", "summary_rows", "shown_above"]
