"""The hosted backend on its own: recipes and their spellings, the registry, the parent-side
checks, loading and calling WhisperJAV's (stand-in) classes, the listing for `models`, the one
import line of the drop-in, and a hosted enhancer used from the API and the CLI."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from whisperjav_enhance.backends import backend_class, parse_backend_spec, select_backend
from whisperjav_enhance.backends.base import WeightsInfo
from whisperjav_enhance.backends.hosted import HostedRecipe, available_hosted, hosted_class
from whisperjav_enhance.errors import BackendUnavailable, ConfigError, SceneError
from whisperjav_stub.harness import forget_whisperjav, pipeline_scenes, use_stub, wav_format

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _fresh_whisperjav_modules():
    forget_whisperjav()
    yield
    forget_whisperjav()


def test_recipe_spellings_round_trip():
    r = HostedRecipe.parse('whisperjav:ClearVoice:FRCRN_SE_16K{"device": "cpu", "a": [1, 2]}')
    assert (r.backend, r.model, r.settings) == ("clearvoice", "FRCRN_SE_16K",
                                                (("a", [1, 2]), ("device", "cpu")))
    assert r.name == 'whisperjav:clearvoice:FRCRN_SE_16K{"a":[1,2],"device":"cpu"}'
    assert HostedRecipe.parse(r.name).name == r.name
    assert r.create_kwargs() == {"model": "FRCRN_SE_16K", "a": [1, 2], "device": "cpu"}
    assert HostedRecipe.parse("whisperjav:bs-roformer").name == "whisperjav:bs-roformer"
    assert parse_backend_spec("WhisperJAV:BS-RoFormer:vocals") == "whisperjav:bs-roformer:vocals"
    for bad in ("whisperjav:", "whisperjav:bs roformer", 'whisperjav:x:y{"model": 1}',
                "whisperjav:x:y{not json}", 'whisperjav:x{"k": {"n": NaN}}'):
        with pytest.raises(ConfigError):
            parse_backend_spec(bad)
    with pytest.raises(ConfigError, match="whisperjav:<backend>"):
        parse_backend_spec("bs-roformer")   # the CLI needs the whisperjav: prefix


def test_registry_binds_one_class_per_recipe_and_backends_pickle(monkeypatch):
    cls = backend_class("whisperjav:zipenhancer:onnx")
    assert cls is hosted_class("WHISPERJAV:zipenhancer:onnx") and cls.name == "whisperjav:zipenhancer:onnx"
    assert (cls.windowed, cls.recipe.model) == (False, "onnx")
    backend = cls(WeightsInfo(None, "whisperjav", False))
    clone = pickle.loads(pickle.dumps(backend))
    assert type(clone) is cls and clone.weights == backend.weights


def test_parent_side_checks(monkeypatch):
    with pytest.raises(BackendUnavailable, match="WhisperJAV cannot be imported"):
        select_backend("whisperjav:bs-roformer")
    use_stub(monkeypatch, "1.9")
    backend, note = select_backend("whisperjav:bs-roformer:vocals")
    assert backend.name == "whisperjav:bs-roformer:vocals" and backend.weights.path is None
    assert "bs-roformer" in note
    with pytest.raises(ConfigError, match="no speech enhancer 'nope'.*bs-roformer"):
        select_backend("whisperjav:nope")
    with pytest.raises(BackendUnavailable, match="pip install demucs"):
        select_backend("whisperjav:htdemucs")
    with pytest.raises(ConfigError, match="--weights"):
        select_backend("whisperjav:bs-roformer", "/some/weights.pt")
    with pytest.raises(ConfigError, match="takes no backend options"):
        select_backend("whisperjav:bs-roformer", window_seconds=2.0)
    # the parent never builds or initialises an enhancer
    assert "whisperjav.modules.speech_enhancement.backends.models" not in sys.modules


def _loaded(name: str):
    backend = backend_class(name).resolve()
    backend.load("cpu")
    return backend


def test_load_and_enhance_scene_in_process(monkeypatch):
    use_stub(monkeypatch, "1.9")
    zip_onnx = _loaded("whisperjav:zipenhancer:onnx")
    assert zip_onnx.sample_rate == 16_000 and zip_onnx.display_name == "ZipEnhancer (onnx)"
    x = (0.3 * np.sin(np.arange(8_000) / 5.0)).astype(np.float32)
    y = zip_onnx.enhance_scene(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.allclose(y, 0.8 * np.tanh(1.5 * x), atol=1e-6)
    zip_onnx.close()
    zip_onnx.close()

    none = _loaded("whisperjav:none")   # returns 16 kHz for 48 kHz: brought back to 48 kHz
    x48 = (0.3 * np.sin(np.arange(4_800) / 40.0)).astype(np.float32)
    y48 = none.enhance_scene(x48)
    assert y48.shape == x48.shape and np.max(np.abs(y48[200:-200] - x48[200:-200])) < 0.02

    flaky = _loaded('whisperjav:flaky{"fail_over_s":0.01,"unavailable_over_s":0.5}')
    with pytest.raises(SceneError) as failed:
        flaky.enhance_scene(x48)
    assert failed.value.reason == "backend_error"
    assert str(failed.value) == ("flaky (standard) did not clean this scene: a 0.10 s scene is "
                                 "longer than 0.01 s")
    with pytest.raises(SceneError) as gave_up:   # WhisperJAV's SpeechEnhancerUnavailable
        flaky.enhance_scene(np.zeros(48_000, np.float32))
    assert gave_up.value.reason == "enhancer_unavailable"
    assert str(gave_up.value) == "the flaky enhancer gave up for good on a 1.00 s scene"
    from whisperjav.modules.speech_enhancement.base import SpeechEnhancerUnavailable

    assert isinstance(gave_up.value.__cause__, SpeechEnhancerUnavailable)
    with pytest.raises(SceneError):   # nothing remembered: the same scene is computed again
        flaky.enhance_scene(x48)


def test_load_failures_are_backend_unavailable(monkeypatch):
    use_stub(monkeypatch, "1.8")
    with pytest.raises(BackendUnavailable, match="could not create.*NoSuchModel"):
        _loaded("whisperjav:clearvoice:NoSuchModel")
    backend = hosted_class("whisperjav:bs-roformer")(WeightsInfo(None, "whisperjav", False))
    monkeypatch.setenv("WHISPERJAV_STUB_UNAVAILABLE", "bs-roformer")
    with pytest.raises(BackendUnavailable, match="fell back to no clean-up"):
        backend.load("cpu")   # 1.8's factory silently falls back to none: refused


def test_available_hosted_lists_the_factorys_enhancers(monkeypatch):
    assert available_hosted() == ()
    use_stub(monkeypatch, "1.9")
    infos = {i.backend: i for i in available_hosted()}
    assert "none" not in infos
    assert infos["clearvoice"].models == ("MossFormer2_SE_48K", "FRCRN_SE_16K",
                                          "MossFormerGAN_SE_16K", "MossFormer2_SS_16K")
    assert infos["bs-roformer"].spelling == "whisperjav:bs-roformer" and infos["bs-roformer"].available
    assert (infos["htdemucs"].available, infos["htdemucs"].hint) == (False, "pip install demucs")

    # an object that cannot name its models lists none, and is still cleaned up
    from whisperjav.modules.speech_enhancement.backends.faulty import FlakyEnhancer

    cleaned = []

    def broken_listing(self):
        raise RuntimeError("no model list")

    monkeypatch.setattr(FlakyEnhancer, "get_supported_models", broken_listing)
    monkeypatch.setattr(FlakyEnhancer, "cleanup", lambda self: cleaned.append(self.name))
    infos = {i.backend: i for i in available_hosted()}
    assert (infos["flaky"].available, infos["flaky"].models) == (True, ())
    assert cleaned == ["flaky"]
    assert infos["crashy"].models == ("sigkill", "exit")


def test_one_import_line_takes_every_name(monkeypatch):
    use_stub(monkeypatch, "1.9")
    from whisperjav_enhance.integrations.whisperjav import (  # noqa: F401
        EnhancementResult, SpeechEnhancerFactory, SpeechEnhancerUnavailable,
        create_enhancer_direct, create_enhancer_from_config, enhance_scenes, enhance_single_audio,
        get_extraction_sample_rate, is_passthrough_backend, resample_scenes)
    import whisperjav.modules.speech_enhancement as theirs

    assert SpeechEnhancerFactory is theirs.SpeechEnhancerFactory
    assert SpeechEnhancerUnavailable is theirs.SpeechEnhancerUnavailable
    assert get_extraction_sample_rate("none") == 16_000
    assert enhance_scenes is not theirs.enhance_scenes and enhance_scenes.__module__.startswith(
        "whisperjav_enhance")
    from whisperjav_enhance.integrations import whisperjav as dropin

    with pytest.raises(ImportError):
        from whisperjav_enhance.integrations.whisperjav import no_such_name  # noqa: F401
    with pytest.raises(AttributeError, match="does not provide it"):
        dropin.no_such_name
    use_stub(monkeypatch, "1.8")   # 1.8 has no such class: ours stands in (never raised there)

    assert dropin.SpeechEnhancerUnavailable is dropin.upstream.SpeechEnhancerUnavailable
    assert dropin.upstream.installed_rules().line == "1.8"


def test_hosted_enhancer_from_the_api_and_the_cli(tmp_path, monkeypatch):
    use_stub(monkeypatch, "1.9")
    from whisperjav_enhance.config import EnhanceOptions, PoolPolicy
    from whisperjav_enhance.pipeline import enhance_scenes

    scenes = pipeline_scenes(tmp_path / "in", [0.3, 0.2])
    summary = enhance_scenes(tmp_path / "in", tmp_path / "api",
                             EnhanceOptions(backend="whisperjav:clearvoice:FRCRN_SE_16K",
                                            device="cpu"),
                             PoolPolicy(workers_per_device=1, warm_standby=False))
    assert summary.complete and summary.backend == "whisperjav:clearvoice:FRCRN_SE_16K"
    assert [wav_format(tmp_path / "api" / s[0].name) for s in scenes] == [(48_000, 1, "PCM_16")] * 2

    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "whisperjav_enhance", "enhance", str(tmp_path / "in"), "-o",
         str(tmp_path / "cli"), "--backend", "whisperjav:ffmpeg-dsp:amplify", "--device", "cpu",
         "--workers", "1", "--output-sample-rate", "16000"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [wav_format(tmp_path / "cli" / s[0].name) for s in scenes] == [(16_000, 1, "PCM_16")] * 2
