"""The helpers pipelines call: create the enhancer, pick the extraction rate, enhance scene files
one by one in this process (what whisperjav-enhance replaces), resample scenes, enhance one file."""

from __future__ import annotations

import gc
import logging
from pathlib import Path

import numpy as np
import soundfile as sf

from ... import _line
from .base import resample_audio
from .factory import SpeechEnhancerFactory

logger = logging.getLogger("whisperjav.speech_enhancement")
TARGET_RATE = 16_000


def create_enhancer_from_config(resolved_config: dict, **overrides):
    cfg = dict(resolved_config.get("speech_enhancement", resolved_config) or {})
    cfg.update(overrides)
    backend = cfg.pop("backend", "none")
    return SpeechEnhancerFactory.create(backend, config=cfg)


def create_enhancer_direct(backend: str, model: str | None = None, **kw):
    return SpeechEnhancerFactory.create(backend, model=model, **kw)


def is_passthrough_backend(name) -> bool:
    return name in (None, "", "none")


def get_extraction_sample_rate(backend) -> int:
    return TARGET_RATE if is_passthrough_backend(backend) else 48_000


def _read_mono(path) -> tuple[np.ndarray, int]:
    x, rate = sf.read(str(path), dtype="float32", always_2d=True)
    return x.mean(axis=1), rate


def _write16(path: Path, x: np.ndarray, rate: int) -> None:
    sf.write(str(path), resample_audio(x, rate, TARGET_RATE), TARGET_RATE, subtype="PCM_16")


def _enhance_file(path: Path, enhancer, out: Path) -> None:
    x, rate = _read_mono(path)
    preferred = enhancer.get_preferred_sample_rate()
    result = enhancer.enhance(resample_audio(x, rate, preferred), preferred)
    if not result.success:
        raise RuntimeError(result.error_message or "enhancement failed")
    _write16(out, np.asarray(result.audio, dtype=np.float32), result.sample_rate)


def resample_scenes(scene_paths, temp_dir):
    out_dir = Path(temp_dir) / "resampled_scenes"
    out_dir.mkdir(exist_ok=True)
    result = []
    for item in scene_paths:
        path = Path(item[0])
        out = out_dir / f"{path.stem}_resampled.wav"
        try:
            _write16(out, *_read_mono(path))
            result.append((out, *item[1:]))
        except Exception as exc:
            logger.warning("could not resample %s: %s", path.name, exc)
            result.append(item)
    return result


def enhance_single_audio(audio_path, enhancer, output_path=None):
    audio_path = Path(audio_path)
    out = Path(output_path) if output_path else audio_path.with_name(f"{audio_path.stem}_enhanced.wav")
    try:
        enhancer._ensure_initialized()
        _enhance_file(audio_path, enhancer, out)
        return out
    except Exception as exc:
        if _line.AT_LEAST_1_9 and type(exc).__name__ == "SpeechEnhancerUnavailable":
            raise
        logger.warning("enhancement of %s failed: %s", audio_path.name, exc)
        return audio_path


def _run_scenes(scene_paths, enhancer, temp_dir, progress_callback):
    """Per scene: (new tuple or None, failure reason or None)."""
    out_dir = Path(temp_dir) / "enhanced_scenes"
    out_dir.mkdir(exist_ok=True)
    enhancer._ensure_initialized()
    done = []
    for n, item in enumerate(scene_paths, start=1):
        path = Path(item[0])
        if progress_callback is not None:
            progress_callback(n, len(scene_paths), path.name)
        out = out_dir / f"{path.stem}_enhanced.wav"
        try:
            _enhance_file(path, enhancer, out)
            done.append(((out, *item[1:]), None))
        except Exception as exc:
            if _line.AT_LEAST_1_9 and type(exc).__name__ == "SpeechEnhancerUnavailable":
                raise
            done.append((None, str(exc)))
        gc.collect()
    return done


def _copy16(item, out_dir: Path):
    path = Path(item[0])
    out = out_dir / f"{path.stem}_original_16000.wav"
    try:
        _write16(out, *_read_mono(path))
        return (out, *item[1:])
    except Exception:
        return item


if _line.AT_LEAST_1_9:
    def enhance_scenes(scene_paths, enhancer, temp_dir, progress_callback=None, degradations=None):
        if not scene_paths:
            return scene_paths
        from .base import SpeechEnhancerUnavailable

        done = _run_scenes(scene_paths, enhancer, temp_dir, progress_callback)
        failed = [reason for _, reason in done if reason is not None]
        n, name = len(scene_paths), enhancer.display_name
        if len(failed) == n:
            raise SpeechEnhancerUnavailable(
                f"{name} could not clean up the audio: it failed on every one of the {n} pieces "
                f"(first: {failed[0]}). Choose a different clean-up, or none.")
        if failed and degradations is not None:
            degradations.append(f"{len(failed)} of {n} scenes went through without being cleaned "
                                f"up by {name} (first: {failed[0]})")
        out_dir = Path(temp_dir) / "enhanced_scenes"
        return [new if new is not None else _copy16(item, out_dir)
                for (new, _), item in zip(done, scene_paths)]
else:
    def enhance_scenes(scene_paths, enhancer, temp_dir, progress_callback=None):
        if not scene_paths:
            return scene_paths
        done = _run_scenes(scene_paths, enhancer, temp_dir, progress_callback)
        return [new if new is not None else item for (new, _), item in zip(done, scene_paths)]
