"""FFmpeg DSP (effect chains; the real one runs the ffmpeg binary, this one numpy) and ``none``."""

from __future__ import annotations

import numpy as np

from ..base import resample_audio
from .common import StubEnhancer, one_pole

EFFECTS = ("loudnorm", "normalize", "compress", "denoise", "highpass", "lowpass", "deess", "amplify")


class FFmpegDSPEnhancer(StubEnhancer):
    """Factory name ``ffmpeg-dsp``, object name ``ffmpeg``; the model is the effect chain, kept
    as ``effects``."""

    _name = "ffmpeg"

    def __init__(self, model: str = "loudnorm", gain_db: float = 6.0):
        effects = [e.strip() for e in str(model).split(",") if e.strip()]
        unknown = [e for e in effects if e not in EFFECTS]
        if not effects or unknown:
            raise ValueError(f"ffmpeg-dsp: unknown effect(s) {unknown or model!r}; known: {EFFECTS}")
        self.effects = effects
        self.gain_db = float(gain_db)
        self._ready = False

    @property
    def display_name(self) -> str:
        return f"FFmpeg DSP ({','.join(self.effects)})"

    def get_supported_models(self) -> list:
        return list(EFFECTS)

    def _rate(self) -> int:
        return 48_000

    def _process(self, x, rate):
        for effect in self.effects:
            x = getattr(self, "_" + effect)(x, rate)
        return x, rate

    def _loudnorm(self, x, rate):
        rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
        return x * (0.1 / rms) if rms > 0 else x

    def _normalize(self, x, rate):
        peak = float(np.max(np.abs(x)))
        return x * (0.9 / peak) if peak > 0 else x

    def _compress(self, x, rate):
        return np.tanh(3.0 * x) / 3.0

    def _denoise(self, x, rate):
        return np.where(np.abs(x) < 0.01, 0.0, x).astype(np.float32)

    def _highpass(self, x, rate):
        return one_pole(x, rate, 200.0, high=True)

    def _lowpass(self, x, rate):
        return one_pole(x, rate, 3000.0, high=False)

    def _deess(self, x, rate):
        return one_pole(x, rate, 6000.0, high=False)

    def _amplify(self, x, rate):
        return x * np.float32(10 ** (self.gain_db / 20))


class NoneEnhancer(StubEnhancer):
    """No processing: 48 kHz in, 16 kHz out."""

    _name = "none"
    MODELS = (None,)

    @property
    def display_name(self) -> str:
        return "None"

    def _rate(self) -> int:
        return 48_000

    def get_output_sample_rate(self) -> int:
        return 16_000

    def _process(self, x, rate):
        return resample_audio(x, rate, 16_000), 16_000
