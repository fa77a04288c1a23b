"""Issue 13, full disk: on a real small filesystem (tmpfs and a loop ext4), writes fail as one
``disk_full`` error naming the free space, leave no partial file and no callback traceback, keep
manifest and record lines whole, and succeed again once space is freed."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import soundfile as sf

from _mounts import ext4, fill, small_fs, tmpfs  # noqa: F401 (fixtures)
from whisperjav_enhance import audio
from whisperjav_enhance.diskspace import (DiskFull, ROOM_MARGIN_BYTES, ensure_room, format_bytes,
                                          free_bytes)
from whisperjav_enhance.errors import OutputError
from whisperjav_enhance.manifest import Manifest, read_manifest, write_json_atomic
from whisperjav_enhance.outdir import OutputRecords, hold_out_dir
from whisperjav_enhance.status import Reason

TEN_SECONDS = (0.3 * np.sin(np.arange(480_000) / 10)).astype(np.float32)   # ~940 KiB as PCM_16


@pytest.fixture
def unraisable(monkeypatch):
    """Exceptions Python could not raise (an error inside a cffi callback lands here)."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))
    return seen


def test_full_disk_write_is_disk_full_with_no_partial_and_no_callback_traceback(small_fs, capfd,
                                                                                unraisable):
    filler = fill(small_fs, leave_bytes=256 * 1024)
    target = small_fs / "scene.wav"
    with pytest.raises(DiskFull) as info:
        audio.write_audio_atomic(target, TEN_SECONDS, 48_000, root=small_fs)
    err = info.value
    assert isinstance(err, OutputError) and err.reason == Reason.DISK_FULL == "disk_full"
    assert "free on" in str(err) and str(target) in str(err)
    assert err.free_bytes is not None and err.free_bytes < 256 * 1024 + 65536
    assert sorted(p.name for p in small_fs.iterdir() if p.name != "lost+found") == ["filler.bin"]
    stderr = capfd.readouterr().err
    assert "Exception ignored" not in stderr and "Traceback" not in stderr
    assert unraisable == []
    # A rerun after freeing space completes.
    filler.unlink()
    audio.write_audio_atomic(target, TEN_SECONDS, 48_000, root=small_fs)
    y, sr = sf.read(str(target), dtype="float32")
    assert sr == 48_000 and len(y) == len(TEN_SECONDS)


def test_full_disk_keeps_the_previous_output_whole(small_fs, capfd, unraisable):
    target = small_fs / "scene.wav"
    audio.write_audio_atomic(target, TEN_SECONDS[:4800], 48_000, root=small_fs)
    before = target.read_bytes()
    fill(small_fs, leave_bytes=64 * 1024)
    with pytest.raises(DiskFull):
        audio.write_audio_atomic(target, TEN_SECONDS, 48_000, root=small_fs)
    assert target.read_bytes() == before
    assert "Exception ignored" not in capfd.readouterr().err and unraisable == []


def _lines_are_whole(path):
    raw = path.read_bytes()
    assert raw.endswith(b"\n"), "the manifest ends in part of a line"
    return [json.loads(line) for line in raw.decode("utf-8").splitlines()]


def test_manifest_lines_stay_whole_when_the_disk_fills(small_fs):
    path = small_fs / "manifest.jsonl"
    filler = fill(small_fs, leave_bytes=6000)
    written = 0
    with Manifest(path, "run1") as m:
        with pytest.raises(DiskFull) as info:
            for i in range(10_000):
                size = path.stat().st_size
                m.write({"index": i, "status": "enhanced", "message": "x" * 150})
                written += 1
        assert "free on" in str(info.value)
        assert path.stat().st_size == size          # the failed line was cut back off
        assert len(_lines_are_whole(path)) == written > 0
        filler.unlink()
        m.write({"index": written, "status": "failed", "reason": "disk_full"})
    records = read_manifest(path)
    assert [r["index"] for r in records] == list(range(written + 1))


def test_settings_records_stay_whole_when_the_disk_fills(small_fs):
    out = small_fs / "scene.wav"
    audio.write_audio_atomic(out, TEN_SECONDS[:4800], 48_000, root=small_fs)
    with hold_out_dir(small_fs) as lock, OutputRecords(small_fs, lock) as records:
        records.record(out, "first", {}, run_id="r")
        filler = fill(small_fs, leave_bytes=6000)
        with pytest.raises(DiskFull):
            for i in range(10_000):
                records.record(out, f"fp{i}", {"note": "y" * 200}, run_id="r")
        last = records.lookup(out).fingerprint
        filler.unlink()
    raw = (small_fs / ".whisperjav-enhance.outputs.jsonl").read_bytes()
    assert raw.endswith(b"\n") and all(json.loads(x) for x in raw.splitlines())
    assert OutputRecords(small_fs).lookup(out).fingerprint == last


def test_summary_on_a_full_disk_fails_clearly_and_keeps_the_old_one(small_fs):
    summary = small_fs / "summary.json"
    write_json_atomic(summary, {"old": True}, root=small_fs)
    fill(small_fs, leave_bytes=0)
    with pytest.raises(DiskFull, match="free on"):
        write_json_atomic(summary, {"scenes": ["z" * 100] * 10_000}, root=small_fs)
    assert json.loads(summary.read_text()) == {"old": True}
    assert sorted(p.name for p in small_fs.iterdir()) == ["filler.bin", "summary.json"]


def test_room_check_before_computing_a_scene(tmpfs):
    free = os.statvfs(tmpfs).f_bavail * os.statvfs(tmpfs).f_frsize
    assert free_bytes(tmpfs) == free == free_bytes(tmpfs / "not" / "made" / "yet")
    ensure_room(tmpfs, free - ROOM_MARGIN_BYTES - 4096, "scene_1.wav")   # fits with the margin
    with pytest.raises(DiskFull):
        ensure_room(tmpfs, free - ROOM_MARGIN_BYTES + 1, "scene_1.wav")  # fits only without it
    with pytest.raises(DiskFull) as info:
        ensure_room(tmpfs, 64 << 20, "scene_1.wav")
    assert info.value.reason == "disk_full" and "scene_1.wav" in str(info.value)
    assert f"{format_bytes(free)} is free on {tmpfs}" in str(info.value)
    assert info.value.free_bytes == free


@pytest.mark.parametrize("n, text", [(0, "0 B"), (1023, "1023 B"), (2048, "2 KiB"),
                                     (int(12.34 * 2**20), "12.3 MiB"), (5 * 2**30, "5.0 GiB"),
                                     (300 * 2**20, "300 MiB")])
def test_format_bytes(n, text):
    assert format_bytes(n) == text
