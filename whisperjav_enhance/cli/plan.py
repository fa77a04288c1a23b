"""``enhance --dry-run``: what a run with the same arguments would do, from
:func:`whisperjav_enhance.dryrun.plan_scenes` (discovery, probing and planning only: no worker,
no download, nothing written, OUT_DIR neither created nor locked).

Printed on stdout: a table (backend and why, weights or the download a run would make first,
device and workers, scenes to enhance / already done / redone for changed settings / rejected,
audio seconds and work units, a rough estimate with its basis), the run's notes, and every scene
the run would reject with its reason. ``--summary-json PATH`` (only when given) gets
``RunPlan.as_dict()``, at exactly the path plan_scenes checked; the default OUT_DIR/summary.json is
not written, and a plan inside an OUT_DIR that does not exist yet is refused (a dry run creates
no OUT_DIR). Whatever a real run would refuse before its first scene is raised by plan_scenes as
the same error, so the exit code is the one the run would give before starting (2), else 0.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError
from .consoles import escape, scene_detail
from .progress import format_clock
from .render import backend_note


def run_dry(args, options, policy, console) -> None:
    """Plan, print the plan, write it to --summary-json when that was given."""
    from ..dryrun import plan_scenes
    from ..manifest import write_json_atomic
    from ..outdir import summary_target

    target = None if args.summary_json is None else summary_target(args.summary_json)
    root = None if target is None else _plan_root(target, Path(os.path.abspath(args.out_dir)))
    plan = plan_scenes(args.inputs, args.out_dir, options, policy, args.summary_json)
    written = None
    if plan.summary_path is not None:  # the path plan_scenes checked: written as checked
        assert Path(plan.summary_path) == target, (plan.summary_path, target)
        written = write_json_atomic(plan.summary_path, plan.as_dict(), root=root)
    print_plan(plan, console, written)


def _plan_root(target: Path, out_root: Path) -> Path | None:
    """The ``root`` the plan is written under: OUT_DIR when the plan goes inside it (its folders
    are then never followed through links), else None. ConfigError (exit 2) for a plan inside an
    OUT_DIR that does not exist: writing it would create OUT_DIR, which a dry run never does."""
    if not target.is_relative_to(out_root):
        return None
    if not out_root.is_dir():
        raise ConfigError(f"--summary-json {target} is inside the output folder {out_root}, which "
                          "does not exist yet, and a dry run creates nothing: name a file outside "
                          "it, or run once without --dry-run first")
    return out_root


def print_plan(plan, console, written=None) -> None:
    """On a terminal a two-column grid folded to its width; elsewhere one ``label  value`` line
    per row, so scripts and logs can search it line by line."""
    from rich.table import Table

    console.print("[bold]whisperjav-enhance --dry-run[/bold]: nothing was started or written")
    rows = plan_rows(plan, written)
    if console.is_terminal:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
        for label, value in rows:
            grid.add_row(label, value)
        console.print(grid)
    else:
        for label, value in rows:
            console.print(f"[bold]{label:<9}[/bold] {value}")
    for note in plan.notes:
        console.print("[bold]note:[/bold] ", end="")
        console.print(note, markup=False)
    rejected = [s for s in plan.scenes if s.status == "failed"]
    if rejected:
        console.print(f"[bold red]{len(rejected)} scene(s) would fail before reaching a "
                      "worker:[/bold red]")
        for s in rejected:
            message = scene_detail(s.message, s.input_path, s.reason)
            console.print(f"  {s.input_path}: {s.reason}" + (f" - {message}" if message else ""),
                          markup=False)


def plan_rows(plan, written=None) -> list[tuple[str, str]]:
    note = backend_note(plan.backend, plan.backend_note)
    rows = [("backend", escape(plan.backend) + (f" [dim]({escape(note)})[/dim]" if note else "")),
            ("weights", _weights_text(plan)),
            ("device", _device_text(plan)),
            ("scenes", _scenes_text(plan)),
            ("audio", f"{plan.audio_seconds:.1f} s to enhance in {plan.units} work unit(s)"),
            ("estimate", _estimate_text(plan)),
            ("output", escape(plan.out_dir))]
    if written is not None:
        rows.append(("plan", f"written to {escape(written)}"))
    return rows


def _weights_text(plan) -> str:
    if plan.download:
        return f"[yellow]a run would download them first[/yellow]: {escape(plan.download)}"
    w = plan.weights
    if not w.get("path"):
        return "none needed"
    text = escape(w["path"]) + (f" ({escape(w['origin'])})" if w.get("origin") else "")
    if w.get("random_test_weights"):
        text += " [bold red]RANDOM TEST WEIGHTS[/bold red]"
    return text


def _device_text(plan) -> str:
    if plan.workers is None:
        workers = "the Ray cluster decides the workers"
    else:
        workers = f"{plan.workers} worker(s) would start"
    return f"{escape(plan.device)} ({plan.executor}); {workers}"


def _scenes_text(plan) -> str:
    to_run, skipped, rejected = plan.count("pending"), plan.count("skipped"), plan.count("failed")
    text = f"{len(plan.scenes)} found: [green]{to_run} to enhance[/green]"
    if plan.scenes_redone:
        text += f" ({plan.scenes_redone} redone for changed settings)"
    text += f", {skipped} already done"
    if plan.scenes_kept_unrecorded:
        text += f" ({plan.scenes_kept_unrecorded} made before settings were recorded, kept)"
    text += f", [red]{rejected} rejected[/red]" if rejected else ", 0 rejected"
    return text


def _estimate_text(plan) -> str:
    if plan.estimate_seconds is None:
        return f"none [dim]({escape(plan.estimate_basis)})[/dim]"
    return (f"about {format_clock(plan.estimate_seconds)} "
            f"[dim]({escape(plan.estimate_basis)})[/dim]")


__all__ = ["run_dry", "print_plan", "plan_rows"]
