"""Issue 13, hostile or unlucky inputs: truncated files fail as ``truncated``, special files named
explicitly become scenes that fail alone without being opened, decoding holds one mono copy
(never every channel), oversized headers fail as ``too_large`` before a byte is read, and output
sample rates are held to the input bounds."""

from __future__ import annotations

import os
import struct
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from _hostile import wav_header, write_cut_flac, write_sparse_huge, write_truncated_wav
from conftest import write_tone
from whisperjav_enhance import audio
from whisperjav_enhance.containers import wav_declared_size
from whisperjav_enhance.errors import AudioError, ConfigError
from whisperjav_enhance.scenes import discover_scenes
from whisperjav_enhance.status import REASON_MEANINGS, Reason


def _reason(fn) -> str:
    with pytest.raises(AudioError) as info:
        fn()
    assert info.value.reason in REASON_MEANINGS
    return info.value.reason


# -- truncated -----------------------------------------------------------------------------------
def test_wav_declaring_10_s_but_holding_half_a_second_fails_truncated(tmp_path):
    p = tmp_path / "cut.wav"
    write_truncated_wav(p)                         # header: 10 s at 48 kHz; holds 0.5 s
    assert sf.info(str(p)).frames == 24_000        # libsndfile alone sees a valid 0.5 s file
    assert _reason(lambda: audio.probe(p)) == Reason.TRUNCATED
    with pytest.raises(AudioError, match=r"declares 10.00 s but the file holds 0.50 s"):
        audio.read_audio(p)


def test_cut_flac_fails_truncated_when_fewer_frames_decode(tmp_path):
    p = tmp_path / "cut.flac"
    write_cut_flac(p)
    assert audio.probe(p).frames == 480_000        # STREAMINFO still declares 10 s
    assert _reason(lambda: audio.read_audio(p)) == Reason.TRUNCATED


def test_whole_files_and_unknown_lengths_are_not_truncated(tmp_path):
    whole = tmp_path / "whole.wav"
    write_tone(whole, 0.5)
    whole.write_bytes(whole.read_bytes() + b"\0")   # a stray pad byte after the data
    assert len(audio.read_audio(whole)[0]) == 24_000
    streamed = tmp_path / "streamed.wav"             # a writer that never came back to the sizes
    samples = np.zeros(4800, "<i2").tobytes()
    hdr = bytearray(wav_header(1, 48_000, 4800))
    hdr[4:8] = hdr[40:44] = b"\xff\xff\xff\xff"
    streamed.write_bytes(bytes(hdr) + samples)
    with open(streamed, "rb") as fh:
        assert wav_declared_size(fh, streamed.stat().st_size) is None
    assert len(audio.read_audio(streamed)[0]) == 4800
    listed = tmp_path / "list.wav"                   # chunks after the data are fine
    sf.write(str(listed), np.zeros(4800, np.float32), 48_000)
    listed.write_bytes(listed.read_bytes() + b"LIST" + struct.pack("<I", 4) + b"INFO")
    assert len(audio.read_audio(listed)[0]) == 4800


# -- special files -------------------------------------------------------------------------------
def _probe_without_blocking(path: Path) -> str:
    box = {}

    def target():
        try:
            audio.probe(path)
        except AudioError as exc:
            box["reason"] = exc.reason

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(10)
    if t.is_alive():
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # release it, then fail
        t.join(10)
        pytest.fail(f"probing {path} blocked")
    return box.get("reason", "accepted")


def test_special_files_named_explicitly_are_scenes_that_fail_alone(tmp_path):
    good = tmp_path / "good.wav"
    write_tone(good, 0.1)
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    folder = tmp_path / "x.wav"
    folder.mkdir()
    dangling = tmp_path / "gone.wav"
    dangling.symlink_to(tmp_path / "nowhere.wav")
    inputs = [good, fifo, "/dev/zero", folder, dangling]
    scenes = discover_scenes(inputs, tmp_path / "out")
    assert sorted(s.relative for s in scenes) == ["gone.wav", "good.wav", "pipe.wav", "x.wav",
                                                  "zero.wav"]
    reasons = {s.input_path.name: _probe_without_blocking(s.input_path) for s in scenes}
    assert reasons == {"good.wav": "accepted", "pipe.wav": Reason.NOT_A_FILE,
                       "zero": Reason.NOT_A_FILE, "x.wav": Reason.NOT_A_FILE,
                       "gone.wav": Reason.MISSING}


def test_folder_scans_still_skip_pipes_and_devices(tmp_path):
    src = tmp_path / "in"
    write_tone(src / "a.wav", 0.05)
    os.mkfifo(src / "b.wav")
    (src / "c.wav").symlink_to("/dev/zero")
    assert [s.relative for s in discover_scenes([src], tmp_path / "out")] == ["a.wav"]


def test_missing_inputs_and_empty_folders_still_refuse_the_run(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        discover_scenes([tmp_path / "typo.wav"], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no .wav or .flac"):
        discover_scenes([tmp_path / "empty"], tmp_path / "out")


# -- host memory ---------------------------------------------------------------------------------
def test_sparse_file_claiming_64_channels_at_384_khz_fails_too_large_before_reading(tmp_path):
    p = tmp_path / "huge.wav"
    write_sparse_huge(p)                            # 4.3 GB apparent, 4 KiB on disk
    assert _reason(lambda: audio.probe(p)) == Reason.TOO_LARGE
    tracemalloc.start()
    try:
        with pytest.raises(AudioError, match="too_large|GiB") as info:
            audio.read_audio(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.reason == Reason.TOO_LARGE and "8.0 GiB" in str(info.value)
    assert peak < 8 << 20, f"refusing it allocated {peak} bytes"


def test_decoding_downmixes_block_by_block(tmp_path):
    p = tmp_path / "eight.wav"
    frames, channels = 48_000 * 20, 8
    rng = np.random.default_rng(0)
    data = (0.1 * rng.standard_normal((frames, channels))).astype(np.float32)
    sf.write(str(p), data, 48_000, subtype="PCM_16")
    expect = sf.read(str(p), dtype="float32")[0].mean(axis=1, dtype=np.float32)
    del data
    tracemalloc.start()
    try:
        mono, info = audio.read_audio(p)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.channels == 8 and np.allclose(mono, expect, atol=1e-6)
    whole = frames * channels * 4                    # what decoding every channel at once takes
    assert peak < whole / 3, f"decoding held {peak} bytes; every channel at once is {whole}"


def test_budget_is_a_stated_constant(tmp_path, monkeypatch):
    p = tmp_path / "s.wav"
    write_tone(p, 1.0, channels=2)
    monkeypatch.setattr(audio, "MAX_DECODED_BYTES", 48_000 * 2 * 4 - 1)
    assert _reason(lambda: audio.probe(p)) == Reason.TOO_LARGE


# -- output sample rates -------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [1, 3_999, 384_001, 10_000_000, 0, -48_000, 44_100.5, True,
                                  "48000", None])
def test_output_sample_rates_outside_the_input_bounds_are_config_errors(tmp_path, rate):
    with pytest.raises(ConfigError, match="4000 to 384000"):
        audio.check_output_sample_rate(rate)


def test_valid_output_sample_rates_and_the_writer_refuses_the_rest(tmp_path):
    assert audio.check_output_sample_rate(4_000) == 4_000
    assert audio.check_output_sample_rate(np.int64(48_000)) == 48_000
    with pytest.raises(ValueError, match="4000 to 384000"):
        audio.write_audio_atomic(tmp_path / "o.wav", np.zeros(10, np.float32), 1)
    assert list(tmp_path.iterdir()) == []


def test_a_wav_cut_off_inside_its_header_fails_alone(tmp_path):
    """Review find: struct.unpack on a short read of the fmt chunk escaped as a traceback."""
    from whisperjav_enhance import audio
    from whisperjav_enhance.errors import AudioError

    cut = tmp_path / "cut_header.wav"
    cut.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00")  # fmt body cut at 2 bytes
    with pytest.raises(AudioError) as info:
        audio.probe(cut)
    assert info.value.reason == "unreadable"


def test_a_link_to_a_scene_is_read_and_a_pipe_swapped_in_after_the_look_is_refused(tmp_path,
                                                                                    monkeypatch):
    """Inputs follow links (a link to a scene is a scene); a FIFO that replaces the file between
    the metadata check and the open is refused by the open (never blocks, never decoded)."""
    real = tmp_path / "real.wav"
    write_tone(real, 0.1)
    link = tmp_path / "link.wav"
    link.symlink_to(real)
    assert audio.probe(link).frames == audio.probe(real).frames

    swapped = tmp_path / "swapped.wav"
    write_tone(swapped, 0.1)
    looked = os.stat(swapped)        # what the metadata check saw: a regular file
    swapped.unlink()
    os.mkfifo(swapped)               # what the open meets
    real_stat = os.stat
    monkeypatch.setattr(os, "stat", lambda p, *a, **k: looked if str(p) == str(swapped)
                        else real_stat(p, *a, **k))
    assert _probe_without_blocking(swapped) == Reason.NOT_A_FILE
    with pytest.raises(AudioError, match=r"is a pipe \(FIFO\), not an audio file"):
        audio.probe(swapped)
