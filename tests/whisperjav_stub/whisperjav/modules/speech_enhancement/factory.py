"""SpeechEnhancerFactory: create an enhancer by backend name, say whether a backend can run here,
list the backends. On the 1.9 line a chosen backend in FATAL_WHEN_UNAVAILABLE that is not
installed raises SpeechEnhancerUnavailable; otherwise an unavailable backend falls back to
``none`` with a warning."""

from __future__ import annotations

import importlib
import logging
import os

from ... import _line
from . import base

logger = logging.getLogger("whisperjav.speech_enhancement")

_PKG = __package__ + ".backends"
# factory name -> (module:class, default model, install hint)
_BACKENDS = {
    "none": ("dsp:NoneEnhancer", None, ""),
    "ffmpeg-dsp": ("dsp:FFmpegDSPEnhancer", "loudnorm", "install ffmpeg and put it on PATH"),
    "zipenhancer": ("models:ZipEnhancerEnhancer", "torch", "pip install modelscope"),
    "clearvoice": ("models:ClearVoiceEnhancer", "MossFormer2_SE_48K", "pip install clearvoice"),
    "bs-roformer": ("models:BSRoformerEnhancer", "vocals", "pip install bs_roformer"),
    # test-only backends of this stand-in
    "flaky": ("faulty:FlakyEnhancer", "standard", ""),
    "crashy": ("faulty:CrashyEnhancer", "sigkill", ""),
}
if _line.AT_LEAST_1_9:
    _BACKENDS["htdemucs"] = ("models:HTDemucsEnhancer", "htdemucs", "pip install demucs")
    FATAL_WHEN_UNAVAILABLE = {"zipenhancer", "clearvoice", "bs-roformer", "htdemucs"}
_NEVER_INSTALLED = {"htdemucs"}


class SpeechEnhancerFactory:
    @staticmethod
    def list_backends() -> list:
        return list(_BACKENDS)

    @staticmethod
    def is_backend_available(name: str) -> tuple[bool, str]:
        key = (name or "none").lower()
        if key not in _BACKENDS:
            return False, f"unknown backend {name!r}"
        off = {n.strip() for n in os.environ.get("WHISPERJAV_STUB_UNAVAILABLE", "").split(",")}
        if key in _NEVER_INSTALLED or key in off:
            return False, _BACKENDS[key][2]
        return True, ""

    @staticmethod
    def create(name: str, config: dict | None = None, **kwargs):
        key = (name or "none").lower()
        if key not in _BACKENDS:
            raise ValueError(f"Unknown speech enhancement backend {name!r}; "
                             f"available: {', '.join(_BACKENDS)}")
        merged = dict(config or {})
        merged.update(kwargs)
        ok, hint = SpeechEnhancerFactory.is_backend_available(key)
        if not ok:
            if _line.AT_LEAST_1_9 and key in FATAL_WHEN_UNAVAILABLE:
                raise base.SpeechEnhancerUnavailable(
                    f"{key} was asked for, but it is not installed on this machine. {hint}")
            logger.warning("%s is not available (%s); falling back to none", key, hint)
            key, merged = "none", {}
        target, default_model, _ = _BACKENDS[key]
        if merged.get("model") is None:
            merged["model"] = default_model
        module, cls = target.split(":")
        return getattr(importlib.import_module(f"{_PKG}.{module}"), cls)(**merged)
