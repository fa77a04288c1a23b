"""Inputs and conditions a hostile or unlucky user brings (issue 13), shared by the CLI hardening
tests on the local pool and on Ray: broken scene files, and a disk that fills while a run is
paused between two scenes."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from _cli import RUN_TIMEOUT_S, Background, wait_group_gone
from _mounts import fill
from conftest import write_tone
from whisperjav_enhance.manifest import read_manifest

ROOMY_MIB = 32   # a run's own check wants the outputs plus 16 MiB free before it starts


def wav_header(channels: int, rate: int, frames: int, bits: int = 16) -> bytes:
    """A 44-byte PCM WAV header declaring frames (sizes wrap as a 32-bit field would)."""
    align = channels * bits // 8
    data = frames * align
    return (b"RIFF" + struct.pack("<I", (36 + data) & 0xFFFFFFFF) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * align, align, bits)
            + b"data" + struct.pack("<I", data & 0xFFFFFFFF))


def write_truncated_wav(path: Path) -> None:
    """A WAV whose header declares 10 s at 48 kHz and holds 0.5 s."""
    samples = (np.sin(np.arange(24_000) / 5) * 8000).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(wav_header(1, 48_000, 480_000) + samples.tobytes())


def write_cut_flac(path: Path) -> None:
    """A FLAC cut in half: its STREAMINFO still declares 10 s (found when decoding, in a worker)."""
    write_tone(path, 10.0, rate=48_000)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_sparse_huge(path: Path) -> None:
    """4 KiB on disk, a header claiming 64 channels at 384 kHz for 87 s (8 GiB decoded)."""
    frames = 384_000 * 87
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(wav_header(64, 384_000, frames))
        fh.truncate(44 + frames * 64 * 2)


# what each input write_bad_inputs makes must be recorded as, by file name
BAD_INPUT_REASONS = {"cut.wav": "truncated", "cut_flac.flac": "truncated", "huge.wav": "too_large",
                     "pipe.wav": "not_a_file", "zero": "not_a_file", "x.wav": "not_a_file"}


def write_bad_inputs(src: Path, tmp_path: Path) -> list[Path]:
    """Hostile scenes in src (cut WAV, cut FLAC, sparse 8 GiB header) and, beside it, a FIFO and
    a folder named like audio; returns the extra paths to name on the command line."""
    write_truncated_wav(src / "cut.wav")
    write_cut_flac(src / "cut_flac.flac")
    write_sparse_huge(src / "huge.wav")
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    (tmp_path / "x.wav").mkdir()
    return [fifo, Path("/dev/zero"), tmp_path / "x.wav"]


def fill_mid_run(args, tmp_path: Path, out: Path, fs: Path, leave_bytes: int):
    """Start the run, pause it after its first enhanced scene, fill the disk, let it finish."""
    bg = Background(args, tmp_path)
    try:
        bg.wait_for(lambda: any(l["status"] == "enhanced" for l in read_manifest(
            out / "manifest.jsonl")), RUN_TIMEOUT_S, "the first enhanced scene")
        bg.pause()
        filler = fill(fs, leave_bytes=leave_bytes)
        bg.resume()
        rc = bg.finish()
        text = bg.text()
        assert not wait_group_gone(bg.pgid, 30), "workers outlived the run"
    finally:
        bg.close()
    return rc, text, filler
