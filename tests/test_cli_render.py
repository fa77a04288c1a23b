"""What a person sees in an 80-column terminal (issue 15): one rate with a stated meaning (the
summary's), an ETA only once there is a pace, a progress line that never wraps, nothing printed
twice (after Ctrl-C either), and --debug's log above the line without breaking it.

The renderer is driven by the events of real runs; the command itself runs in a real
pseudo-terminal (tests/_terminal.py), whose output is replayed by a small terminal emulator.
"""

from __future__ import annotations

import io
import json
import re
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from _cli import CLI, FAST, RUN_TIMEOUT_S, empty_caches_env, good_scenes, run_cli
from _terminal import Screen, Terminal, duplicated
from conftest import write_tone
from whisperjav_enhance.cli import Renderer
from whisperjav_enhance.cli.consoles import SafeConsole, make_console
from whisperjav_enhance.cli.progress import (MARGIN, MIN_ETA_BASIS_S, RATE_MEANING, RunProgress,
                                             progress_line)
from whisperjav_enhance.cli.table import print_summary
from whisperjav_enhance.config import EnhanceOptions, PoolPolicy
from whisperjav_enhance.pipeline import enhance_scenes

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _terminal_console(out, width=80) -> SafeConsole:
    """An 80-column terminal console made as the CLI makes its own (consoles.make_console)."""
    console = SafeConsole(file=out, force_terminal=True, width=width, highlight=False)
    console.soft_wrap = False
    return console


# -- the line ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("width", [80, 60, 40, 120])
@pytest.mark.parametrize("scenes,audio,done,rate_s", [
    (3, 12.0, 0, None),                  # nothing done yet: no rate, no ETA
    (41, 12.0, 5, 2.5),
    (2000, 240_000.0, 1999, 7.0),        # long run: minutes/hours, 4-digit counts, an ETA
    (99_999, 3_600_000.0, 50_000, 0.5),  # absurd: still one line, shortened last
])
def test_the_line_is_one_line_narrower_than_the_terminal(width, scenes, audio, done, rate_s):
    p = RunProgress(started=0.0)
    p.start(scenes, audio)
    p.worker_ready(0.0)
    now = 100.0
    for i in range(done):
        p.scene_finished("enhanced", audio / scenes, now * (i + 1) / max(done, 1))
    line = progress_line(p, width, now)
    console = Console(file=io.StringIO(), width=width, force_terminal=True)
    lines = console.render_lines(line, console.options, pad=False)
    assert len(lines) == 1
    assert line.cell_len <= width - MARGIN
    if width >= 80:
        assert f"{done}/{scenes} scenes" in line.plain and "audio s/s" in line.plain
        assert ("ETA" in line.plain) == (done > 0)


def test_rate_means_audio_enhanced_per_second_since_the_start_and_eta_waits_for_a_pace():
    p = RunProgress(started=10.0)
    p.start(scenes_total=4, audio_total=40.0)
    assert p.rate(12.0) is None and p.eta(12.0) is None
    p.worker_ready(13.0)                           # start-up: 3 s
    p.scene_finished("enhanced", 10.0, 14.0)       # 1 s after ready: no pace yet
    assert p.rate(14.0) == pytest.approx(10.0 / 4.0) and p.eta(14.0) is None
    p.scene_finished("failed", 10.0, 13.0 + MIN_ETA_BASIS_S + 1)   # counts for the bar, not the rate
    now = 13.0 + MIN_ETA_BASIS_S + 1
    assert p.rate(now) == pytest.approx(10.0 / (now - 10.0))
    pace = 20.0 / (now - 13.0)                     # since the first worker was ready
    assert p.eta(now) == pytest.approx(20.0 / pace)
    assert p.eta(now + 1.0) == pytest.approx(20.0 / pace - 1.0)   # counts down between scenes
    p.scene_finished("skipped", 99.0, now)         # skipped scenes are not audio of this run
    assert p.audio_done == 20.0 and p.scenes_done == 3
    assert "start-up included" in RATE_MEANING


@pytest.mark.parametrize("audio_s, wall_s, shown", [(0.0, 2.0, "0.0 audio s/s"),  # all skipped
                                                     (30.0, 4.0, "7.5 audio s/s"),
                                                     (0.0, 0.0, "n/a")])          # no time yet
def test_the_table_shows_the_rate_summary_json_holds(audio_s, wall_s, shown):
    from whisperjav_enhance.summary import RunSummary
    from whisperjav_enhance.cli.table import summary_rows

    summary = RunSummary(scenes=(), backend="passthrough", backend_note="", weights={},
                         device="cpu", executor="pool", out_dir="/out", manifest_path=None,
                         summary_path=None, run_id="r", workers_started=0, recycles={},
                         worker_crashes=0, audio_seconds=audio_s, wall_seconds=wall_s,
                         peak_vram_mib=None)
    rate_row = dict(summary_rows(summary, False))["rate"]
    assert rate_row.startswith(shown + " ") and RATE_MEANING in rate_row
    in_json = summary.as_dict()["audio_seconds_per_second"]
    assert (in_json is None) if shown == "n/a" else float(shown.split()[0]) == in_json


@pytest.fixture
def short_path():
    """A folder with a short absolute path: scene paths fit on one line of a notice."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="wje", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# -- a real run rendered at 80 columns ---------------------------------------------------------------
def test_a_real_run_renders_once_and_within_80_columns(short_path):
    tmp_path = short_path
    src = tmp_path / "scenes"
    good_scenes(src, 12, seconds=0.3)
    (src / "zz_corrupt.wav").write_text("not audio " * 50)
    err, out = io.StringIO(), io.StringIO()
    renderer = Renderer(_terminal_console(err), quiet=False, debug=False,
                        started=time.monotonic())
    summary = enhance_scenes([src], tmp_path / "out",
                             EnhanceOptions(backend="passthrough", device="cpu"),
                             PoolPolicy(workers_per_device=1, max_scenes_per_worker=3),
                             on_event=renderer)
    ended = time.monotonic()
    renderer.stop()
    stdout = _terminal_console(out)
    print_summary(summary, stdout, renderer)
    assert renderer.render_error is None
    screen = Screen(80).feed(err.getvalue() + out.getvalue())
    lines = screen.lines()
    assert not screen.wrapped, screen.wrapped
    assert all(len(line) <= 80 for line in lines)
    assert not duplicated(lines), duplicated(lines)
    text = "\n".join(lines)
    assert "0/13 scenes" not in text            # the progress line was erased: the table took over
    assert sum("zz_corrupt.wav" in line for line in lines) == 1
    assert "1 scene(s) failed (listed above" in text
    # One rate: the line's last value and the summary's are the same quantity.
    assert renderer.progress.audio_enhanced == pytest.approx(summary.audio_seconds)
    assert renderer.progress.rate(ended) == pytest.approx(
        summary.audio_seconds / summary.wall_seconds, rel=0.25)
    rate_row = next(line for line in lines if "│ rate" in line)
    assert f"{summary.audio_seconds / summary.wall_seconds:.1f} audio s/s" in rate_row


def test_the_table_is_complete_when_not_on_the_same_terminal(tmp_path):
    src = tmp_path / "scenes"
    good_scenes(src, 2)
    (src / "bad.wav").write_text("not audio")
    err, out = io.StringIO(), io.StringIO()
    renderer = Renderer(_terminal_console(err), quiet=False, debug=False)
    summary = enhance_scenes([src], tmp_path / "out", EnhanceOptions(backend="passthrough",
                             device="cpu"), PoolPolicy(workers_per_device=1), on_event=renderer)
    renderer.stop()
    plain = Console(file=out, width=80, highlight=False, soft_wrap=True)   # stdout to a file
    print_summary(summary, plain, renderer)
    assert re.search(r"^  .*bad\.wav: unreadable - ", out.getvalue(), re.M)


# -- output channels ----------------------------------------------------------------------------------
class _Broken(io.StringIO):
    def write(self, text):
        raise BrokenPipeError(32, "Broken pipe")


def test_a_broken_console_goes_quiet_instead_of_exiting():
    console = SafeConsole(file=_Broken(), force_terminal=True, width=80)
    console.print("hello")          # rich's own handler would raise SystemExit(1) here
    assert console.quiet


def test_a_console_on_a_closed_descriptor_goes_quiet(tmp_path):
    import os

    r, w = os.pipe()
    stream = os.fdopen(w, "w")
    os.close(r)                      # nobody reads: writes fail with EPIPE
    old, sys.stderr = sys.stderr, stream
    try:
        console = make_console(stderr=True)
        renderer = Renderer(console, quiet=False, debug=True)
        from whisperjav_enhance.events import Log

        renderer(Log("first"))
        renderer(Log("second"))
        assert console.quiet and renderer.render_error is None
        stream.write("more")         # the descriptor now points at the null device
        stream.flush()
    finally:
        sys.stderr = old
        stream.close()


# -- the command in a real 80-column terminal -----------------------------------------------------------
def _finished_screen(term: Terminal, expected_rc: int) -> list[str]:
    """Wait for the run in term, then its screen's lines, checked for wrapped lines."""
    try:
        rc = term.wait(RUN_TIMEOUT_S)
    finally:
        term.close()
    screen = term.screen()
    assert rc == expected_rc, term.text()
    assert not screen.wrapped, screen.wrapped
    return screen.lines()


@pytest.mark.slow
def test_cli_in_an_80_column_terminal_says_everything_once(short_path):
    tmp_path = short_path
    src = tmp_path / "scenes"
    for i in range(4):
        write_tone(src / f"film_scene_{i:02d}.wav", 1.0, seed=i)
    (src / "zz_broken.wav").write_text("not audio " * 50)
    term = Terminal([*CLI, "enhance", str(src), "-o", str(tmp_path / "out"), "--device", "cpu",
                     "--workers", "1"], env=empty_caches_env(tmp_path), cwd=tmp_path)
    lines = _finished_screen(term, 1)
    text = "\n".join(lines)
    assert not duplicated(lines), duplicated(lines)
    assert text.count("auto picked deepfilternet") == 1, text       # the note once, above
    assert "auto's choice, reasons above" in text
    assert sum("zz_broken.wav" in line for line in lines) == 1
    assert "start-up included" in text and "Traceback" not in text
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    shown = re.search(r"│ rate +│ ([0-9.]+) audio s/s", text)
    assert shown and float(shown.group(1)) == pytest.approx(
        summary["audio_seconds_per_second"], abs=0.051), text


@pytest.mark.slow
def test_ctrl_c_in_an_80_column_terminal_leaves_one_clean_screen(tmp_path):
    src = tmp_path / "scenes"
    for i in range(40):
        write_tone(src / f"film_scene_{i:02d}.wav", 2.0, seed=i)
    term = Terminal([*CLI, "enhance", str(src), "-o", str(tmp_path / "out"), "--backend",
                     "deepfilternet", "--device", "cpu", "--workers", "1"],
                    env=empty_caches_env(tmp_path), cwd=tmp_path)
    try:
        term.read_until(lambda t: re.search(r"\b[1-9]\d*/40 scenes", ANSI.sub("", t)),
                        RUN_TIMEOUT_S, "the first finished scene on the progress line")
        term.type(b"\x03")                     # Ctrl-C, as typed: the whole process group
    except BaseException:
        term.close()
        raise
    lines = _finished_screen(term, 130)
    assert not duplicated(lines), duplicated(lines)
    text = "\n".join(lines)
    assert text.count("interrupted") == 1 and "Traceback" not in text, text
    assert "/40 scenes" not in text            # the line is gone, not left behind twice
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["interrupted"] is True


@pytest.mark.slow
def test_debug_log_goes_above_the_line_without_breaking_it(tmp_path):
    src = tmp_path / "scenes"
    good_scenes(src, 8, seconds=0.3)
    term = Terminal([*CLI, "enhance", str(src), "-o", str(tmp_path / "out"), *FAST,
                     "--max-scenes-per-worker", "2", "--debug"], cwd=tmp_path)
    lines = _finished_screen(term, 0)
    debug = [line for line in lines if "debug executor:" in line]
    assert any("start worker" in line for line in debug), lines
    assert any("retires" in line for line in debug), lines
    assert all(line.startswith("debug executor:") for line in debug), debug   # never mid-line
    assert not any("scenes  " in line and "audio s/s" in line for line in lines)


def test_without_debug_no_library_log_shows(tmp_path):
    src = tmp_path / "scenes"
    good_scenes(src, 4, seconds=0.3)
    r = run_cli("enhance", src, "-o", tmp_path / "out", *FAST, "--max-scenes-per-worker", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not re.search(r"^debug ", r.stdout + r.stderr, re.M), r.stderr
    r = run_cli("enhance", src, "-o", tmp_path / "out2", *FAST, "--max-scenes-per-worker", "2",
                "--debug")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^debug executor: start worker 1", r.stderr, re.M), r.stderr
    assert re.search(r"debug executor: worker \d+ retires", r.stderr)
