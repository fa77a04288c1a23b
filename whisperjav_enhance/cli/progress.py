"""The progress line of ``enhance`` on a terminal: one line, one rate, an honest ETA.

    ⠹ ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━ 12/40 scenes  17.5/42.0 s audio  4.6 audio s/s  ETA 0:12

- **The rate** is :data:`RATE_MEANING`: audio seconds enhanced by this run divided by the wall
  seconds since the run started, start-up included. It is the number summary.json reports as
  ``audio_seconds_per_second`` and the summary table prints, so the last value seen here and the
  table's agree. Failed and skipped scenes add no audio to it.
- **The ETA** appears only once there is a pace to base it on: a scene has finished and the
  workers have worked :data:`MIN_ETA_BASIS_S` since the first was ready. It is the audio still to
  do at the pace since then (start-up is paid once and already behind; without worker events,
  since the run started), recomputed at each finished scene and counted down between them.
- **The line never wraps**: it is cut to the terminal's width minus :data:`MARGIN` (a typed
  ``^C`` is echoed after it and must not push it onto a second line, or the next redraw would
  leave a copy behind). The bar takes what the text leaves; the text is shortened last.
- It is transient: erased when the run ends, when the summary table takes over.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.live import Live
from rich.text import Text

from ..status import Status

RATE_MEANING = ("audio seconds enhanced by this run per wall second since it started, start-up "
                "included")
# Columns left free at the right of the line: room for the terminal's "^C" echo.
MARGIN = 2
# Narrower than this, the bar is left out (the numbers say more).
MIN_BAR = 8
# The ETA waits for this much work (seconds since the first worker was ready): over a shorter
# span the pace is set by how a work unit's scenes finish together (all at once, right after a
# start), and extrapolating that gives wild numbers.
MIN_ETA_BASIS_S = 3.0
# Redraws per second: enough for the spinner to show life, little CPU on a 2-core machine.
REFRESH_PER_SECOND = 4
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_SPINNER_ASCII = "|/-\\"


@dataclass
class RunProgress:
    """The numbers behind the line, fed by the run's events (times: ``time.monotonic()``)."""

    started: float                   # when the run started (the rate's wall clock starts here)
    scenes_total: int = 0            # scenes in the run, already-done ones included
    audio_total: float = 0.0         # audio seconds of the scenes sent to workers
    scenes_done: int = 0             # scenes with a terminal state
    audio_done: float = 0.0          # audio seconds of scenes finished (enhanced or failed)
    audio_enhanced: float = 0.0      # audio seconds enhanced by this run (the rate)
    pace_from: float | None = None   # when the first worker was ready (the ETA's basis)
    eta_s: float | None = None       # ETA computed at the last finished scene ...
    eta_at: float = 0.0              # ... and when

    def start(self, scenes_total: int, audio_total: float) -> None:
        self.scenes_total, self.audio_total = scenes_total, audio_total

    def worker_ready(self, now: float) -> None:
        if self.pace_from is None:
            self.pace_from = now

    def scene_finished(self, status: str, duration_s: float, now: float) -> None:
        self.scenes_done += 1
        if status == Status.SKIPPED:
            return  # not part of the audio sent to workers
        self.audio_done += duration_s
        if status == Status.ENHANCED:
            self.audio_enhanced += duration_s
        basis = now - (self.pace_from if self.pace_from is not None else self.started)
        if self.audio_done > 0 and basis >= MIN_ETA_BASIS_S:
            remaining = max(self.audio_total - self.audio_done, 0.0)
            self.eta_s, self.eta_at = remaining * basis / self.audio_done, now

    def rate(self, now: float) -> float | None:
        """:data:`RATE_MEANING`; None until something was enhanced."""
        elapsed = now - self.started
        return self.audio_enhanced / elapsed if self.audio_enhanced > 0 and elapsed > 0 else None

    def eta(self, now: float) -> float | None:
        """Seconds still to go; None while there is no pace to base it on."""
        if self.eta_s is None:
            return None
        return max(self.eta_s - (now - self.eta_at), 0.0)


def format_clock(seconds: float) -> str:
    """``0:07``, ``12:03``, ``1:02:03``."""
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_audio(done: float, total: float) -> str:
    """``17.5/42.0 s audio``, ``12.5/96.0 min audio``, ``3.2/40.1 h audio`` (the total's unit)."""
    for limit, scale, unit in ((600, 1, "s"), (36_000, 60, "min"), (float("inf"), 3600, "h")):
        if total < limit:
            digits = 1 if total / scale < 1000 else 0
            return f"{done / scale:.{digits}f}/{total / scale:.{digits}f} {unit} audio"
    raise AssertionError("unreachable")


def stats_text(p: RunProgress, now: float) -> str:
    rate = p.rate(now)
    eta = p.eta(now)
    parts = [f"{p.scenes_done}/{p.scenes_total} scenes", format_audio(p.audio_done, p.audio_total),
             f"{rate:.1f} audio s/s" if rate is not None else "-- audio s/s"]
    if eta is not None:
        parts.append(f"ETA {format_clock(eta)}")
    return "  ".join(parts)


def progress_line(p: RunProgress, width: int, now: float, unicode: bool = True) -> Text:
    """The whole line for a terminal ``width`` columns wide: never wider than width - MARGIN."""
    room = max(width - MARGIN, 1)
    frames = _SPINNER if unicode else _SPINNER_ASCII
    spinner = frames[int(now * 10) % len(frames)]
    stats = stats_text(p, now)
    bar_width = room - len(spinner) - len(stats) - 2
    line = Text(spinner + " ", style="green")
    if bar_width >= MIN_BAR:
        fraction = min(p.audio_done / p.audio_total, 1.0) if p.audio_total > 0 else 0.0
        done = int(fraction * bar_width)
        glyph = "━" if unicode else "#"
        line.append(glyph * done, style="magenta")
        line.append(("━" if unicode else "-") * (bar_width - done), style="bright_black")
        line.append(" ")
    line.append(stats)
    line.truncate(room, overflow="ellipsis")
    return line


class ProgressDisplay:
    """The live line on a terminal console (rich's Live, transient)."""

    def __init__(self, console, progress: RunProgress):
        self.console = console
        self.progress = progress
        self.unicode = (console.encoding or "").lower().startswith("utf")
        self.live = Live(console=console, get_renderable=self._render, transient=True,
                         refresh_per_second=REFRESH_PER_SECOND)
        self.live.start()

    def _render(self) -> Text:
        return progress_line(self.progress, self.console.width, time.monotonic(), self.unicode)

    def stop(self) -> None:
        self.live.stop()


__all__ = ["RATE_MEANING", "MARGIN", "RunProgress", "ProgressDisplay", "progress_line",
           "stats_text", "format_clock", "format_audio"]
