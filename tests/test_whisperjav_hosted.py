"""Hosted enhancers through the drop-in: WhisperJAV's own classes (the stand-in's, which really
change the audio) rebuilt in spawned workers, recycled, crashing and failing scenes, under both
release lines' rules."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whisperjav_enhance.audio import read_audio, resample
from whisperjav_enhance.config import EnhanceOptions, PoolPolicy
from whisperjav_enhance.events import SceneFinished, WorkerCrashed, WorkerRetired, WorkerStarted
from whisperjav_enhance.integrations.whisperjav import (enhance_scenes, enhance_single_audio,
                                                        resample_scenes)
from whisperjav_stub.harness import forget_whisperjav, pipeline_scenes, read_log, use_stub, wav_format

CPU = EnhanceOptions(device="cpu", batch_seconds=1.0)
ONE_WORKER = PoolPolicy(workers_per_device=1, warm_standby=False)


@pytest.fixture(autouse=True)
def _fresh_whisperjav_modules():
    yield
    forget_whisperjav()


def _factory():
    from whisperjav.modules.speech_enhancement import create_enhancer_direct

    return create_enhancer_direct


def _stub_output(scene: Path, enhancer) -> np.ndarray:
    """What the stand-in's enhancer makes of a scene, brought to 16 kHz the way the worker does."""
    rate = enhancer.get_preferred_sample_rate()
    x, _ = read_audio(scene, rate)
    result = enhancer.enhance(x, rate)
    assert result.success
    return resample(np.asarray(result.audio, dtype=np.float32), result.sample_rate, 16_000)


def test_hosted_enhancer_runs_in_recycled_workers_at_16k(tmp_path, monkeypatch):
    log = tmp_path / "calls.jsonl"
    use_stub(monkeypatch, "1.9", log)
    scenes = pipeline_scenes(tmp_path / "scenes", [0.3, 0.25, 0.4, 0.2, 0.35])
    enhancer = _factory()("bs-roformer", "other")   # no native code here: hosted
    events, degradations = [], []
    policy = PoolPolicy(workers_per_device=1, max_scenes_per_worker=2)

    result = enhance_scenes(scenes, enhancer, tmp_path, None, degradations, options=CPU,
                            policy=policy, on_event=events.append)
    enhancer.cleanup()

    assert degradations == []
    calls = [c for c in read_log(log) if c["event"] == "enhance"]
    worker_pids = {e.pid for e in events if isinstance(e, WorkerStarted)}
    assert len(calls) == len(scenes) and os.getpid() not in {c["pid"] for c in calls}
    assert {c["pid"] for c in calls} <= worker_pids          # ran in the pool's workers
    assert {c["rate"] for c in calls} == {44_100}            # at the enhancer's own rate
    assert len({c["pid"] for c in calls}) >= 3               # 5 scenes, 2 per worker: recycled
    assert sum(1 for e in events if isinstance(e, WorkerRetired) and e.reason == "max_scenes") >= 2
    for original, got in zip(scenes, result):
        assert got == (tmp_path / "enhanced_scenes" / f"{original[0].stem}_enhanced.wav",) + original[1:]
        assert wav_format(got[0]) == (16_000, 1, "PCM_16")
        y, _ = sf.read(str(got[0]), dtype="float32")
        x, _ = sf.read(str(original[0]), dtype="float32")
        assert np.max(np.abs(y - resample(x, 48_000, 16_000))) > 0.05   # really changed
        expected = _stub_output(original[0], _factory()("bs-roformer", "other"))
        assert y.shape == expected.shape and np.max(np.abs(y - expected)) < 2e-3
    if "torch" in sys.modules:
        assert not sys.modules["torch"].cuda.is_initialized()


def test_partial_failure_under_1_9_gives_16k_copies_and_one_line(tmp_path, monkeypatch):
    log = tmp_path / "calls.jsonl"
    use_stub(monkeypatch, "1.9", log)
    scenes = pipeline_scenes(tmp_path / "scenes", [0.2, 0.6, 0.25, 0.7])
    # a setting that differs from its default travels to the worker (0.5 s would pass 0.6 s)
    enhancer = _factory()("flaky", fail_over_s=0.55)
    degradations = []

    result = enhance_scenes(scenes, enhancer, tmp_path, None, degradations, options=CPU,
                            policy=ONE_WORKER)

    enhanced_dir = tmp_path / "enhanced_scenes"
    names = [got[0].name for got in result]
    assert names == ["movie_scene_0000_enhanced.wav", "movie_scene_0001_original_16000.wav",
                     "movie_scene_0002_enhanced.wav", "movie_scene_0003_original_16000.wav"]
    for original, got in zip(scenes, result):
        assert got[0].parent == enhanced_dir and got[1:] == original[1:]
        assert wav_format(got[0]) == (16_000, 1, "PCM_16")
    y, _ = sf.read(str(result[1][0]), dtype="float32")
    x, _ = sf.read(str(scenes[1][0]), dtype="float32")
    assert np.max(np.abs(y - resample(x, 48_000, 16_000))) < 2e-3   # the untouched original
    assert len(degradations) == 1
    assert degradations[0].startswith("2 of 4 scenes went through without being cleaned up by "
                                      "flaky (standard) (first: movie_scene_0001.wav: ")
    assert degradations[0].endswith("a 0.60 s scene is longer than 0.55 s)")
    # a failing scene fails alone: every scene went through the enhancer exactly once
    lengths = sorted(c["samples"] for c in read_log(log) if c["event"] == "enhance")
    assert lengths == sorted(sf.info(str(s[0])).frames for s in scenes)
    # the stand-in's own helper, run in this process, returns the same names
    from whisperjav.modules.speech_enhancement.pipeline_helper import enhance_scenes as theirs

    upstream_dir = tmp_path / "upstream"
    upstream_dir.mkdir()
    theirs_degradations = []
    their_result = theirs(scenes, _factory()("flaky", fail_over_s=0.55), upstream_dir,
                          None, theirs_degradations)
    assert [got[0].name for got in their_result] == names
    assert theirs_degradations[0].split(" (first: ")[0] == degradations[0].split(" (first: ")[0]


def test_all_failed_raises_whisperjavs_own_exception(tmp_path, monkeypatch):
    use_stub(monkeypatch, "1.9")
    from whisperjav.modules.speech_enhancement.base import SpeechEnhancerUnavailable

    scenes = pipeline_scenes(tmp_path / "scenes", [0.3])   # a single-scene call included
    with pytest.raises(SpeechEnhancerUnavailable) as info:
        enhance_scenes(scenes, _factory()("flaky", fail_over_s=0.1), tmp_path, options=CPU,
                       policy=ONE_WORKER)
    message = str(info.value)
    assert message.startswith("flaky (standard) could not clean up the audio: it failed on "
                              "every one of the 1 pieces (first: movie_scene_0000.wav: ")
    assert message.endswith("Choose a different clean-up, or none.")


def test_unavailable_raised_by_the_enhancer_propagates(tmp_path, monkeypatch):
    use_stub(monkeypatch, "1.9")
    from whisperjav.modules.speech_enhancement.base import SpeechEnhancerUnavailable

    scenes = pipeline_scenes(tmp_path / "scenes", [0.2, 0.4, 0.25])
    enhancer = _factory()("flaky", unavailable_over_s=0.3)
    events = []
    with pytest.raises(SpeechEnhancerUnavailable) as info:
        enhance_scenes(scenes, enhancer, tmp_path, options=CPU, policy=ONE_WORKER,
                       on_event=events.append)
    # the enhancer's own words, naming the scene, and nothing of ours
    assert str(info.value) == ("movie_scene_0001.wav: the flaky enhancer gave up for good on a "
                               "0.40 s scene")
    finished = {Path(e.input_path).name: e for e in events if isinstance(e, SceneFinished)}
    assert (finished["movie_scene_0001.wav"].status,
            finished["movie_scene_0001.wav"].reason) == ("failed", "enhancer_unavailable")
    assert {finished[n].status for n in ("movie_scene_0000.wav", "movie_scene_0002.wav")} == \
        {"enhanced"}   # the other scenes were still enhanced


def test_crashing_enhancer_is_quarantined(tmp_path, monkeypatch):
    use_stub(monkeypatch, "1.9")
    scenes = pipeline_scenes(tmp_path / "scenes", [0.2, 0.7, 0.3])
    events, degradations = [], []
    policy = PoolPolicy(workers_per_device=1, warm_standby=False, max_crashes_per_scene=2)

    result = enhance_scenes(scenes, _factory()("crashy", crash_over_s=0.5), tmp_path, None,
                            degradations, options=CPU, policy=policy, on_event=events.append)

    finished = {}   # the enhancement run's record of each scene (the copies' run comes after)
    for e in events:
        if isinstance(e, SceneFinished):
            finished.setdefault(Path(e.input_path).name, e)
    assert finished["movie_scene_0001.wav"].reason == "quarantined"
    assert {finished[n].status for n in ("movie_scene_0000.wav", "movie_scene_0002.wav")} == {"enhanced"}
    assert sum(1 for e in events if isinstance(e, WorkerCrashed)) >= 2
    assert [got[0].name for got in result] == [
        "movie_scene_0000_enhanced.wav", "movie_scene_0001_original_16000.wav",
        "movie_scene_0002_enhanced.wav"]
    assert all(wav_format(got[0])[0] == 16_000 for got in result)
    assert len(degradations) == 1 and degradations[0].startswith("1 of 3 scenes")


def test_enhancer_that_cannot_be_built_in_the_worker(tmp_path, monkeypatch):
    scenes = pipeline_scenes(tmp_path / "scenes", [0.2])
    broken = "clearvoice:NoSuchModel"   # the factory accepts the name; the class refuses the model
    use_stub(monkeypatch, "1.8")
    assert enhance_scenes(scenes, broken, tmp_path, options=CPU, policy=ONE_WORKER)[0] is scenes[0]
    use_stub(monkeypatch, "1.9")
    from whisperjav.modules.speech_enhancement.base import SpeechEnhancerUnavailable

    with pytest.raises(SpeechEnhancerUnavailable, match="cannot start.*NoSuchModel"):
        enhance_scenes(scenes, broken, tmp_path, options=CPU, policy=ONE_WORKER)


def test_1_8_rules_keep_failed_tuples_and_never_raise(tmp_path, monkeypatch):
    use_stub(monkeypatch, "1.8")
    import whisperjav

    monkeypatch.setattr(whisperjav, "__version__", "1.9.3", raising=False)  # decided by modules
    scenes = pipeline_scenes(tmp_path / "scenes", [0.2, 0.7])
    degradations = []
    result = enhance_scenes(scenes, _factory()("flaky"), tmp_path, None, degradations,
                            options=CPU, policy=ONE_WORKER)
    assert result[1] is scenes[1]
    assert result[0][0].name == "movie_scene_0000_enhanced.wav"
    assert wav_format(result[0][0]) == (16_000, 1, "PCM_16")
    assert len(degradations) == 1 and degradations[0].startswith("1 of 2 scenes")
    assert not (tmp_path / "enhanced_scenes" / "movie_scene_0001_original_16000.wav").exists()


def test_single_audio_and_resample_scenes(tmp_path, monkeypatch):
    use_stub(monkeypatch, "1.9")
    scenes = pipeline_scenes(tmp_path / "scenes", [0.3, 0.2])
    amplify = _factory()("ffmpeg-dsp", "amplify", gain_db=3.0)
    out = enhance_single_audio(scenes[0][0], amplify, options=CPU, policy=ONE_WORKER)
    assert out == scenes[0][0].with_name("movie_scene_0000_enhanced.wav")
    assert wav_format(out) == (16_000, 1, "PCM_16")
    y, _ = sf.read(str(out), dtype="float32")
    x, _ = sf.read(str(scenes[0][0]), dtype="float32")
    ref = resample(x, 48_000, 16_000) * np.float32(10 ** (3.0 / 20))
    assert np.max(np.abs(y - ref)) < 3e-3   # gain_db travelled to the worker

    flaky = _factory()("flaky", fail_over_s=0.1)
    assert enhance_single_audio(scenes[1][0], flaky, tmp_path / "x.wav", options=CPU,
                                policy=ONE_WORKER) == scenes[1][0]

    resampled = resample_scenes(scenes, tmp_path, options=CPU, policy=ONE_WORKER)
    assert [got[0] for got in resampled] == [
        tmp_path / "resampled_scenes" / f"movie_scene_{i:04d}_resampled.wav" for i in range(2)]
    assert [got[1:] for got in resampled] == [s[1:] for s in scenes]
    assert all(wav_format(got[0]) == (16_000, 1, "PCM_16") for got in resampled)
