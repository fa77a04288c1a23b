"""The WhisperJAV drop-in, asserted field by field against scene tuples shaped like WhisperJAV's:
``(Path("<media>_scene_<idx:04d>.wav"), start_sec, end_sec, duration_sec)``, 48 kHz mono PCM_16,
under both release lines' rules (the stand-in WhisperJAV in tests/whisperjav_stub picks the line)
and without WhisperJAV at all (the newest rules)."""

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
from whisperjav_enhance.events import RunStarted, WorkerStarted
from whisperjav_enhance.integrations import whisperjav as dropin
from whisperjav_enhance.integrations.whisperjav import (PoolEnhancer, enhance_scenes,
                                                        enhance_single_audio, enhancer_spec,
                                                        resample_scenes)
from whisperjav_enhance.outdir import LOCK_NAME, RECORDS_NAME
from whisperjav_stub.harness import forget_whisperjav, pipeline_scenes, use_stub, wav_format

CPU = EnhanceOptions(device="cpu")
ONE_WORKER = PoolPolicy(workers_per_device=1)
WAY_OUT = "Choose a different clean-up, or none."


@pytest.fixture
def no_whisperjav(monkeypatch):
    """WhisperJAV not importable (the newest rules, with our own SpeechEnhancerUnavailable)."""
    forget_whisperjav()
    monkeypatch.delenv("WHISPERJAV_STUB_LINE", raising=False)
    yield
    forget_whisperjav()


@pytest.fixture(autouse=True)
def _fresh_whisperjav_modules():
    yield
    forget_whisperjav()  # the next test imports the line it asks for


def _contract_scenes(tmp_path):
    """Four good scenes, an unreadable one, a different file whose output name is taken, and
    the third scene listed twice."""
    scenes_dir = tmp_path / "scenes"
    scenes = pipeline_scenes(scenes_dir, [0.3, 0.45, 0.2, 0.5])
    bad = scenes_dir / "movie_scene_0004.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage that is not a wave file")
    scenes.append((bad, 30.0, 31.0, 1.0))
    clash = scenes_dir / "other" / "movie_scene_0001.wav"
    write_tone(clash, 0.2, rate=48_000)
    scenes.append((clash, 40.0, 40.2, 0.2))
    scenes.append(scenes[2])
    temp_dir = tmp_path / "temp"
    temp_dir.mkdir()
    return scenes, bad, clash, temp_dir


def _check_enhanced(original, got, enhanced_dir):
    path = original[0]
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


def _check_progress(calls, scenes):
    # upstream's sequence: n = 1..total, the n-th scene's name in input order
    assert calls == [(n, len(scenes), s[0].name) for n, s in enumerate(scenes, start=1)]


def test_contract_field_by_field_1_8(tmp_path, monkeypatch):
    use_stub(monkeypatch, "1.8")
    scenes, bad, clash, temp_dir = _contract_scenes(tmp_path)
    calls, degradations = [], []

    result = enhance_scenes(scenes, "none", temp_dir, lambda n, t, name: calls.append((n, t, name)),
                            degradations, options=CPU, policy=ONE_WORKER)

    assert isinstance(result, list) and len(result) == len(scenes)
    enhanced_dir = temp_dir / "enhanced_scenes"
    for original, got in zip(scenes, result):
        if original[0] in (bad, clash):
            assert got is original   # 1.8: a failed scene keeps its original tuple
        else:
            _check_enhanced(original, got, enhanced_dir)
    assert result[-1][0] == result[2][0]
    _check_progress(calls, scenes)
    assert len(degradations) == 1 and degradations[0].startswith(
        "2 of 7 scenes went through without being cleaned up by none (first: ")
    assert sorted(p.name for p in enhanced_dir.iterdir()) == [
        f"movie_scene_{i:04d}_enhanced.wav" for i in range(4)]  # no manifest, partials or extras
    # the calling process never initialised CUDA (the recogniser after it gets the whole card)
    if "torch" in sys.modules:
        assert not sys.modules["torch"].cuda.is_initialized()


def test_contract_field_by_field_1_9(tmp_path, monkeypatch):
    use_stub(monkeypatch, "1.9")
    scenes, bad, clash, temp_dir = _contract_scenes(tmp_path)
    calls, degradations = [], []

    result = enhance_scenes(scenes, "none", temp_dir, lambda n, t, name: calls.append((n, t, name)),
                            degradations, options=CPU, policy=ONE_WORKER)

    enhanced_dir = temp_dir / "enhanced_scenes"
    assert len(result) == len(scenes)
    for original, got in zip(scenes, result):
        if original[0] == bad:   # not even a copy can be made: the original path
            assert got == original
        elif original[0] == clash:   # a 16 kHz copy under upstream's name
            assert got == (enhanced_dir / "movie_scene_0001_original_16000.wav",) + original[1:]
            assert wav_format(got[0]) == (16_000, 1, "PCM_16")
            x, _ = sf.read(str(clash), dtype="float32")
            y, _ = sf.read(str(got[0]), dtype="float32")
            assert np.max(np.abs(y - resample(x, 48_000, 16_000))) < 2e-3
        else:
            _check_enhanced(original, got, enhanced_dir)
    _check_progress(calls, scenes)
    assert len(degradations) == 1
    assert degradations[0].startswith("2 of 7 scenes went through without being cleaned up by "
                                      "none (first: ")
    assert "movie_scene_0004.wav: not a readable audio file" in degradations[0]
    assert sorted(p.name for p in enhanced_dir.iterdir()) == sorted(
        [f"movie_scene_{i:04d}_enhanced.wav" for i in range(4)]
        + ["movie_scene_0001_original_16000.wav"])


def test_setup_failure_follows_the_installed_line(tmp_path, monkeypatch, caplog):
    scenes = pipeline_scenes(tmp_path / "scenes", [0.2, 0.2])
    use_stub(monkeypatch, "1.8")
    calls, degradations = [], []
    with caplog.at_level(logging.ERROR, logger="whisperjav_enhance"):
        result = enhance_scenes(scenes, "no-such-enhancer", tmp_path, lambda *a: calls.append(a),
                                degradations)
    assert len(result) == 2 and all(r is s for r, s in zip(result, scenes))
    assert [c[:2] for c in calls] == [(1, 2), (2, 2)]
    assert "no speech enhancer 'no-such-enhancer'" in caplog.text
    assert "unenhanced" in degradations[0]
    with pytest.raises(ConfigError):
        enhance_scenes(scenes, "no-such-enhancer", tmp_path, strict=True)
    assert enhance_scenes([], "none", tmp_path) == []

    use_stub(monkeypatch, "1.9")
    from whisperjav.modules.speech_enhancement.base import SpeechEnhancerUnavailable

    with pytest.raises(SpeechEnhancerUnavailable) as info:
        enhance_scenes(scenes, "no-such-enhancer", tmp_path)
    assert "no-such-enhancer was asked for, but it cannot start" in str(info.value)
    assert str(info.value).endswith(WAY_OUT)
    with pytest.raises(SpeechEnhancerUnavailable, match="pip install demucs"):
        enhance_scenes(scenes, "htdemucs", tmp_path)   # known to the factory, not installed


def test_setup_failure_without_whisperjav_raises_our_own_class(tmp_path, no_whisperjav):
    scenes = pipeline_scenes(tmp_path / "scenes", [0.2])
    with pytest.raises(dropin.upstream.SpeechEnhancerUnavailable,
                       match="WhisperJAV cannot be imported") as info:
        enhance_scenes(scenes, "bs-roformer", tmp_path)
    assert isinstance(info.value, EnhanceError)
    assert dropin.SpeechEnhancerUnavailable is dropin.upstream.SpeechEnhancerUnavailable


def test_missing_weights_are_logged_with_where_it_looked(tmp_path, caplog, monkeypatch):
    for var, sub in (("HF_HOME", "hf"), ("HF_HUB_CACHE", "hf/hub"), ("MODELSCOPE_CACHE", "ms")):
        monkeypatch.setenv(var, str(tmp_path / "caches" / sub))
    monkeypatch.delenv("WHISPERJAV_ENHANCE_MOSSFORMER2_WEIGHTS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")   # no download on first use: the missing-weights error
    monkeypatch.chdir(tmp_path)
    scenes = pipeline_scenes(tmp_path / "scenes", [0.2])
    enhancer = SimpleNamespace(name="clearvoice", model="MossFormer2_SE_48K")
    use_stub(monkeypatch, "1.8")
    with caplog.at_level(logging.ERROR, logger="whisperjav_enhance"):
        result = enhance_scenes(scenes, enhancer, tmp_path)
    assert result[0] is scenes[0]
    assert str(tmp_path / "caches" / "hf" / "hub") in caplog.text
    with pytest.raises(WeightsError) as info:
        enhance_scenes(scenes, enhancer, tmp_path, strict=True)
    assert info.value.searched

    use_stub(monkeypatch, "1.9")
    from whisperjav.modules.speech_enhancement.base import SpeechEnhancerUnavailable

    with pytest.raises(SpeechEnhancerUnavailable) as info:
        enhance_scenes(scenes, enhancer, tmp_path)
    assert isinstance(info.value.__cause__, WeightsError) and info.value.__cause__.searched
    assert str(tmp_path / "caches" / "hf" / "hub") in str(info.value)


def test_every_scene_failing(tmp_path, monkeypatch, no_whisperjav):
    folder = tmp_path / "scenes"
    folder.mkdir()
    scenes = []
    for i in range(2):
        p = folder / f"movie_scene_{i:04d}.wav"
        p.write_bytes(b"")
        scenes.append((p, float(i), float(i) + 1.0, 1.0))
    # without WhisperJAV: the newest rules, so nothing cleaned is an error
    with pytest.raises(dropin.upstream.SpeechEnhancerUnavailable) as info:
        enhance_scenes(scenes, "none", tmp_path, options=CPU)
    assert "failed on every one of the 2 pieces" in str(info.value) and "empty" in str(info.value)
    assert str(info.value).endswith(WAY_OUT)

    use_stub(monkeypatch, "1.8")
    degradations = []
    result = enhance_scenes(scenes, "none", tmp_path, None, degradations, options=CPU)
    assert all(r is s for r, s in zip(result, scenes))
    assert "2 of 2 scenes" in degradations[0] and "empty" in degradations[0]
    with pytest.raises(EnhanceError, match="every one of the 2 scenes"):
        enhance_scenes(scenes, "none", tmp_path, strict=True, options=CPU)


def test_missing_temp_dir_raises_as_upstream(tmp_path, no_whisperjav):
    scenes = pipeline_scenes(tmp_path / "scenes", [0.2])
    with pytest.raises(FileNotFoundError):
        enhance_scenes(scenes, "none", tmp_path / "no-such-folder")


def test_enhancer_spellings_and_shim():
    assert enhancer_spec("clearvoice:MossFormer2_SE_48K") == "clearvoice:MossFormer2_SE_48K"
    assert enhancer_spec(SimpleNamespace(name="zipenhancer")) == "zipenhancer"
    assert enhancer_spec(SimpleNamespace(name="clearvoice", _model_name="MossFormer2_SE_48K")) == \
        "clearvoice:MossFormer2_SE_48K"
    assert enhancer_spec(SimpleNamespace(name="none", model=None)) == "none"
    with pytest.raises(ConfigError):
        enhancer_spec(object())
    # every other enhancer WhisperJAV offers is hosted under its factory name and model
    assert enhancer_spec(SimpleNamespace(name="zipenhancer", model_variant="onnx")) == \
        "whisperjav:zipenhancer:onnx"
    assert enhancer_spec(SimpleNamespace(name="ffmpeg", effects=["loudnorm", "highpass"])) == \
        "whisperjav:ffmpeg-dsp:loudnorm,highpass"
    assert enhancer_spec(SimpleNamespace(name="clearvoice", _model_name="FRCRN_SE_16K")) == \
        "whisperjav:clearvoice:FRCRN_SE_16K"
    assert enhancer_spec("bs-roformer:vocals") == "whisperjav:bs-roformer:vocals"
    from whisperjav_enhance.backends import parse_backend_spec

    shim = PoolEnhancer("clearvoice", "MossFormer2_SE_48K")
    assert parse_backend_spec(enhancer_spec(shim)) == "mossformer2"
    assert shim.get_preferred_sample_rate() == 48_000 and shim.get_output_sample_rate() == 16_000
    shim.cleanup()
    shim.cleanup()  # idempotent, as WhisperJAV's contract requires
    hosted = PoolEnhancer("ffmpeg-dsp", "amplify", hosted_settings={"gain_db": 3.0})
    assert enhancer_spec(hosted) == 'whisperjav:ffmpeg-dsp:amplify{"gain_db":3.0}'


def _state_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(".whisperjav-enhance.*"))


def test_lock_and_records_stay_in_the_callers_folders(tmp_path, no_whisperjav):
    # enhance_single_audio writes only beside its output, never in the folder above it (which
    # need not be writable: /home/u/x.wav must not lock /home)
    above = tmp_path / "home"
    source = above / "u" / "x.wav"
    write_tone(source, 0.2)
    above.chmod(0o555)   # refuses a non-root user; as root the asserts below still decide
    try:
        out = enhance_single_audio(source, "none", options=CPU, policy=ONE_WORKER)
        elsewhere = enhance_single_audio(source, "none", tmp_path / "other" / "y.wav",
                                         options=CPU, policy=ONE_WORKER)
    finally:
        above.chmod(0o755)
    assert out == source.with_name("x_enhanced.wav") and wav_format(out) == (16_000, 1, "PCM_16")
    assert elsewhere == tmp_path / "other" / "y.wav" and wav_format(elsewhere)[0] == 16_000
    assert _state_files(source.parent) == [LOCK_NAME, RECORDS_NAME]
    assert _state_files(tmp_path / "other") == [LOCK_NAME, RECORDS_NAME]
    assert _state_files(above) == [] and _state_files(tmp_path) == []

    # the scene helpers keep theirs in temp_dir, beside the folders that hold only outputs
    scenes = pipeline_scenes(tmp_path / "scenes", [0.2, 0.3])
    temp_dir = tmp_path / "work" / "temp"
    temp_dir.mkdir(parents=True)
    enhanced = enhance_scenes(scenes, "none", temp_dir, options=CPU, policy=ONE_WORKER)
    resampled = resample_scenes(scenes, temp_dir, options=CPU, policy=ONE_WORKER)
    assert {got[0].parent for got in enhanced} == {temp_dir / "enhanced_scenes"}
    assert {got[0].parent for got in resampled} == {temp_dir / "resampled_scenes"}
    assert _state_files(temp_dir) == [LOCK_NAME, RECORDS_NAME]
    for folder in (temp_dir / "enhanced_scenes", temp_dir / "resampled_scenes",
                   temp_dir.parent, tmp_path / "scenes"):
        assert _state_files(folder) == [], folder


def test_ctrl_c_while_making_the_16k_copies_reaches_the_pipeline(tmp_path, no_whisperjav):
    scenes, bad, clash, temp_dir = _contract_scenes(tmp_path)
    runs = []

    def on_event(event):
        if isinstance(event, RunStarted):
            runs.append(event)
        elif isinstance(event, WorkerStarted) and len(runs) == 2:
            raise KeyboardInterrupt   # Ctrl-C once the copies' worker is up

    with pytest.raises(KeyboardInterrupt, match="interrupted; workers stopped"):
        enhance_scenes(scenes, "none", temp_dir, options=CPU, policy=ONE_WORKER,
                       on_event=on_event)
    assert len(runs) == 2 and runs[1].scenes_total == 2   # the copies of the two failed scenes
    expected = {f"movie_scene_{i:04d}_enhanced.wav" for i in range(4)}
    left = {p.name for p in (temp_dir / "enhanced_scenes").iterdir()}
    assert expected <= left <= expected | {"movie_scene_0001_original_16000.wav",
                                           "movie_scene_0004_original_16000.wav"}
