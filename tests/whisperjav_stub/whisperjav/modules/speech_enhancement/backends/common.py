"""What every stand-in enhancer shares: lazy start, the preferred-rate check, timing, the call log."""

from __future__ import annotations

import time

import numpy as np

from ..base import EnhancementResult, log_call


class StubEnhancer:
    """Subclasses set ``_name``, ``MODELS`` and implement ``_rate`` and ``_process``."""

    _name = "stub"
    MODELS: tuple = ()

    def __init__(self, model=None):
        if model not in self.MODELS:
            raise ValueError(f"{self._name}: unknown model {model!r}; supported: {list(self.MODELS)}")
        self._model_name = model
        self._ready = False

    @property
    def name(self) -> str:
        return self._name

    @property
    def display_name(self) -> str:
        return f"{self._name} ({getattr(self, '_model_name', None)})"

    def _ensure_initialized(self) -> None:
        if not self._ready:
            log_call("init", self.name)
            self._ready = True

    def get_preferred_sample_rate(self) -> int:
        return self._rate()

    def get_output_sample_rate(self) -> int:
        return self._rate()

    def get_supported_models(self) -> list:
        return list(self.MODELS)

    def cleanup(self) -> None:
        if self._ready:
            log_call("cleanup", self.name)
        self._ready = False

    def enhance(self, audio, sample_rate: int, **kwargs) -> EnhancementResult:
        self._ensure_initialized()
        started = time.perf_counter()
        x = np.asarray(audio, dtype=np.float32)
        log_call("enhance", self.name, int(sample_rate), int(x.shape[-1]))
        if int(sample_rate) != self._rate():
            return self._failed(x, sample_rate, f"expects {self._rate()} Hz audio, got {sample_rate} Hz")
        y, rate = self._process(x, int(sample_rate))
        return EnhancementResult(audio=y.astype(np.float32), sample_rate=rate, method=self.name,
                                 parameters={"model": getattr(self, "_model_name", None)},
                                 processing_time_sec=time.perf_counter() - started)

    def _failed(self, x, sample_rate, why: str) -> EnhancementResult:
        return EnhancementResult(audio=x, sample_rate=int(sample_rate), method=self.name,
                                 success=False, error_message=why)

    def _rate(self) -> int:
        raise NotImplementedError

    def _process(self, x: np.ndarray, rate: int) -> tuple[np.ndarray, int]:
        raise NotImplementedError


def moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centered moving average (a crude low-pass), same length."""
    kernel = np.ones(width, dtype=np.float32) / width
    return np.convolve(x, kernel, mode="same").astype(np.float32)


def one_pole(x: np.ndarray, rate: int, cutoff_hz: float, high: bool) -> np.ndarray:
    """First-order low- or high-pass filter."""
    from scipy.signal import lfilter

    a = float(np.exp(-2.0 * np.pi * cutoff_hz / rate))
    low = lfilter([1.0 - a], [1.0, -a], x).astype(np.float32)
    return (x - low) if high else low
