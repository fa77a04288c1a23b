"""``PoolEnhancer``: a WhisperJAV-style enhancer object backed by this package, for code that
wants one without WhisperJAV's factory."""

from __future__ import annotations

from ...config import EnhanceOptions, PoolPolicy
from .dropin import SCENE_EXTRACTION_SAMPLE_RATE_HZ, enhance_scenes
from .runner import TARGET_SAMPLE_RATE_HZ
from .target import enhancer_spec


class PoolEnhancer:
    """Pass it where WhisperJAV passes its enhancer: ``name``/``model`` (and, for a hosted
    enhancer, ``hosted_settings``: its constructor settings) select what runs, the sample-rate
    getters tell the pipeline to cut scenes at 48 kHz, and ``cleanup()`` is a no-op because
    nothing is ever loaded in the calling process."""

    def __init__(self, backend: str = "clearvoice", model: str | None = None,
                 options: EnhanceOptions | None = None, policy: PoolPolicy | None = None,
                 hosted_settings: dict | None = None):
        self.name = backend
        self.model = model
        self.options = options
        self.policy = policy
        self.hosted_settings = dict(hosted_settings) if hosted_settings else None

    @property
    def display_name(self) -> str:
        return f"whisperjav-enhance ({enhancer_spec(self)})"  # enhancer_spec never reads this

    def get_preferred_sample_rate(self) -> int:
        return SCENE_EXTRACTION_SAMPLE_RATE_HZ

    def get_output_sample_rate(self) -> int:
        return TARGET_SAMPLE_RATE_HZ

    def enhance_scenes(self, scene_paths, temp_dir, progress_callback=None, degradations=None,
                       strict: bool = False) -> list:
        return enhance_scenes(scene_paths, self, temp_dir, progress_callback, degradations,
                              strict=strict, options=self.options, policy=self.policy)

    def cleanup(self) -> None:
        """Nothing to release: models live only in worker processes, which have exited."""

    def __repr__(self) -> str:
        return f"PoolEnhancer({enhancer_spec(self)!r})"


__all__ = ["PoolEnhancer"]
