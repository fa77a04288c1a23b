"""Putting the stand-in WhisperJAV on the path of a test and its spawned workers, with a chosen
release line, and reading what its enhancers logged."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import soundfile as sf

STUB_DIR = Path(__file__).resolve().parent   # holds the stand-in ``whisperjav`` package


def forget_whisperjav() -> None:
    """Drop every imported ``whisperjav`` module, so the next import reads the line afresh."""
    for name in [n for n in sys.modules if n == "whisperjav" or n.startswith("whisperjav.")]:
        del sys.modules[name]


def use_stub(monkeypatch, line: str = "1.9", log: Path | None = None) -> None:
    """The stand-in at ``line`` for this test: on ``sys.path`` and ``PYTHONPATH`` (spawned workers
    inherit both), ``WHISPERJAV_STUB_LINE`` set, and its enhancers logging to ``log``."""
    forget_whisperjav()
    monkeypatch.setenv("WHISPERJAV_STUB_LINE", line)
    paths = [str(STUB_DIR)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    monkeypatch.syspath_prepend(str(STUB_DIR))
    if log is not None:
        monkeypatch.setenv("WHISPERJAV_STUB_LOG", str(log))
    monkeypatch.delenv("WHISPERJAV_STUB_UNAVAILABLE", raising=False)


def read_log(log: Path) -> list[dict]:
    """The stand-in enhancers' call log (one dict per call); [] when nothing was logged."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def pipeline_scenes(folder: Path, durations, media: str = "movie", seed: int = 0) -> list[tuple]:
    """Scene tuples as WhisperJAV's scene detector builds them: 48 kHz mono PCM_16 files named
    ``<media>_scene_<idx:04d>.wav`` with start, end and duration."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    scenes, start = [], 12.5
    for i, seconds in enumerate(durations):
        path = folder / f"{media}_scene_{i:04d}.wav"
        rng = np.random.default_rng(seed + i)
        n = int(round(seconds * 48_000))
        t = np.arange(n) / 48_000
        x = 0.3 * np.sin(2 * np.pi * (300.0 + 50 * i) * t) + 0.02 * rng.standard_normal(n)
        sf.write(str(path), x.astype("float32"), 48_000, subtype="PCM_16")
        d = sf.info(str(path)).frames / 48_000
        scenes.append((path, start, start + d, d))
        start += d + 0.75
    return scenes


def wav_format(path) -> tuple:
    """(sample rate, channels, subtype) of a WAV file."""
    info = sf.info(str(path))
    return info.samplerate, info.channels, info.subtype
