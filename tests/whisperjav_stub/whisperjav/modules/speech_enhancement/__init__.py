"""Speech enhancement: the names pipelines import from this package in one block."""

from ... import _line
from .base import EnhancementResult, SpeechEnhancer, resample_audio
from .factory import SpeechEnhancerFactory
from .pipeline_helper import (create_enhancer_direct, create_enhancer_from_config,
                              enhance_scenes, enhance_single_audio, get_extraction_sample_rate,
                              is_passthrough_backend, resample_scenes)

__all__ = ["EnhancementResult", "SpeechEnhancer", "resample_audio", "SpeechEnhancerFactory",
           "create_enhancer_direct", "create_enhancer_from_config", "enhance_scenes",
           "enhance_single_audio", "get_extraction_sample_rate", "is_passthrough_backend",
           "resample_scenes"]
if _line.AT_LEAST_1_9:
    from .base import SpeechEnhancerUnavailable  # noqa: F401

    __all__.append("SpeechEnhancerUnavailable")
