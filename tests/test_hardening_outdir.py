"""Issue 13, one run per OUT_DIR and resume keyed on settings: the run lock refuses a second live
run naming it (exit-2 class), is taken over from a dead one, guards the clean-up of temporaries;
settings records say whether an existing output was made with this run's settings."""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from whisperjav_enhance import audio
from whisperjav_enhance.atomic import temporary_name
from whisperjav_enhance.errors import ConfigError, OutputError
from whisperjav_enhance.fingerprints import (changed_settings, fingerprint, output_settings,
                                             weights_identity)
from whisperjav_enhance.outdir import (COMPACT_SLACK, LOCK_NAME, RECORDS_NAME, Match, OutDirBusy,
                                       OutputRecord, OutputRecords, hold_out_dir,
                                       remove_stale_temporaries)

HOLDER = """
import sys, time
from whisperjav_enhance.outdir import hold_out_dir
with hold_out_dir(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def _start_holder(out: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE,
                            text=True)
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    if not ready or proc.stdout.readline().strip() != "held":
        proc.kill()
        proc.wait(10)
        pytest.fail("the holder process did not take the lock")
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    proc.stdout.close()


def test_a_second_run_is_refused_naming_the_first_and_cannot_delete_its_temporaries(tmp_path):
    out = tmp_path / "out"
    output = out / "scene_1.wav"
    proc = _start_holder(out)
    try:
        live_temp = out / temporary_name(output.name)   # the first run is writing scene_1
        live_temp.write_bytes(b"in progress")
        with pytest.raises(OutDirBusy) as info:
            with hold_out_dir(out):
                pytest.fail("entered a held OUT_DIR")
        err = info.value
        assert isinstance(err, ConfigError)             # the CLI's exit code 2
        assert f"pid {proc.pid}" in str(err) and socket.gethostname() in str(err)
        assert "since" in str(err) and err.holder["pid"] == proc.pid
        assert live_temp.exists()
    finally:
        _stop(proc)
    # The holder died without releasing: its lock is free and taken over; now the temporary of
    # the dead run goes.
    with hold_out_dir(out) as lock:
        assert remove_stale_temporaries(lock, [output]) == [live_temp]
    assert not live_temp.exists()


def test_the_lock_is_released_on_every_exit_path(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        with hold_out_dir(out) as lock:
            raise KeyboardInterrupt
    assert not lock.held
    with pytest.raises(AssertionError, match="lock"):
        remove_stale_temporaries(lock, [out / "x.wav"])
    with hold_out_dir(out) as again:
        assert again.held and again.holder["pid"] == os.getpid()
    assert json.loads((out / LOCK_NAME).read_text() or "{}") == {}


def test_an_error_inside_the_run_is_not_mistaken_for_a_busy_folder(tmp_path):
    with pytest.raises(OSError, match="inner"):
        with hold_out_dir(tmp_path / "out"):
            raise OSError("inner")


def test_a_lock_file_that_is_a_link_or_an_out_dir_that_is_a_file_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).symlink_to(victim)
    with pytest.raises(OutputError, match="symbolic link"):
        with hold_out_dir(out):
            pass
    assert victim.read_text() == "keep"
    with pytest.raises(OutputError, match="not a folder"):
        with hold_out_dir(victim):
            pass


# -- fingerprints --------------------------------------------------------------------------------
BASE = dict(backend="mossformer2", weights_id="abc", output_sample_rate=None,
            output_subtype="PCM_16", clip="clip", audio_options={"window_seconds": 4.0})


@pytest.mark.parametrize("change", [dict(backend="zipenhancer"), dict(weights_id="def"),
                                    dict(output_sample_rate=16_000), dict(output_subtype="FLOAT"),
                                    dict(clip="normalize"),
                                    dict(audio_options={"window_seconds": 6.0}),
                                    dict(audio_options={"window_seconds": 4.0, "post_norm": True})])
def test_every_setting_that_changes_the_audio_changes_the_fingerprint(change):
    before, after = output_settings(**BASE), output_settings(**{**BASE, **change})
    assert fingerprint(before) != fingerprint(after)
    assert changed_settings(before, after) and "v" not in changed_settings(before, after)


def test_equal_settings_give_equal_fingerprints():
    assert fingerprint(output_settings(**BASE)) == fingerprint(
        output_settings(**{**BASE, "audio_options": {"window_seconds": 4}}))
    assert changed_settings(None, output_settings(**BASE)) == ["unknown"]


def test_weights_identity_follows_content_not_location(tmp_path):
    a = tmp_path / "a" / "model.ckpt"
    a.parent.mkdir()
    a.write_bytes(os.urandom(3 << 20))
    moved = tmp_path / "b" / "model.ckpt"
    moved.parent.mkdir()
    shutil.copy(a, moved)
    assert weights_identity(a) == weights_identity(moved) != weights_identity(None)
    data = bytearray(moved.read_bytes())
    data[-1] ^= 0xFF
    moved.write_bytes(bytes(data))
    assert weights_identity(moved) != weights_identity(a)
    assert weights_identity(tmp_path / "a") != weights_identity(tmp_path / "b")


# -- settings records ----------------------------------------------------------------------------
def _output(out: Path, name: str = "scene_1.wav") -> Path:
    return audio.write_audio_atomic(out / name, np.zeros(480, np.float32), 48_000, root=out)


def test_records_say_same_changed_or_unrecorded(tmp_path):
    out = tmp_path / "out"
    made, old, other = _output(out), _output(out, "sub/old.wav"), _output(out, "other.wav")
    fp = fingerprint(output_settings(**BASE))
    with hold_out_dir(out) as lock, OutputRecords(out, lock) as records:
        records.record(made, fp, output_settings(**BASE), run_id="run1")
        records.record(other, "v1-previous", {}, run_id="run0")
    fresh = OutputRecords(out)                               # a later run reads them back
    assert fresh.match(made, fp) == Match.SAME
    assert fresh.match(other, fp) == Match.CHANGED
    assert fresh.match(old, fp) == Match.UNRECORDED          # made before records existed
    assert fresh.lookup(made).settings["backend"] == "mossformer2"
    assert fresh.lookup(made).output == "scene_1.wav" and fresh.lookup(made).run == "run1"
    audio.write_audio_atomic(made, np.ones(960, np.float32) * 0.1, 48_000, root=out)
    assert OutputRecords(out).match(made, fp) == Match.UNRECORDED  # replaced since its record


def test_records_are_read_robustly_and_written_only_under_the_lock(tmp_path):
    out = tmp_path / "out"
    made = _output(out)
    with hold_out_dir(out) as lock, OutputRecords(out, lock) as records:
        records.record(made, "v1-a")
    with open(out / RECORDS_NAME, "ab") as fh:
        fh.write(b'not json\n{"output": 3}\n["list"]\n{"output": "scene_1.wav", "fp": "v1-cut')
    assert OutputRecords(out).lookup(made).fingerprint == "v1-a"
    with pytest.raises(AssertionError, match="lock"):
        OutputRecords(out).record(made, "v1-b")


def test_records_file_that_is_a_link_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    out = tmp_path / "out"
    made = _output(out)
    (out / RECORDS_NAME).symlink_to(victim)
    with pytest.raises(OutputError, match="symbolic link"):
        OutputRecords(out).lookup(made)
    with hold_out_dir(out) as lock, pytest.raises(OutputError, match="symbolic link"):
        OutputRecords(out, lock).record(made, "v1-a")
    assert victim.read_text() == "keep"


def test_records_are_compacted_when_reruns_pile_them_up(tmp_path):
    out = tmp_path / "out"
    made = _output(out)
    with hold_out_dir(out) as lock, OutputRecords(out, lock) as records:
        for i in range(COMPACT_SLACK + 10):
            records.record(made, f"v1-{i}")
    assert len((out / RECORDS_NAME).read_text().splitlines()) == COMPACT_SLACK + 10
    with hold_out_dir(out) as lock:
        assert OutputRecords(out, lock).lookup(made).fingerprint == f"v1-{COMPACT_SLACK + 9}"
    assert len((out / RECORDS_NAME).read_text().splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == sorted([LOCK_NAME, RECORDS_NAME, made.name])


def test_an_output_removed_before_its_record_is_a_record_problem_not_a_crash(tmp_path):
    """A neighbour removing the output between its rename and its record: an OutputError for the
    run to report (a record problem), never a bare FileNotFoundError; the records stay whole."""
    out = tmp_path / "out"
    kept, gone = _output(out), _output(out, "gone.wav")
    with hold_out_dir(out) as lock, OutputRecords(out, lock) as records:
        records.record(kept, "v1-a", {"backend": "x"}, run_id="r")
        before = (out / RECORDS_NAME).read_bytes()
        gone.unlink()
        with pytest.raises(OutputError, match=f"cannot record {gone}: No such file") as info:
            records.record(gone, "v1-a", run_id="r")
        assert not isinstance(info.value, FileNotFoundError)
        records.record(kept, "v1-b", run_id="r")   # the next record still goes in
    lines = (out / RECORDS_NAME).read_bytes()
    assert lines.startswith(before) and lines.count(b"\n") == 2
    assert OutputRecords(out).lookup(kept).fingerprint == "v1-b"


def test_a_record_line_reads_back_as_the_same_record(tmp_path):
    rec = OutputRecord("sub/シーン 1.wav", "v1-a", {"backend": "x", "n": [1, 2]}, 10, 123, None)
    line = rec.to_line()
    assert line.endswith("\n") and line.count("\n") == 1 and "シーン" in line
    assert OutputRecord.from_line(line) == rec
    for bad in ("", "[]", '{"output": 1, "fp": "a", "size": 1, "mtime_ns": 1}',
                '{"output": "a", "fp": "a", "size": 1.5, "mtime_ns": 1}', line[:-10]):
        assert OutputRecord.from_line(bad) is None, bad


def test_an_out_dir_that_is_a_dangling_link_is_refused_as_not_a_folder(tmp_path):
    out = tmp_path / "out"
    out.symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        with hold_out_dir(out):
            pass
    assert not (tmp_path / "nowhere").exists()
