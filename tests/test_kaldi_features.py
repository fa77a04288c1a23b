"""Kaldi fbank and deltas in torch against independent references: the kaldi_native_fbank
package (a C++ Kaldi port) for the filterbank, and a loop-by-loop numpy transcription of
torchaudio's ``compute_deltas`` for the deltas."""

import numpy as np
import pytest
import torch

from whisperjav_enhance.backends.kaldi_features import (FbankOptions, KaldiFbank,
                                                        compute_deltas, num_frames)

knf = pytest.importorskip("kaldi_native_fbank")

# Tolerance on log-mel energies (natural log): float32 FFTs of different libraries agree to
# ~1e-4; anything systematic (window, mel edges, pre-emphasis, DC, FFT size) is >1e-2.
LOG_MEL_ATOL = 1e-3
LOG_MEL_RTOL = 1e-4
# A full-scale pure tone over quantisation noise spans ~100 dB inside one frame; with a hanning
# window the far bins then carry float32 FFT rounding of ~1e-3 in either implementation.
LOG_MEL_ATOL_WIDE_RANGE = 5e-3


def knf_fbank(x: np.ndarray, o: FbankOptions) -> np.ndarray:
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.window_type = o.window_type
    opts.frame_opts.samp_freq = float(o.sample_rate_hz)
    opts.frame_opts.frame_length_ms = o.frame_length * 1000.0 / o.sample_rate_hz
    opts.frame_opts.frame_shift_ms = o.frame_shift * 1000.0 / o.sample_rate_hz
    opts.frame_opts.snip_edges = True
    opts.frame_opts.remove_dc_offset = o.remove_dc_offset
    opts.frame_opts.preemph_coeff = o.preemphasis
    opts.frame_opts.round_to_power_of_two = o.round_to_power_of_two
    opts.mel_opts.num_bins = o.num_mel_bins
    opts.mel_opts.low_freq = o.low_freq_hz
    opts.mel_opts.high_freq = o.high_freq_hz
    opts.use_energy = False
    opts.use_log_fbank = True
    opts.use_power = o.use_power
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(float(o.sample_rate_hz), x.astype(np.float32).tolist())
    fb.input_finished()
    if fb.num_frames_ready == 0:
        return np.zeros((0, o.num_mel_bins), np.float32)
    return np.stack([np.asarray(fb.get_frame(i)) for i in range(fb.num_frames_ready)])


def signals(n: int, rate: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Test signals in 16-bit units (float audio * 32768), as clearvoice feeds the fbank.

    Rounded to whole steps like real 16-bit audio: the quantisation noise floor keeps every bin
    far above float32 FFT rounding (a noiseless tone under a hanning window leaves far bins
    >120 dB down, where any two float32 implementations disagree).
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    sigs = {
        "noise": 3000.0 * rng.standard_normal(n),
        "tone_plus_noise": 10000 * np.sin(2 * np.pi * 440 * t) + 30 * rng.standard_normal(n),
        "pure_tone": 16000 * np.sin(2 * np.pi * 1234.5 * t + 0.3),
        "chirp_with_dc": 8000 * np.sin(2 * np.pi * (200 + 3000 * t) * t) + 500.0,
        "near_silence": 2.0 * rng.standard_normal(n),
        "digital_silence": np.zeros(n),
    }
    return {k: np.round(v) for k, v in sigs.items()}


def assert_log_mel_close(ours: np.ndarray, ref: np.ndarray, label: str,
                         atol: float = LOG_MEL_ATOL):
    assert ours.shape == ref.shape, (label, ours.shape, ref.shape)
    np.testing.assert_allclose(ours, ref, atol=atol, rtol=LOG_MEL_RTOL, err_msg=label)


def test_mossformer2_fbank_matches_kaldi_native_fbank():
    o = FbankOptions()  # MossFormer2_SE_48K's: 48 kHz, hamming 1920/384, 60 bins
    fb = KaldiFbank(o)
    n = 48_000 // 4 + 123  # not a whole number of hops: the tail must be dropped like Kaldi
    worst = 0.0
    for name, x in signals(n, 48_000).items():
        x = x.astype(np.float32)
        ref = knf_fbank(x, o)
        ours = fb(torch.from_numpy(x)).numpy()
        assert_log_mel_close(ours, ref, name)
        worst = max(worst, float(np.abs(ours - ref).max()))
    assert ref.shape == (num_frames(n, o), 60)
    # The reference is not degenerate: the signals span a wide range of energies.
    assert worst < LOG_MEL_ATOL


def test_batched_rows_match_reference_row_by_row():
    o = FbankOptions()
    sig = list(signals(6_000, 48_000, seed=3).values())
    batch = np.stack(sig[:4]).astype(np.float32)
    ours = KaldiFbank(o)(torch.from_numpy(batch)).numpy()
    assert ours.shape == (4, num_frames(6_000, o), 60)
    for i in range(4):
        assert_log_mel_close(ours[i], knf_fbank(batch[i], o), f"row {i}")


@pytest.mark.parametrize("window_type", ["povey", "hanning", "hamming", "rectangular"])
def test_other_kaldi_configurations_match(window_type):
    # 16 kHz, 25 ms / 10 ms, 23 bins (Kaldi's defaults), 400-sample frames padded to 512,
    # and a non-default band: the implementation is general, not tuned to one setting.
    o = FbankOptions(sample_rate_hz=16_000, frame_length=400, frame_shift=160, num_mel_bins=23,
                     window_type=window_type, low_freq_hz=60.0, high_freq_hz=-400.0)
    fb = KaldiFbank(o)
    for name, x in signals(4_000, 16_000, seed=1).items():
        x = x.astype(np.float32)
        assert_log_mel_close(fb(torch.from_numpy(x)).numpy(), knf_fbank(x, o), name,
                             atol=LOG_MEL_ATOL_WIDE_RANGE if name == "pure_tone" else LOG_MEL_ATOL)


def test_magnitude_and_unpadded_fft_match():
    o = FbankOptions(use_power=False, round_to_power_of_two=False, preemphasis=0.0,
                     remove_dc_offset=False)
    x = signals(5_000, 48_000, seed=2)["chirp_with_dc"].astype(np.float32)
    assert_log_mel_close(KaldiFbank(o)(torch.from_numpy(x)).numpy(), knf_fbank(x, o), "chirp")


@pytest.mark.parametrize("n", [1_919, 1_920, 2_303, 2_304, 2_305, 5_000])
def test_frame_count_matches_kaldi_and_stft(n):
    o = FbankOptions()
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 1000
    assert num_frames(n, o) == knf_fbank(x, o).shape[0]
    if n >= o.frame_length:
        spec = torch.stft(torch.from_numpy(x), 1920, 384, 1920, center=False,
                          window=torch.hamming_window(1920, periodic=False), return_complex=True)
        assert spec.shape[-1] == num_frames(n, o)
        assert KaldiFbank(o)(torch.from_numpy(x)).shape == (num_frames(n, o), 60)


def test_shorter_than_one_frame_is_an_error():
    with pytest.raises(ValueError, match="shorter than one frame"):
        KaldiFbank()(torch.zeros(2, 1_919))


def np_compute_deltas(x: np.ndarray, win_length: int = 5) -> np.ndarray:
    """torchaudio.functional.compute_deltas, written out: along the last axis, edges repeated."""
    n = (win_length - 1) // 2
    denom = n * (n + 1) * (2 * n + 1) / 3
    t_len = x.shape[-1]
    out = np.zeros_like(x, dtype=np.float64)
    for t in range(t_len):
        acc = np.zeros(x.shape[:-1])
        for k in range(-n, n + 1):
            acc = acc + k * x[..., min(max(t + k, 0), t_len - 1)]
        out[..., t] = acc / denom
    return out


@pytest.mark.parametrize("frames", [1, 2, 3, 7, 40])
@pytest.mark.parametrize("win_length", [5, 3, 9])
def test_deltas_match_numpy_reference(frames, win_length):
    rng = np.random.default_rng(frames * 10 + win_length)
    feats = rng.standard_normal((2, frames, 6)).astype(np.float32) * 5  # [B, frames, bins]
    ours = compute_deltas(torch.from_numpy(feats), win_length, dim=-2).numpy()
    ref = np_compute_deltas(np.swapaxes(feats, 1, 2).astype(np.float64), win_length)
    np.testing.assert_allclose(ours, np.swapaxes(ref, 1, 2), atol=1e-5, rtol=1e-5)


def test_with_deltas_is_fbank_delta_and_delta_of_delta():
    o = FbankOptions()
    x = torch.from_numpy(signals(9_000, 48_000)["tone_plus_noise"].astype(np.float32))
    fb = KaldiFbank(o)
    feats = fb.with_deltas(x.unsqueeze(0))[0].numpy()
    base = fb(x).numpy()
    assert feats.shape == (num_frames(9_000, o), 180)
    np.testing.assert_allclose(feats[:, :60], base, atol=1e-6)
    d1 = np_compute_deltas(base.T.astype(np.float64)).T
    d2 = np_compute_deltas(d1.T).T
    np.testing.assert_allclose(feats[:, 60:120], d1, atol=1e-4)
    np.testing.assert_allclose(feats[:, 120:], d2, atol=1e-4)
    assert np.abs(d1).max() > 0.1  # a tone with noise has non-trivial deltas


def test_optional_dither_is_deterministic_and_batch_independent():
    fb = KaldiFbank(FbankOptions(dither=1.0, dither_seed=7))
    silence = torch.zeros(3, 4_000)
    a = fb(silence)
    b = KaldiFbank(FbankOptions(dither=1.0, dither_seed=7))(silence[:1])
    torch.testing.assert_close(a[0], b[0])  # same rows whatever the batch
    torch.testing.assert_close(a, fb(silence))  # same on every call
    # one 16-bit step of noise lifts digital silence far above the log floor (-15.9)
    assert a.min() > -5 and a.mean() > 5 and KaldiFbank()(silence).max() < -15


def test_dither_of_a_frame_does_not_depend_on_what_ran_before():
    # The pattern is cached and regrown from the seed when a longer input arrives: frame k must
    # get the same noise before and after (the engine's windows share one module per worker).
    x = torch.zeros(1, 1_920 + 384 * 3)
    fresh = KaldiFbank(FbankOptions(dither=1.0))(x)
    grown = KaldiFbank(FbankOptions(dither=1.0))
    short_first = grown(x)
    long_after = grown(torch.zeros(1, 1_920 + 384 * 40))
    torch.testing.assert_close(short_first, fresh, rtol=0, atol=0)
    torch.testing.assert_close(long_after[:, :4], fresh, rtol=0, atol=0)
    torch.testing.assert_close(grown(x), fresh, rtol=0, atol=0)


def test_invalid_options_are_rejected():
    for bad in (dict(window_type="blackmann"), dict(num_mel_bins=0), dict(dither=-1.0),
                dict(low_freq_hz=30_000.0), dict(frame_shift=0)):
        with pytest.raises(ValueError):
            FbankOptions(**bad)
