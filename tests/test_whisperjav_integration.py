"""The WhisperJAV drop-in, asserted field by field against scene tuples shaped like WhisperJAV's:
``(Path("<media>_scene_<idx:04d>.wav"), start_sec, end_sec, duration_sec)``, 48 kHz mono PCM_16."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from conftest import write_tone
from whisperjav_enhance.audio import resample
from whisperjav_enhance.config import EnhanceOptions, PoolPolicy
from whisperjav_enhance.errors import ConfigError, EnhanceError, WeightsError
from whisperjav_enhance.integrations.whisperjav import (PoolEnhancer, enhance_scenes,
                                                        enhancer_spec)

CPU = EnhanceOptions(device="cpu")
ONE_WORKER = PoolPolicy(workers_per_device=1)


def _pipeline_scenes(folder: Path, durations, media: str = "movie") -> list[tuple]:
    """Scene tuples as WhisperJAV's scene detector builds them."""
    scenes, start = [], 12.5
    for i, dur in enumerate(durations):
        p = folder / f"{media}_scene_{i:04d}.wav"
        write_tone(p, dur, rate=48_000, seed=i, freq_hz=300.0 + 50 * i)
        frames = sf.info(str(p)).frames
        d = frames / 48_000
        scenes.append((p, start, start + d, d))
        start += d + 0.75
    return scenes


def test_contract_field_by_field(tmp_path):
    scenes_dir = tmp_path / "scenes"
    scenes = _pipeline_scenes(scenes_dir, [0.3, 0.45, 0.2, 0.5])
    bad = scenes_dir / "movie_scene_0004.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage that is not a wave file")
    scenes.append((bad, 30.0, 31.0, 1.0))
    # a different file whose output name is already taken keeps its original tuple
    clash = scenes_dir / "other" / "movie_scene_0001.wav"
    write_tone(clash, 0.2, rate=48_000)
    scenes.append((clash, 40.0, 40.2, 0.2))
    scenes.append(scenes[2])  # the same scene listed twice shares its result
    temp_dir = tmp_path / "temp"
    temp_dir.mkdir()
    calls, degradations = [], []

    result = enhance_scenes(scenes, "none", temp_dir, lambda n, t, name: calls.append((n, t, name)),
                            degradations, options=CPU, policy=ONE_WORKER)

    assert isinstance(result, list) and len(result) == len(scenes)
    enhanced_dir = temp_dir / "enhanced_scenes"
    for original, got in zip(scenes, result):
        path = original[0]
        if path in (bad, clash):
            assert got is original
            continue
        assert isinstance(got, tuple) and len(got) == 4
        assert got[0] == enhanced_dir / f"{path.stem}_enhanced.wav"
        assert isinstance(got[0], Path)
        assert got[1:] == original[1:]   # start, end, duration unchanged
        info = sf.info(str(got[0]))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16_000, 1, "PCM_16", "WAV")
        x, _ = sf.read(str(path), dtype="float32")
        y, _ = sf.read(str(got[0]), dtype="float32")
        ref = resample(x, 48_000, 16_000)
        assert y.shape == ref.shape
        assert np.max(np.abs(y - ref)) < 2e-3  # passthrough: the resampled scene itself
    assert result[-1][0] == result[2][0]
    assert [c[0] for c in calls] == list(range(1, len(scenes) + 1))
    assert {c[1] for c in calls} == {len(scenes)}
    assert sorted(c[2] for c in calls) == sorted(s[0].name for s in scenes)
    assert len(degradations) == 1 and "2 of 7 scenes" in degradations[0]
    assert sorted(p.name for p in enhanced_dir.iterdir()) == [
        f"movie_scene_{i:04d}_enhanced.wav" for i in range(4)]  # no manifest, partials or extras
    # the calling process never initialised CUDA (the recogniser after it gets the whole card)
    if "torch" in sys.modules:
        assert not sys.modules["torch"].cuda.is_initialized()


def test_setup_failure_returns_the_originals_or_raises_when_strict(tmp_path, caplog):
    scenes = _pipeline_scenes(tmp_path / "scenes", [0.2, 0.2])
    calls, degradations = [], []
    with caplog.at_level(logging.ERROR, logger="whisperjav_enhance"):
        result = enhance_scenes(scenes, "bs-roformer", tmp_path, lambda *a: calls.append(a),
                                degradations)
    assert len(result) == 2 and all(r is s for r, s in zip(result, scenes))
    assert [c[:2] for c in calls] == [(1, 2), (2, 2)]
    assert "unknown backend" in caplog.text and "unenhanced" in degradations[0]
    with pytest.raises(ConfigError):
        enhance_scenes(scenes, "bs-roformer", tmp_path, strict=True)
    assert enhance_scenes([], "none", tmp_path) == []


def test_missing_weights_are_logged_with_where_it_looked(tmp_path, caplog, monkeypatch):
    for var, sub in (("HF_HOME", "hf"), ("HF_HUB_CACHE", "hf/hub"), ("MODELSCOPE_CACHE", "ms")):
        monkeypatch.setenv(var, str(tmp_path / "caches" / sub))
    monkeypatch.delenv("WHISPERJAV_ENHANCE_MOSSFORMER2_WEIGHTS", raising=False)
    monkeypatch.chdir(tmp_path)
    scenes = _pipeline_scenes(tmp_path / "scenes", [0.2])
    enhancer = SimpleNamespace(name="clearvoice", model="MossFormer2_SE_48K")
    with caplog.at_level(logging.ERROR, logger="whisperjav_enhance"):
        result = enhance_scenes(scenes, enhancer, tmp_path)
    assert result[0] is scenes[0]
    assert str(tmp_path / "caches" / "hf" / "hub") in caplog.text
    with pytest.raises(WeightsError) as info:
        enhance_scenes(scenes, enhancer, tmp_path, strict=True)
    assert info.value.searched


def test_every_scene_failing(tmp_path):
    folder = tmp_path / "scenes"
    folder.mkdir()
    scenes = []
    for i in range(2):
        p = folder / f"movie_scene_{i:04d}.wav"
        p.write_bytes(b"")
        scenes.append((p, float(i), float(i) + 1.0, 1.0))
    degradations = []
    result = enhance_scenes(scenes, "none", tmp_path, None, degradations, options=CPU)
    assert all(r is s for r, s in zip(result, scenes))
    assert "2 of 2 scenes" in degradations[0] and "empty" in degradations[0]
    with pytest.raises(EnhanceError, match="every one of the 2 scenes"):
        enhance_scenes(scenes, "none", tmp_path, strict=True, options=CPU)


def test_enhancer_spellings_and_shim():
    assert enhancer_spec("clearvoice:MossFormer2_SE_48K") == "clearvoice:MossFormer2_SE_48K"
    assert enhancer_spec(SimpleNamespace(name="zipenhancer")) == "zipenhancer"
    assert enhancer_spec(SimpleNamespace(name="clearvoice", _model_name="MossFormer2_SE_48K")) == \
        "clearvoice:MossFormer2_SE_48K"
    assert enhancer_spec(SimpleNamespace(name="none", model=None)) == "none"
    with pytest.raises(ConfigError):
        enhancer_spec(object())
    from whisperjav_enhance.backends import parse_backend_spec

    shim = PoolEnhancer("clearvoice", "MossFormer2_SE_48K")
    assert parse_backend_spec(enhancer_spec(shim)) == "mossformer2"
    assert shim.get_preferred_sample_rate() == 48_000 and shim.get_output_sample_rate() == 16_000
    shim.cleanup()
    shim.cleanup()  # idempotent, as WhisperJAV's contract requires
