"""Audio files in and out: probing, reading as mono float32 at a requested rate (resampled with
soxr), and atomic writing (temporary name in the destination folder, then rename).

Everything that can be wrong with a scene file is reported as an :class:`AudioError` with a
specific ``reason``, so one bad scene never takes a run down with a traceback."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from .atomic import atomic_file
from .errors import AudioError

# Bounds outside which a file is rejected rather than enhanced. Module-level so tests can shrink them.
MIN_SAMPLE_RATE_HZ = 4_000
MAX_SAMPLE_RATE_HZ = 384_000
MIN_DURATION_S = 0.01          # shorter than this is "empty" for our purposes (10 ms)
MAX_DURATION_S = 4 * 3600.0    # a "scene" of more than 4 hours is a mistake, not a scene
MAX_CHANNELS = 64

CLIP_POLICIES = ("clip", "normalize", "none")
SUBTYPES = ("PCM_16", "PCM_24", "FLOAT")


@dataclass(frozen=True)
class AudioInfo:
    """What probing a file learned, without decoding its samples."""

    path: Path
    sample_rate: int   # Hz, as stored in the file
    channels: int      # downmixed to mono on read
    frames: int        # samples per channel
    format: str        # container, e.g. "WAV", "FLAC"
    subtype: str       # sample encoding, e.g. "PCM_16"

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def probe(path: str | os.PathLike) -> AudioInfo:
    """Read a file's header and check it is something we can enhance."""
    path = Path(path)
    if not path.exists():
        raise AudioError("missing", f"{path}: file does not exist")
    if path.stat().st_size == 0:
        raise AudioError("empty", f"{path}: file is empty (0 bytes)")
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises RuntimeError/LibsndfileError/TypeError variants
        raise AudioError("unreadable", f"{path}: not a readable audio file ({_one_line(exc)})") from exc
    ai = AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames),
                   str(info.format), str(info.subtype))
    if not MIN_SAMPLE_RATE_HZ <= ai.sample_rate <= MAX_SAMPLE_RATE_HZ:
        raise AudioError("bad_sample_rate", f"{path}: sample rate {ai.sample_rate} Hz is outside "
                         f"{MIN_SAMPLE_RATE_HZ}-{MAX_SAMPLE_RATE_HZ} Hz")
    if not 1 <= ai.channels <= MAX_CHANNELS:
        raise AudioError("bad_channels", f"{path}: {ai.channels} channels is not usable")
    if ai.frames <= 0 or ai.duration_s < MIN_DURATION_S:
        raise AudioError("empty", f"{path}: no audio ({ai.frames} samples; "
                         f"at least {MIN_DURATION_S * 1000:.0f} ms needed)")
    if ai.duration_s > MAX_DURATION_S:
        raise AudioError("too_long", f"{path}: {ai.duration_s / 3600:.1f} h is longer than the "
                         f"{MAX_DURATION_S / 3600:.0f} h limit for one scene; cut it into scenes first")
    return ai


def resample(audio: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """Resample mono float32 audio with soxr (high quality); identity when the rates match."""
    if from_hz == to_hz:
        return audio
    import soxr

    out = soxr.resample(audio, from_hz, to_hz, quality="HQ")
    return np.ascontiguousarray(out, dtype=np.float32)


def read_audio(path: str | os.PathLike, target_rate: int | None = None) -> tuple[np.ndarray, AudioInfo]:
    """Decode a file to mono float32 in [-1, 1] at ``target_rate`` (the file's rate if None).

    Rejects files whose samples are not all finite (float WAVs can hold NaN/Inf), since one NaN
    poisons a whole overlap-add window and, in some runtimes, all later output.
    """
    info = probe(path)
    try:
        data, _ = sf.read(str(info.path), dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError("unreadable", f"{info.path}: decoding failed ({_one_line(exc)})") from exc
    if data.shape[0] == 0:
        raise AudioError("empty", f"{info.path}: no samples could be decoded")
    if data.shape[0] < info.frames:
        # A truncated file: the header promises more than the data holds. Enhance what is there
        # rather than fail, but only if that is still a usable scene.
        if data.shape[0] / info.sample_rate < MIN_DURATION_S:
            raise AudioError("truncated", f"{info.path}: truncated, only {data.shape[0]} samples decodable")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        bad = int((~np.isfinite(mono)).sum())
        raise AudioError("non_finite", f"{info.path}: {bad} samples are NaN or infinite")
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if target_rate is not None:
        mono = resample(mono, info.sample_rate, target_rate)
    return mono, info


def apply_clip_policy(audio: np.ndarray, policy: str) -> np.ndarray:
    """Bring audio into [-1, 1] for integer output.

    ``clip`` hard-limits samples (enhancers rarely overshoot, and then only by a little);
    ``normalize`` scales the whole scene down when its peak exceeds 1 (no distortion, lower level);
    ``none`` leaves samples as they are (only sensible with FLOAT output).
    """
    if policy not in CLIP_POLICIES:
        raise ValueError(f"clip policy must be one of {CLIP_POLICIES}, not {policy!r}")
    if policy == "none":
        return audio
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak <= 1.0:
        return audio
    if policy == "normalize":
        return (audio / peak).astype(np.float32)
    return np.clip(audio, -1.0, 1.0)


def write_audio_atomic(path: str | os.PathLike, audio: np.ndarray, sample_rate: int,
                       subtype: str = "PCM_16", clip: str = "clip") -> Path:
    """Write a WAV so that a file under its final name is always complete.

    See :func:`atomic.atomic_file`; on failure :class:`OutputError` names the path.
    """
    path = Path(path)
    if subtype not in SUBTYPES:
        raise ValueError(f"subtype must be one of {SUBTYPES}, not {subtype!r}")
    if subtype != "FLOAT" and clip == "none":
        raise ValueError("clip='none' needs subtype='FLOAT'; integer samples must be limited")
    audio = apply_clip_policy(np.asarray(audio, dtype=np.float32), clip)
    with atomic_file(path) as fh:
        sf.write(fh, audio, sample_rate, subtype=subtype, format="WAV")
    return path



def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
