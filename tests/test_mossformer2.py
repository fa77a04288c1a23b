"""MossFormer2_SE_48K backend on the CPU with random weights written in clearvoice's real on-disk
layout: finding and strictly loading checkpoints, exact output lengths through the engine,
batch independence, the STFT path, and parity with clearvoice's own decode math."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from whisperjav_enhance import weights as weights_mod
from whisperjav_enhance.backends import create_backend
from whisperjav_enhance.backends.base import WeightsInfo
from whisperjav_enhance.backends.mossformer2 import (
    CHECKPOINT_FILE, ENV_VAR, HF_REPO_ID, MAX_WAV_VALUE, MIN_FRAMES, POINTER_FILE,
    MossFormer2Backend, masked_resynthesis, stft_padded_length, stft_window, weight_candidates)
from whisperjav_enhance.engine import Engine
from whisperjav_enhance.errors import ConfigError, WeightsError

knf = pytest.importorskip("kaldi_native_fbank")

RATE = 48_000
# The network pads its attention to groups of 256 frames (~2 s), so on this CPU a forward
# costs about the same (0.5-1 s) for any window up to that: tests count forwards, and short
# windows only keep the overlap-add cases small.
WINDOW_S, OVERLAP_S = 0.25, 0.05


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("mf2") / "MossFormer2_SE_48K"
    MossFormer2Backend.write_random_weights(d)
    return d


@pytest.fixture(scope="module")
def backend(weights_dir) -> MossFormer2Backend:
    b = MossFormer2Backend.resolve(str(weights_dir), window_seconds=WINDOW_S,
                                   overlap_seconds=OVERLAP_S)
    b.load(torch.device("cpu"))
    return b


@pytest.fixture
def clean_search(tmp_path, monkeypatch):
    """No env var, an empty HF cache, and a cwd without clearvoice's checkpoints/ folder."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return tmp_path


def speechlike(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    x = 0.2 * env * np.sin(2 * np.pi * 220 * t) + 0.02 * rng.standard_normal(n)
    return x.astype(np.float32)


# -- network import ------------------------------------------------------------------------
def test_network_import_leaves_clearvoice_and_torchaudio_alone(backend):
    assert "torchaudio" not in sys.modules
    # the bare stand-in package is gone, so a later real `import clearvoice` runs its __init__
    assert "clearvoice" not in sys.modules
    assert sum(p.numel() for p in backend.net.parameters()) == 55_262_170


# -- signal path ---------------------------------------------------------------------------
def test_unit_mask_reconstructs_the_input():
    x = torch.from_numpy(np.stack([speechlike(stft_padded_length(9_000), s) for s in (1, 2)]))
    frames = 1 + (x.shape[1] - 1920) // 384
    y = masked_resynthesis(x, torch.ones(2, frames, 961), stft_window())
    assert y.shape == x.shape
    torch.testing.assert_close(y, x, atol=1e-5, rtol=0)  # every sample, edges included
    half = masked_resynthesis(x, torch.full((2, frames, 961), 0.5), stft_window())
    torch.testing.assert_close(half, 0.5 * x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("n", [1, 1_919, 1_920, 2_304, 2_305, 3_000])
def test_padded_length_covers_every_sample_with_whole_frames(n):
    p = stft_padded_length(n)
    assert p >= n and p >= 1920 + (MIN_FRAMES - 1) * 384 and (p - 1920) % 384 == 0
    assert p - n < 384 or n < 1920 + 384


def test_vram_model_over_estimates_the_measurements(backend):
    mib = 1 << 20
    # docs/measurements.md, peak above the 211 MiB of weights (H100, inference mode)
    measured = {(1, 1.0): 258 - 211, (1, 29.0): 469 - 211, (16, 2.0): 494 - 211,
                (64, 4.0): 2156 - 211, (128, 8.0): 7759 - 211, (4, 29.0): 1111 - 211}
    for (batch, seconds), peak_mib in measured.items():
        est = backend.vram_bytes(batch, int(seconds * RATE))
        assert est > peak_mib * mib, (batch, seconds, est / mib, peak_mib)
        assert est < 2.5 * peak_mib * mib + 300 * mib  # not uselessly pessimistic
    assert backend.vram_bytes(2, 96_000) > backend.vram_bytes(1, 96_000)


# -- through the engine --------------------------------------------------------------------
def test_engine_keeps_lengths_and_batches_do_not_matter(backend):
    # One forward costs about the same for any window up to ~2 s (the network pads its attention
    # groups to 256 frames), so this test counts forwards, not seconds of audio.
    # 1 sample and 0.02 s (shorter than any real scene) are padded to the same length and share
    # a forward: each alone would be a single frame, where the network mixes the rows of a batch
    # (hence MIN_FRAMES); the last scene spans two overlapping windows, also batched together.
    lengths = [1, 1_000, int(1.3 * WINDOW_S * RATE)]
    scenes = [speechlike(n, seed=i) for i, n in enumerate(lengths)]
    batched_engine, single_engine = Engine(backend, max_batch=4), Engine(backend, max_batch=1)
    batched = dict(batched_engine.run(scenes))
    single = dict(single_engine.run(scenes))
    assert (single_engine.stats.forwards, batched_engine.stats.forwards) == (4, 2)
    for i, n in enumerate(lengths):
        assert batched[i].shape == (n,) and batched[i].dtype == np.float32
        assert np.isfinite(batched[i]).all()
        np.testing.assert_allclose(batched[i], single[i], atol=1e-5, rtol=1e-4)
    # the random network still does something: output is not the input
    assert np.abs(batched[2] - scenes[2]).max() > 1e-3


def test_enhance_windows_returns_exactly_the_input_shape(backend):
    n = 2_400  # 0.05 s, the shortest real scene: padded inside to whole frames, trimmed after
    x = torch.from_numpy(np.stack([speechlike(n, 5), speechlike(n, 6)]))
    y = backend.enhance_windows(x)
    assert tuple(y.shape) == (2, n) and y.dtype == torch.float32
    assert torch.isfinite(y).all()


def test_zero_padding_looks_like_dithered_silence_to_the_network(backend):
    # clearvoice always dithers (amplitude 1.0), so that is what silence looks like to the
    # network; the zeros the engine pads short scenes with must not read as log(eps) = -15.9.
    assert backend.dither == 1.0 and backend.describe()["fbank_dither"] == 1.0
    n = stft_padded_length(12_000)
    speech_then_zeros = torch.zeros(2, n)
    speech_then_zeros[:, :4_800] = torch.from_numpy(speechlike(4_800, 3))
    feats = backend.features(speech_then_zeros)[..., :60]
    padding_frames = feats[:, 1 + 4_800 // 384:]
    assert padding_frames.min() > -5 and padding_frames.mean() > 5
    # deterministic, and a row's features do not depend on the batch
    torch.testing.assert_close(backend.features(speech_then_zeros[:1])[..., :60], feats[:1])


# -- parity with clearvoice's decode math --------------------------------------------------
def knf_fbank_48k(x16: np.ndarray) -> np.ndarray:
    o = knf.FbankOptions()
    o.frame_opts.dither = 0.0  # clearvoice uses 1.0; 0 makes the comparison exact
    o.frame_opts.window_type = "hamming"
    o.frame_opts.frame_length_ms = 1920 / 48_000 * 1000
    o.frame_opts.frame_shift_ms = 384 / 48_000 * 1000
    o.frame_opts.samp_freq = 48_000
    o.mel_opts.num_bins = 60
    fb = knf.OnlineFbank(o)
    fb.accept_waveform(48_000, x16.tolist())
    fb.input_finished()
    return np.stack([np.asarray(fb.get_frame(i)) for i in range(fb.num_frames_ready)])


def np_deltas(feat: np.ndarray) -> np.ndarray:
    """torchaudio.functional.compute_deltas(win_length=5) along time (axis 0, edges repeated)."""
    t_len = feat.shape[0]
    idx = lambda t: min(max(t, 0), t_len - 1)  # noqa: E731
    return np.stack([sum(k * feat[idx(t + k)] for k in range(-2, 3)) / 10.0
                     for t in range(t_len)])


def clearvoice_decode(net, audio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """decode_one_audio_mossformer2_se_48k's whole-input branch, step by step, with
    kaldi_native_fbank standing in for torchaudio's Kaldi fbank. Returns (output, features)."""
    inputs = audio.astype(np.float64) * MAX_WAV_VALUE
    fbanks = knf_fbank_48k(inputs.astype(np.float32))
    d1 = np_deltas(fbanks)
    d2 = np_deltas(d1)
    feats = torch.from_numpy(np.concatenate([fbanks, d1, d2], axis=1).astype(np.float32))
    with torch.inference_mode():
        pred_mask = net(feats.unsqueeze(0))[-1]                      # [1, frames, 961]
        window = torch.hamming_window(1920, periodic=False)
        audio_t = torch.from_numpy(inputs.astype(np.float32))
        spectrum = torch.view_as_real(torch.stft(audio_t, 1920, 384, 1920, center=False,
                                                 window=window, return_complex=True))
        masked = spectrum * pred_mask.permute(2, 1, 0)               # [961, frames, 2]
        complex_spec = masked[:, :, 0] + 1j * masked[:, :, 1]
        out = torch.istft(complex_spec, n_fft=1920, hop_length=384, win_length=1920,
                          window=window, center=False, length=len(audio_t))
    return out.numpy() / MAX_WAV_VALUE, feats.numpy()


def test_matches_clearvoice_decode_math_on_the_same_network(weights_dir):
    n = 1920 + 384 * 30  # a whole number of hops and >= 2 frames: no padding on either side
    exact = MossFormer2Backend.resolve(str(weights_dir), dither=0.0)  # the noiseless fbank
    exact.load("cpu")
    audio = speechlike(n, seed=11)
    ref, ref_feats = clearvoice_decode(exact.net, audio)
    x = torch.from_numpy(audio).unsqueeze(0)
    ours_feats = exact.features(x)[0].numpy()
    ours = exact.enhance_windows(x)[0].numpy()
    feat_err = np.abs(ours_feats - ref_feats).max()
    out_err = np.abs(ours - ref).max()
    assert feat_err < 1e-3, feat_err
    assert out_err < 1e-4 * np.abs(ref).max() + 1e-6, (out_err, np.abs(ref).max())
    assert np.abs(ref).max() > 1e-3  # the comparison is not between two silences


# -- finding weights -----------------------------------------------------------------------
def test_resolve_explicit_path_forms(weights_dir, tmp_path):
    pt = weights_dir / CHECKPOINT_FILE
    for given in (weights_dir, weights_dir / POINTER_FILE, pt, weights_dir.parent):
        b = MossFormer2Backend.resolve(str(given))
        assert Path(b.weights.path) == pt, given
        assert b.weights.origin == "explicit" and b.weights.random_test_weights
        assert b.window_seconds == 4.0 and b.overlap_seconds == 1.0 and b.sample_rate == RATE
    with pytest.raises(WeightsError, match="nowhere"):
        MossFormer2Backend.resolve(str(tmp_path / "nowhere"))


def test_resolve_env_var(weights_dir, clean_search, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(weights_dir))
    b = create_backend("clearvoice:MossFormer2_SE_48K")
    assert isinstance(b, MossFormer2Backend)
    assert b.weights.origin == f"env:{ENV_VAR}"
    assert Path(b.weights.path) == weights_dir / CHECKPOINT_FILE
    monkeypatch.setenv(ENV_VAR, str(clean_search / "missing"))
    with pytest.raises(WeightsError, match=ENV_VAR):
        MossFormer2Backend.resolve()


def _link_or_copy(src: Path, dst: Path):
    try:
        os.symlink(src, dst)
    except OSError:  # no symlink privilege (Windows): the hub then copies too
        shutil.copyfile(src, dst)


def test_resolve_hugging_face_cache_layout(weights_dir, clean_search):
    # The hub keeps files in blobs/ and links them from snapshots/<revision>/
    repo = clean_search / "hf" / ("models--" + HF_REPO_ID.replace("/", "--"))
    blobs = repo / "blobs"
    snap = repo / "snapshots" / "0123abcd"
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    for name, blob in ((POINTER_FILE, "aaa1"), (CHECKPOINT_FILE, "bbb2")):
        shutil.copyfile(weights_dir / name, blobs / blob)
        _link_or_copy(blobs / blob, snap / name)
    b = MossFormer2Backend.resolve()
    assert b.weights.origin == "hf-cache"
    assert Path(b.weights.path) == snap / CHECKPOINT_FILE
    assert b.weights.random_test_weights


def test_resolve_clearvoice_checkpoints_layout_in_cwd(weights_dir, clean_search):
    dst = Path.cwd() / "checkpoints" / "MossFormer2_SE_48K"
    dst.mkdir(parents=True)
    for name in (POINTER_FILE, CHECKPOINT_FILE):
        _link_or_copy(weights_dir / name, dst / name)
    b = MossFormer2Backend.resolve()
    assert b.weights.origin == "clearvoice-checkpoints"
    assert Path(b.weights.path) == dst / CHECKPOINT_FILE


def test_missing_weights_say_where_they_looked_and_how_to_get_them(clean_search):
    if any(origin == "clearvoice-checkpoints" and p.exists() for origin, p in weight_candidates()):
        pytest.skip("the installed clearvoice package carries its own checkpoints here")
    with pytest.raises(WeightsError) as info:
        MossFormer2Backend.resolve()
    msg = str(info.value)
    # A command that exists here (issue 15): hf/huggingface-cli, or the Python one-liner.
    assert "download alibabasglab/MossFormer2_SE_48K" in msg or "snapshot_download" in msg
    assert "models --download mossformer2" in msg
    assert ENV_VAR in msg
    assert str(clean_search / "hf") in msg
    assert str(Path.cwd() / "checkpoints" / "MossFormer2_SE_48K" / POINTER_FILE) in msg


def test_pointer_to_a_missing_file_names_both(tmp_path):
    (tmp_path / POINTER_FILE).write_text("model.ckpt-99.pt\n")
    with pytest.raises(WeightsError, match="model.ckpt-99.pt") as info:
        MossFormer2Backend.resolve(str(tmp_path))
    assert str(tmp_path / POINTER_FILE) in str(info.value)


def test_unknown_option_is_a_config_error(weights_dir):
    with pytest.raises(ConfigError, match="window_sconds"):
        MossFormer2Backend.resolve(str(weights_dir), window_sconds=2.0)
    with pytest.raises(ConfigError, match="overlap"):
        MossFormer2Backend.resolve(str(weights_dir), window_seconds=1.0, overlap_seconds=1.0)


# -- loading strictly ----------------------------------------------------------------------
def _unloaded(path: Path) -> MossFormer2Backend:
    return MossFormer2Backend(WeightsInfo(str(path), "explicit", True))


def test_truncated_checkpoint_is_a_weights_error_naming_the_file(weights_dir, tmp_path):
    bad = tmp_path / CHECKPOINT_FILE
    data = (weights_dir / CHECKPOINT_FILE).read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    (tmp_path / POINTER_FILE).write_text(CHECKPOINT_FILE + "\n")
    with pytest.raises(WeightsError, match="truncated, corrupt") as info:
        MossFormer2Backend.resolve(str(tmp_path))
    assert str(bad) in str(info.value)
    with pytest.raises(WeightsError, match="truncated, corrupt") as info:
        _unloaded(bad).load("cpu")
    assert str(bad) in str(info.value)


@pytest.fixture(scope="module")
def network_shapes(backend) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in backend.net.state_dict().items()}


def constant_state(shapes: dict[str, tuple], value: float = 0.5) -> dict[str, torch.Tensor]:
    """A state dict of the right shapes whose tensors share one element (a tiny file)."""
    return {k: torch.full((), value).expand(shape) for k, shape in shapes.items()}


def test_wrong_keys_are_a_weights_error_naming_the_file(network_shapes, tmp_path):
    path = tmp_path / "other.pt"
    sd = constant_state(network_shapes)
    sd = {("encoder." + k if i % 100 == 0 else k): v for i, (k, v) in enumerate(sd.items())}
    torch.save({"model": sd}, path)
    with pytest.raises(WeightsError) as info:
        _unloaded(path).load("cpu")
    msg = str(info.value)
    assert str(path) in msg and "missing" in msg and "unexpected" in msg


def test_wrong_shapes_are_a_weights_error_naming_the_file(network_shapes, tmp_path):
    path = tmp_path / "shapes.pt"
    key = "mossformer.conv1d_encoder.weight"
    shapes = dict(network_shapes)
    shapes[key] = (shapes[key][0] + 1,) + shapes[key][1:]
    torch.save({"model": constant_state(shapes)}, path)
    with pytest.raises(WeightsError) as info:
        _unloaded(path).load("cpu")
    assert str(path) in str(info.value) and "shape mismatch" in str(info.value)
    assert key in str(info.value)


def test_module_prefix_is_stripped_and_weights_really_load(network_shapes, tmp_path):
    path = tmp_path / "dp.pt"
    sd = {"module." + k: v for k, v in constant_state(network_shapes, 0.125).items()}
    torch.save({"model": sd}, path)
    b = _unloaded(path)
    b.load("cpu")
    for v in b.net.state_dict().values():
        assert torch.all(v == 0.125)
    assert not b.net.training
    b.close()
    assert b.net is None


def test_not_a_checkpoint_dict_is_a_weights_error(tmp_path):
    # The parent finds weights without torch; the worker's strict load refuses what is inside.
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(3)], path)
    with pytest.raises(WeightsError, match="not a MossFormer2_SE_48K checkpoint"):
        MossFormer2Backend.resolve(str(path)).load("cpu")


def test_pickled_objects_are_refused_with_a_clear_message(tmp_path):
    import argparse

    path = tmp_path / "objects.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "args": argparse.Namespace(lr=1e-3)}, path)
    with pytest.raises(WeightsError, match="objects besides tensors") as info:
        MossFormer2Backend.resolve(str(path)).load("cpu")
    assert str(path) in str(info.value)


def test_random_marker_is_what_flags_random_weights(weights_dir, tmp_path):
    # a checkpoint without the marker (like the published one) is reported as real weights
    path = tmp_path / "unmarked.pt"
    torch.save({"model": {"x": torch.zeros(1)}}, path)
    assert MossFormer2Backend.resolve(str(path)).weights.random_test_weights is False
    marked = torch.load(weights_dir / CHECKPOINT_FILE, map_location="cpu", weights_only=True,
                        mmap=True)
    assert marked[weights_mod.RANDOM_WEIGHTS_MARKER] is True


# -- on a GPU ------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu_and_stays_within_the_memory_model(weights_dir, backend):
    dev = torch.device("cuda")
    gpu = MossFormer2Backend.resolve(str(weights_dir))
    gpu.load(dev)
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        x = torch.from_numpy(np.stack([speechlike(24_000, s) for s in range(2)]))
        torch.testing.assert_close(gpu.enhance_windows(x.to(dev)).cpu(),
                                   backend.enhance_windows(x), atol=1e-4, rtol=1e-3)
        batch, window = 8, 4 * RATE
        xb = 0.1 * torch.randn(batch, window, device=dev)
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        gpu.enhance_windows(xb)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        assert 0 < peak <= gpu.vram_bytes(batch, window), (peak, gpu.vram_bytes(batch, window))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        gpu.close()
