"""The enhancer protocol, its result record, the resampler, and (1.9 line only) the exception a
clean-up that cannot run raises."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from math import gcd
from typing import Protocol, runtime_checkable

import numpy as np

from ... import _line


@dataclass
class EnhancementResult:
    """What ``enhance`` returns."""

    audio: np.ndarray
    sample_rate: int
    method: str
    parameters: dict = field(default_factory=dict)
    processing_time_sec: float = 0.0
    metadata: dict = field(default_factory=dict)
    success: bool = True
    error_message: str | None = None


@runtime_checkable
class SpeechEnhancer(Protocol):
    """What every enhancer object offers."""

    @property
    def name(self) -> str: ...

    @property
    def display_name(self) -> str: ...

    def enhance(self, audio: np.ndarray, sample_rate: int, **kwargs) -> EnhancementResult: ...

    def get_preferred_sample_rate(self) -> int: ...

    def get_output_sample_rate(self) -> int: ...

    def cleanup(self) -> None: ...

    def get_supported_models(self) -> list: ...


def resample_audio(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling (float32 in and out)."""
    from scipy.signal import resample_poly

    audio = np.asarray(audio, dtype=np.float32)
    if orig_sr == target_sr:
        return audio
    g = gcd(int(orig_sr), int(target_sr))
    return resample_poly(audio, target_sr // g, orig_sr // g).astype(np.float32)


def log_call(event: str, name: str, rate: int | None = None, samples: int | None = None) -> None:
    """One JSON line to ``WHISPERJAV_STUB_LOG`` (tests read which process did what)."""
    path = os.environ.get("WHISPERJAV_STUB_LOG")
    if not path:
        return
    line = json.dumps({"pid": os.getpid(), "event": event, "name": name, "rate": rate,
                       "samples": samples}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


if _line.AT_LEAST_1_9:
    class SpeechEnhancerUnavailable(RuntimeError):
        """A clean-up the user chose cannot run (not installed, cannot start, or cleaned nothing)."""
