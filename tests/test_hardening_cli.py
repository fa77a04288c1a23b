"""Issue 13 through the real command line, one test per case, on the local pool (the Ray variants
are in test_cli_hardening_ray.py). The primitives have their own tests (test_hardening_*.py);
these check that what a user types ends the way the issue asks: every scene one terminal state,
whole records, the right exit code, no traceback, nothing written where it must not be.

    1 disk fills mid-run          5 240-byte name              9 double Ctrl-C / SIGTERM
    2 broken or closed stdout/err 6 truncated WAV and FLAC    10 absurd output sample rates
    3 two runs on one OUT_DIR     7 rerun with other settings 11 sparse 64 ch x 384 kHz header
    4 links and --summary-json    8 FIFO, /dev/zero, folder
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import soundfile as sf

from _cli import (CLI, FAST, RUN_TIMEOUT_S, Background, assert_whole_copy, env_with, good_scenes,
                  last_run_lines, manifest_lines_whole, partials, run_cli, wait_group_gone)
from _hostile import BAD_INPUT_REASONS, ROOMY_MIB, fill_mid_run, write_bad_inputs
from _mounts import mounted, mounted_tmpfs
from conftest import write_tone
from whisperjav_enhance.atomic import temporary_name
from whisperjav_enhance.manifest import read_manifest


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(params=["tmpfs", "ext4"])
def roomy_fs(request, tmp_path):
    """A real filesystem of ROOMY_MIB, mounted for the test (skipped where mounting is refused)."""
    with mounted(request.param, tmp_path / "fs", ROOMY_MIB) as point:
        yield point


# -- 1: the disk fills mid-run -----------------------------------------------------------------------
def test_1_disk_fills_mid_run_each_scene_one_state_then_a_rerun_completes(roomy_fs, tmp_path):
    src, out = tmp_path / "scenes", roomy_fs / "out"
    scenes = good_scenes(src, 10, seconds=1.0)           # ~94 KiB per output
    args = ["enhance", src, "-o", out, *FAST, "--max-scenes-per-worker", "1"]
    rc, text, filler = fill_mid_run(args, tmp_path, out, roomy_fs, leave_bytes=256 << 10)

    assert rc == 1, text
    assert "Traceback" not in text and "Exception ignored" not in text, text
    lines = last_run_lines(out)
    assert sorted(l["index"] for l in lines) == list(range(len(scenes)))   # one state each
    failed = [l for l in lines if l["status"] == "failed"]
    assert failed and all(l["reason"] == "disk_full" for l in failed), lines
    assert all("free on" in l["message"] for l in failed)                 # names the free space
    # Scenes that could not be written were not computed: refused before reading.
    assert any("needs about" in l["message"] for l in failed), failed
    for l in lines:
        if l["status"] == "enhanced":
            assert_whole_copy(Path(l["input"]), Path(l["output"]))
        else:
            assert not Path(out / Path(l["input"]).name).exists()
    summary = _summary(out)       # 256 KiB was left: the summary fits
    assert summary["scenes_failed"] == len(failed) and summary["problems"] == []
    assert not partials(out)

    filler.unlink()                # space freed: the same command finishes the job
    r = run_cli(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    again = {l["index"]: l["status"] for l in last_run_lines(out)}
    assert sorted(k for k, v in again.items() if v == "enhanced") == sorted(l["index"] for l in failed)
    for p in scenes:
        assert_whole_copy(p, out / p.name)


def test_1_disk_full_under_the_records_too_is_reported_and_exit_1(tmp_path):
    with mounted_tmpfs(tmp_path / "fs", ROOMY_MIB) as point:
        src, out = tmp_path / "scenes", point / "out"
        good_scenes(src, 10, seconds=1.0)
        args = ["enhance", src, "-o", out, *FAST, "--max-scenes-per-worker", "1"]
        rc, text, filler = fill_mid_run(args, tmp_path, out, point, leave_bytes=0)
        assert rc == 1, text
        assert "Traceback" not in text and "Exception ignored" not in text, text
        assert "not written: manifest" in text and "not written: summary" in text, text
        assert not (out / "summary.json").exists()
        manifest_lines_whole(out / "manifest.jsonl")   # whatever got in is whole lines
        assert not partials(out)
        filler.unlink()
        r = run_cli(*args)
        assert r.returncode == 0, r.stdout + r.stderr
        assert _summary(out)["scenes_failed"] == 0


# -- 2: the run survives its own output channels ------------------------------------------------------
CHANNEL_CASES = {
    # cmd 2>&1 >/dev/null | head -c 10, with every scene logged after the pipe closed
    "stderr-pipe": dict(stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, read="stderr",
                        head=10, extra=["--debug"], env={}),
    # the same with the progress line live (rich thinks it is on a terminal)
    "stderr-pipe-live": dict(stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, read="stderr",
                             head=10, extra=[], env={"TTY_COMPATIBLE": "1"}),
    # cmd | true: the reader is gone before the summary table is written
    "stdout-pipe": dict(stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, read="stdout",
                        head=0, extra=[], env={}),
}


@pytest.mark.parametrize("case", sorted(CHANNEL_CASES))
def test_2_a_pipe_closed_early_stops_rendering_not_the_work(tmp_path, case):
    c = CHANNEL_CASES[case]
    src, out = tmp_path / "scenes", tmp_path / "out"
    scenes = good_scenes(src, 16, seconds=0.3)
    args = ["enhance", src, "-o", out, *FAST, "--max-scenes-per-worker", "2", *c["extra"]]
    proc = subprocess.Popen([*CLI, *map(str, args)], stdout=c["stdout"], stderr=c["stderr"],
                            env=env_with(**c["env"]), start_new_session=True)
    try:
        pipe = getattr(proc, c["read"])
        head = pipe.read(c["head"]) if c["head"] else b""   # like `head -c 10`, then gone
        pipe.close()
        rc = proc.wait(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert len(head) == c["head"]
    assert rc == 0              # the exit code of the work, not of the display
    lines = last_run_lines(out)
    assert sorted(l["index"] for l in lines) == list(range(len(scenes)))
    assert all(l["status"] == "enhanced" for l in lines)
    assert _summary(out)["scenes_enhanced"] == len(scenes)


def test_2_closed_descriptors_at_start_change_nothing(tmp_path):
    src, out = tmp_path / "scenes", tmp_path / "out"
    scenes = good_scenes(src, 6, seconds=0.3)
    (src / "bad.wav").write_text("not audio")
    cmd = " ".join([*CLI, "enhance", str(src), "-o", str(out), *FAST]) + " >&- 2>&-"
    r = subprocess.run(["bash", "-c", cmd], timeout=RUN_TIMEOUT_S)
    assert r.returncode == 1                     # the bad scene, nothing else
    # Every line parses: nothing meant for the closed channels landed in the run's own files.
    lines = last_run_lines(out)
    assert len(lines) == len(scenes) + 1
    assert [l["reason"] for l in lines if l["status"] == "failed"] == ["unreadable"]
    assert _summary(out)["scenes_enhanced"] == len(scenes)


# -- 3: two runs on one OUT_DIR -------------------------------------------------------------------------
def test_3_second_run_on_a_busy_out_dir_is_refused_naming_the_first(tmp_path):
    src, out = tmp_path / "scenes", tmp_path / "out"
    scenes = good_scenes(src, 8, seconds=0.3)
    args = ["enhance", src, "-o", out, *FAST, "--max-scenes-per-worker", "1"]
    first = Background(args, tmp_path, "first")
    try:
        first.wait_for(lambda: read_manifest(out / "manifest.jsonl"), RUN_TIMEOUT_S,
                       "the first scene of the first run")
        first.pause()
        # What the first run would be writing: only a live run's temporaries look like this.
        live_temp = out / temporary_name(scenes[-1].name)
        live_temp.write_bytes(b"in progress")
        r = run_cli(*args)
        assert r.returncode == 2, r.stdout + r.stderr
        assert "in use by another run" in r.stderr and "Traceback" not in r.stderr
        assert f"pid {first.proc.pid}" in r.stderr and socket.gethostname() in r.stderr
        assert "since" in r.stderr
        assert live_temp.read_bytes() == b"in progress"     # untouched
        first.resume()
        assert first.finish() == 0, first.text()
    finally:
        first.close()
    lines = read_manifest(out / "manifest.jsonl")
    assert len({l["run"] for l in lines}) == 1 and len(lines) == len(scenes)
    assert all(l["status"] == "enhanced" for l in lines)
    r = run_cli(*args)          # no run is live now: whatever temporary is left is stale
    assert r.returncode == 0, r.stdout + r.stderr
    assert not partials(out)


# -- 4: nothing written through links or over inputs ------------------------------------------------------
def test_4_manifest_symlink_is_refused_and_not_followed(tmp_path):
    src, out = tmp_path / "scenes", tmp_path / "out"
    good_scenes(src, 2)
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me\n")
    out.mkdir()
    (out / "manifest.jsonl").symlink_to(victim)
    r = run_cli("enhance", src, "-o", out, *FAST)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "symbolic link" in r.stderr and "Traceback" not in r.stderr
    assert victim.read_text() == "keep me\n"
    assert not list(out.glob("*.wav")) and not (out / "summary.json").exists()


@pytest.mark.parametrize("target", ["input", "manifest", "output", "folder"])
def test_4_summary_json_naming_what_it_must_not_replace_is_refused_before_any_work(tmp_path,
                                                                                  target):
    src, out = tmp_path / "scenes", tmp_path / "out"
    scenes = good_scenes(src, 2)
    first = run_cli("enhance", scenes[0], "-o", out, *FAST)      # a manifest and an output exist
    assert first.returncode == 0, first.stdout + first.stderr
    before = {p: p.read_bytes() for p in [*scenes, out / "manifest.jsonl", out / scenes[0].name]}
    path = {"input": scenes[1], "manifest": out / "manifest.jsonl", "output": out / scenes[1].name,
            "folder": src}[target]
    r = run_cli("enhance", src, "-o", out, *FAST, "--summary-json", path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "--summary-json" in r.stderr and "Traceback" not in r.stderr
    assert "backend passthrough" not in r.stderr        # refused before the run started
    assert {p: p.read_bytes() for p in before} == before
    assert not (out / scenes[1].name).exists()


# -- 5, 6, 8, 11: names and inputs that used to break a run --------------------------------------------
def test_5_a_240_byte_name_enhances(tmp_path):
    src, out = tmp_path / "scenes", tmp_path / "out"
    name = "あ" * 80 + ".wav"
    assert len(name.encode("utf-8")) >= 240
    write_tone(src / name, 0.3)
    r = run_cli("enhance", src, "-o", out, *FAST)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_whole_copy(src / name, out / name)
    assert not partials(out)


def test_6_8_11_bad_inputs_fail_alone_with_true_reasons(tmp_path):
    src, out = tmp_path / "scenes", tmp_path / "out"
    good = good_scenes(src, 2)
    extra = write_bad_inputs(src, tmp_path)
    r = run_cli("enhance", src, *extra, "-o", out, *FAST,
                timeout=120)    # fast: nobody waits on the pipe or the device, nothing is read
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    by_name = {Path(l["input"]).name: l for l in last_run_lines(out)}
    assert {n: by_name[n]["reason"] for n in BAD_INPUT_REASONS} == BAD_INPUT_REASONS
    assert "declares 10.00 s" in by_name["cut.wav"]["message"]
    assert "8.0 GiB" in by_name["huge.wav"]["message"]
    assert by_name["huge.wav"]["worker"] is None       # refused from its header, never read
    for g in good:
        assert by_name[g.name]["status"] == "enhanced"
        assert_whole_copy(g, out / g.name)


# -- 7: a rerun with other settings -----------------------------------------------------------------------
def _rerun(src, out, *extra):
    r = run_cli("enhance", src, "-o", out, *FAST, *extra)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = _summary(out)
    return r.stdout + r.stderr, summary


def test_7_rerun_redoes_outputs_made_with_other_settings_and_says_so(tmp_path):
    src, out = tmp_path / "scenes", tmp_path / "out"
    scenes = good_scenes(src, 3)
    text, s = _rerun(src, out)
    assert s["scenes_enhanced"] == 3
    text, s = _rerun(src, out)                                        # same settings: skipped
    assert (s["scenes_skipped"], s["scenes_redone"]) == (3, 0) and "redone" not in text
    for extra in (["--output-sample-rate", "16000"], ["--backend-option", "sample_rate=16000"]):
        text, s = _rerun(src, out, *extra)
        assert (s["scenes_enhanced"], s["scenes_redone"]) == (3, 3), text
        assert "3 existing output(s) will be redone" in text and "3 redone" in text
        text, s = _rerun(src, out, *extra)                             # and then kept
        assert (s["scenes_skipped"], s["scenes_redone"]) == (3, 0), text
    assert sf.info(str(out / scenes[0].name)).samplerate == 48_000    # the option's rate, resampled back
    # An output with no record (an older version made it) is kept, with a note.
    extra_scene = good_scenes(tmp_path / "more", 4)[-1]
    shutil.copy(extra_scene, src / extra_scene.name)
    shutil.copy(extra_scene, out / extra_scene.name)
    text, s = _rerun(src, out, "--backend-option", "sample_rate=16000")
    assert s["scenes_skipped"] == 4 and "made before settings were recorded" in text
    text, s = _rerun(src, out, "--overwrite")
    assert s["scenes_enhanced"] == 4 and s["scenes_redone"] == 0


@pytest.mark.slow
def test_7_another_backend_redoes(tmp_path):
    src, out = tmp_path / "scenes", tmp_path / "out"
    good_scenes(src, 2, seconds=0.3)
    _rerun(src, out)
    r = run_cli("enhance", src, "-o", out, "--backend", "deepfilternet", "--device", "cpu",
                "--workers", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    s = _summary(out)
    assert (s["backend"], s["scenes_enhanced"], s["scenes_redone"]) == ("deepfilternet", 2, 2)
    assert "2 existing output(s) will be redone" in r.stdout + r.stderr


# -- 9: double Ctrl-C -------------------------------------------------------------------------------------
SECOND_SIGNALS = [(0.0, signal.SIGINT, True), (0.005, signal.SIGINT, False),
                  (0.02, signal.SIGTERM, True), (0.05, signal.SIGINT, True),
                  (0.1, signal.SIGINT, False), (0.3, signal.SIGTERM, False)]


@pytest.mark.slow
@pytest.mark.parametrize("delay,second,group", SECOND_SIGNALS)
def test_9_a_second_signal_during_shutdown_still_writes_the_summary(tmp_path, delay, second,
                                                                     group):
    src, out = tmp_path / "scenes", tmp_path / "out"
    good_scenes(src, 10, seconds=0.2)
    bg = Background(["enhance", src, "-o", out, *FAST, "--max-scenes-per-worker", "1"], tmp_path)
    send = (lambda sig: os.killpg(bg.pgid, sig)) if group else \
        (lambda sig: os.kill(bg.proc.pid, sig))
    try:
        bg.wait_for(lambda: read_manifest(out / "manifest.jsonl"), RUN_TIMEOUT_S,
                    "the first finished scene")
        send(signal.SIGINT)
        time.sleep(delay)
        if bg.proc.poll() is None:
            send(second)
        rc = bg.finish(60)
        text = bg.text()
        assert not wait_group_gone(bg.pgid, 30), "processes left after the interrupt"
    finally:
        bg.close()
    assert rc == 130, text
    assert "Traceback" not in text and "interrupted" in text, text
    summary = _summary(out)
    assert summary["interrupted"] is True
    assert summary["scenes_enhanced"] == len(list(out.glob("*.wav")))
    assert not partials(out)
    manifest_lines_whole(out / "manifest.jsonl")


# -- 10: output sample rates ------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", ["1", "10000000"])
def test_10_absurd_output_sample_rates_exit_2(tmp_path, rate):
    src, out = tmp_path / "scenes", tmp_path / "out"
    good_scenes(src, 1)
    r = run_cli("enhance", src, "-o", out, *FAST, "--output-sample-rate", rate)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "4000 to 384000" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()
