"""Test-only enhancers: one that fails chosen scenes, one that kills its own process."""

from __future__ import annotations

import os
import signal

from ..base import log_call
from .common import StubEnhancer


class FlakyEnhancer(StubEnhancer):
    """Halves the audio, but reports failure (``success=False``) for scenes longer than
    ``fail_over_s``, and raises the line's SpeechEnhancerUnavailable for scenes longer than
    ``unavailable_over_s``."""

    _name = "flaky"
    MODELS = ("standard",)

    def __init__(self, model: str = "standard", fail_over_s: float = 0.5,
                 unavailable_over_s: float | None = None, gain: float = 0.5):
        super().__init__(model)
        self.fail_over_s = float(fail_over_s)
        self._unavailable_over_s = unavailable_over_s
        self._gain = float(gain)

    def enhance(self, audio, sample_rate, **kwargs):
        seconds = len(audio) / sample_rate
        if self._unavailable_over_s is not None and seconds > self._unavailable_over_s:
            from .. import base

            cls = getattr(base, "SpeechEnhancerUnavailable", RuntimeError)
            raise cls(f"the flaky enhancer gave up for good on a {seconds:.2f} s scene")
        if seconds > self.fail_over_s:
            log_call("enhance", self.name, int(sample_rate), len(audio))
            return self._failed(audio, sample_rate, f"a {seconds:.2f} s scene is longer than "
                                f"{self.fail_over_s:g} s")
        return super().enhance(audio, sample_rate, **kwargs)

    def _rate(self) -> int:
        return 48_000

    def _process(self, x, rate):
        return x * self._gain, rate


class CrashyEnhancer(StubEnhancer):
    """Kills its own process (SIGKILL, or ``os._exit`` with model ``exit``) on scenes longer than
    ``crash_over_s``; halves the others."""

    _name = "crashy"
    MODELS = ("sigkill", "exit")

    def __init__(self, model: str = "sigkill", crash_over_s: float = 0.5):
        super().__init__(model)
        self.crash_over_s = float(crash_over_s)

    def enhance(self, audio, sample_rate, **kwargs):
        if len(audio) / sample_rate > self.crash_over_s:
            log_call("crash", self.name, int(sample_rate), len(audio))
            if self._model_name == "exit" or not hasattr(signal, "SIGKILL"):
                os._exit(3)
            os.kill(os.getpid(), signal.SIGKILL)
        return super().enhance(audio, sample_rate, **kwargs)

    def _rate(self) -> int:
        return 48_000

    def _process(self, x, rate):
        return x * 0.5, rate
