"""whisperjav-enhance: subprocess-isolated, batched neural speech enhancement for subtitle pipelines.

Public API (pipelines): :func:`enhance_scenes`, :class:`EnhanceOptions`, :class:`PoolPolicy`,
the events in :mod:`whisperjav_enhance.events`, and the errors in :mod:`whisperjav_enhance.errors`.
The WhisperJAV drop-in lives in :mod:`whisperjav_enhance.integrations.whisperjav`.
"""

from .config import EnhanceOptions, PoolPolicy
from .errors import (AudioError, BackendUnavailable, ConfigError, DeviceError, EnhanceError,
                     OutputError, RunInterrupted, SceneError, WeightsError)

__version__ = "0.1.0"


def enhance_scenes(*args, **kwargs):
    """Enhance scene files; see :func:`whisperjav_enhance.pipeline.enhance_scenes`."""
    from .pipeline import enhance_scenes as _impl

    return _impl(*args, **kwargs)


__all__ = ["enhance_scenes", "EnhanceOptions", "PoolPolicy", "EnhanceError", "ConfigError",
           "BackendUnavailable", "WeightsError", "DeviceError", "SceneError", "AudioError",
           "OutputError", "RunInterrupted", "__version__"]
