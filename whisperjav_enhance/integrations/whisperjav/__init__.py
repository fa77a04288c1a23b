"""Drop-in for WhisperJAV's speech-enhancement package: every name a pipeline imports from
``whisperjav.modules.speech_enhancement``, with the enhancement itself done by this package's
isolated worker pool, so one import line swaps it in.

Ours (pooled): ``enhance_scenes``, ``enhance_single_audio``, ``resample_scenes``, and
``SpeechEnhancerUnavailable`` (WhisperJAV's own class where it has one). Every other name
(``SpeechEnhancerFactory``, ``create_enhancer_from_config``, ``create_enhancer_direct``,
``get_extraction_sample_rate``, ``is_passthrough_backend``, ``EnhancementResult``,
``SpeechEnhancer``, ``resample_audio``, and whatever the package gains later) is WhisperJAV's own,
passed through from the installed WhisperJAV when first used.

The contract follows the installed WhisperJAV, decided by what its speech-enhancement module
provides (upstream.py), never by a version string; without WhisperJAV, the 1.9 rules:

- ``scene_paths``: ``(scene_path, start_sec, end_sec, duration_sec)`` tuples of mono scene WAVs
  (48 kHz when an enhancer is configured), named ``<media>_scene_<idx:04d>.wav``. An empty list is
  returned as is; ``temp_dir`` must exist (``enhanced_scenes`` is made in it, as upstream does).
- Returns a list of the same length and order, times unchanged. A cleaned scene's path is
  ``temp_dir/"enhanced_scenes"/f"{stem}_enhanced.wav"`` (16 kHz mono PCM_16). A scene that failed:
  1.9: a 16 kHz mono PCM_16 copy, ``enhanced_scenes/<stem>_original_16000.wav`` (its original path
  if even the copy fails); 1.8: its original tuple, the very same object.
- 1.9: WhisperJAV's ``SpeechEnhancerUnavailable`` is raised when every scene failed (a one-scene
  call included), when the chosen clean-up cannot start (unknown, not installed, no weights, no
  usable device, an enhancer that cannot be built in a worker), and when the enhancer itself raised
  it. Partial failures append one line to ``degradations``: ``"{k} of {n} scenes went through
  without being cleaned up by {display_name} (first: {reason})"``.
  1.8: nothing is raised; a clean-up that cannot start leaves every scene unenhanced (logged, and
  one line in ``degradations``); ``strict=True`` raises this package's EnhanceError instead.
- ``progress_callback(n, total, name)``: upstream's sequence of calls (n = 1..total, ``name`` the
  n-th scene's file name in input order). Upstream calls n just before it starts scene n; here
  call n comes when n - 1 scenes are finished (call 1 at the start), because workers finish scenes
  out of order. A callback that raises is logged and ignored.
- ``enhancer``: the object the pipeline created (only its name, model and constructor settings
  are read; it is never called, so it loads nothing), or a ``"backend[:model]"`` string.
  MossFormer2_SE_48K and ZipEnhancer ``torch`` run on this package's batched engine; every other
  enhancer is rebuilt from WhisperJAV's factory inside the workers (backends/hosted.py).
- Each run holds a lock and keeps its settings records (``.whisperjav-enhance.lock``,
  ``.whisperjav-enhance.outputs.jsonl``) in ``temp_dir`` for ``enhance_scenes`` and
  ``resample_scenes``, and beside the output for ``enhance_single_audio``: only in folders the
  caller handed over, never above them. No manifest or summary is written.
- The calling process never initialises CUDA; when the call returns the workers are gone and the
  pipeline's ``enhancer.cleanup()`` is harmless. Ctrl-C raises KeyboardInterrupt after the
  workers are stopped.
"""

from __future__ import annotations

from . import upstream as _upstream
from .dropin import (ENHANCED_DIR_NAME, RESAMPLED_DIR_NAME, SCENE_EXTRACTION_SAMPLE_RATE_HZ,
                     enhance_scenes, enhance_single_audio, resample_scenes)
from .runner import TARGET_SAMPLE_RATE_HZ
from .shim import PoolEnhancer
from .target import enhancer_spec, target_for

# WhisperJAV's names a pipeline imports beside the helpers (passed through; see __getattr__).
PASSED_THROUGH = ("SpeechEnhancerFactory", "create_enhancer_from_config", "create_enhancer_direct",
                  "get_extraction_sample_rate", "is_passthrough_backend", "EnhancementResult",
                  "SpeechEnhancer", "resample_audio")


def __getattr__(name: str):
    """WhisperJAV's own ``SpeechEnhancerUnavailable`` (ours without it), and any other public
    name of the installed WhisperJAV's speech-enhancement package."""
    if name == "SpeechEnhancerUnavailable":
        return _upstream.installed_rules().unavailable
    if name.startswith("_"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = _upstream.lookup(name)
    if value is _upstream.MISSING:
        where = ("the installed WhisperJAV does not provide it" if _upstream.import_module()
                 else "it is WhisperJAV's own and WhisperJAV is not importable here")
        raise AttributeError(f"module {__name__!r} has no attribute {name!r} ({where})")
    return value


__all__ = ["enhance_scenes", "enhance_single_audio", "resample_scenes", "PoolEnhancer",
           "enhancer_spec", "target_for", "ENHANCED_DIR_NAME", "RESAMPLED_DIR_NAME",
           "TARGET_SAMPLE_RATE_HZ", "SCENE_EXTRACTION_SAMPLE_RATE_HZ", "PASSED_THROUGH"]
