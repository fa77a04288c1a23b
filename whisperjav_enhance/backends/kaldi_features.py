"""Kaldi-compatible log-mel filterbank features and their deltas, in plain torch.

Batched (``[B, T]`` waveforms -> ``[B, frames, bins]``) and device-agnostic, so a worker computes
them on its GPU next to the network, without torchaudio (whose import fails on CUDA-less builds
and drags in a registry of codecs). The numbers follow ``torchaudio.compliance.kaldi.fbank`` (and
Kaldi's ``compute-fbank-feats``) with their defaults: frames cut with ``snip_edges`` (only whole
frames, the first starting at sample 0), DC offset removed per frame, pre-emphasis 0.97 with the
first sample repeated, the analysis window, zero-padding to the next power of two, power
spectrum, triangular filters on Kaldi's mel scale ``1127 ln(1 + f / 700)`` between ``low_freq``
and ``high_freq`` (<= 0 meaning "Nyquist minus that"), and ``log(max(energy, float32 eps))``.
Deltas are torchaudio's ``compute_deltas``: a regression over ``win_length`` frames with the edge
frames repeated. tests/test_kaldi_features.py checks both against the independent
``kaldi_native_fbank`` implementation and a numpy transcription of the delta formula.

Dither is off by default (deterministic features). Where a caller wants Kaldi-style dither, it is
a fixed, seeded noise pattern (the same for every row of a batch), so results never depend on the
batch a window happened to share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Kaldi's floor under filterbank energies before the log: float32 machine epsilon.
LOG_FLOOR = float(torch.finfo(torch.float32).eps)
WINDOW_TYPES = ("hamming", "hanning", "povey", "rectangular")


@dataclass(frozen=True)
class FbankOptions:
    """Everything that defines the features; defaults are MossFormer2_SE_48K's (clearvoice)."""

    sample_rate_hz: int = 48_000       # Hz of the waveform
    frame_length: int = 1_920          # samples per frame (40 ms at 48 kHz)
    frame_shift: int = 384             # samples between frame starts (8 ms at 48 kHz)
    num_mel_bins: int = 60             # triangular mel filters
    low_freq_hz: float = 20.0          # lower edge of the first filter (Hz)
    high_freq_hz: float = 0.0          # upper edge of the last filter (Hz); <= 0: Nyquist + this
    preemphasis: float = 0.97          # x[n] - c * x[n-1] inside each frame (Kaldi default)
    remove_dc_offset: bool = True      # subtract each frame's mean first (Kaldi default)
    window_type: str = "hamming"       # one of WINDOW_TYPES (symmetric, as Kaldi defines them)
    round_to_power_of_two: bool = True  # FFT size = next power of two >= frame_length
    use_power: bool = True             # power (True) or magnitude (False) spectrum
    dither: float = 0.0                # std of added noise, in sample units; 0 = deterministic
    dither_seed: int = 0               # seed of the fixed dither pattern when dither > 0

    def __post_init__(self):
        if self.sample_rate_hz <= 0 or self.frame_length <= 1 or self.frame_shift <= 0:
            raise ValueError(f"sample rate, frame length and shift must be positive: {self}")
        if self.num_mel_bins < 1:
            raise ValueError(f"num_mel_bins must be at least 1, not {self.num_mel_bins}")
        if self.window_type not in WINDOW_TYPES:
            raise ValueError(f"window_type {self.window_type!r} is not one of {WINDOW_TYPES}")
        if self.dither < 0:
            raise ValueError(f"dither must be >= 0, not {self.dither}")
        nyquist = self.sample_rate_hz / 2
        high = self.high_freq_hz if self.high_freq_hz > 0 else nyquist + self.high_freq_hz
        if not (0 <= self.low_freq_hz < high <= nyquist):
            raise ValueError(f"need 0 <= low_freq ({self.low_freq_hz}) < high_freq ({high}) "
                             f"<= Nyquist ({nyquist})")

    @property
    def fft_size(self) -> int:
        """Samples each frame is zero-padded to before the FFT."""
        if not self.round_to_power_of_two:
            return self.frame_length
        return 1 << (self.frame_length - 1).bit_length()

    @property
    def high_freq_effective_hz(self) -> float:
        nyquist = self.sample_rate_hz / 2
        return self.high_freq_hz if self.high_freq_hz > 0 else nyquist + self.high_freq_hz


def num_frames(n_samples: int, opts: FbankOptions) -> int:
    """Frames Kaldi cuts from ``n_samples`` with snip_edges: only whole frames (0 if too short)."""
    if n_samples < opts.frame_length:
        return 0
    return 1 + (n_samples - opts.frame_length) // opts.frame_shift


def mel_scale(freq_hz: torch.Tensor | float):
    """Kaldi's (HTK-style, natural-log) mel scale."""
    if isinstance(freq_hz, torch.Tensor):
        return 1127.0 * torch.log1p(freq_hz / 700.0)
    return 1127.0 * math.log1p(freq_hz / 700.0)


def analysis_window(opts: FbankOptions) -> torch.Tensor:
    """The symmetric window Kaldi applies to each frame (float64)."""
    n = opts.frame_length
    a = 2 * math.pi / (n - 1)
    i = torch.arange(n, dtype=torch.float64)
    if opts.window_type == "hamming":
        return 0.54 - 0.46 * torch.cos(a * i)
    if opts.window_type == "hanning":
        return 0.5 - 0.5 * torch.cos(a * i)
    if opts.window_type == "povey":
        return (0.5 - 0.5 * torch.cos(a * i)).pow(0.85)
    return torch.ones(n, dtype=torch.float64)


def mel_banks(opts: FbankOptions) -> torch.Tensor:
    """Triangular filters as a ``[num_mel_bins, fft_size // 2 + 1]`` float64 matrix.

    Kaldi builds the filters over the first ``fft_size // 2`` bins; the Nyquist bin gets weight 0
    (the extra zero column torchaudio appends).
    """
    n_fft_bins = opts.fft_size // 2
    bin_width_hz = opts.sample_rate_hz / opts.fft_size
    mel_low = mel_scale(opts.low_freq_hz)
    mel_high = mel_scale(opts.high_freq_effective_hz)
    delta = (mel_high - mel_low) / (opts.num_mel_bins + 1)
    b = torch.arange(opts.num_mel_bins, dtype=torch.float64).unsqueeze(1)
    left = mel_low + b * delta
    center = mel_low + (b + 1) * delta
    right = mel_low + (b + 2) * delta
    mel = mel_scale(bin_width_hz * torch.arange(n_fft_bins, dtype=torch.float64)).unsqueeze(0)
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)
    return torch.nn.functional.pad(banks, (0, 1))


def compute_deltas(feats: torch.Tensor, win_length: int = 5, dim: int = -2) -> torch.Tensor:
    """torchaudio's ``compute_deltas`` along ``dim`` (time; frames x bins by default):
    ``d[t] = sum_{k=1..n} k (x[t+k] - x[t-k]) / (2 sum_{k=1..n} k^2)`` with ``n = (win-1)//2``
    and the first/last frames repeated past the edges."""
    if win_length < 3:
        raise ValueError(f"win_length must be at least 3, not {win_length}")
    n = (win_length - 1) // 2
    denom = n * (n + 1) * (2 * n + 1) / 3
    x = feats.movedim(dim, -1)
    shape = x.shape
    flat = x.reshape(-1, 1, shape[-1])
    padded = torch.nn.functional.pad(flat, (n, n), mode="replicate")
    t = shape[-1]
    out = torch.zeros_like(flat)
    for k in range(1, n + 1):
        out += k * (padded[..., n + k:n + k + t] - padded[..., n - k:n - k + t])
    return (out / denom).reshape(shape).movedim(-1, dim)


class KaldiFbank(torch.nn.Module):
    """Log-mel filterbank of a batch of waveforms; move it with ``.to(device)`` like a module.

    Waveforms are in Kaldi's units (16-bit sample values, i.e. float audio times 32768).
    """

    def __init__(self, opts: FbankOptions | None = None):
        super().__init__()
        self.opts = opts or FbankOptions()
        # float32 copies of float64 designs: the rounding happens once, not per frame.
        self.register_buffer("window", analysis_window(self.opts).float(), persistent=False)
        self.register_buffer("banks_t", mel_banks(self.opts).T.contiguous().float(),
                             persistent=False)
        self._dither_cache: dict[tuple, torch.Tensor] = {}

    def num_frames(self, n_samples: int) -> int:
        return num_frames(n_samples, self.opts)

    def _dither(self, n_frames: int, device, dtype) -> torch.Tensor:
        """The fixed ``[frames, frame_length]`` noise pattern (grown and cached as needed)."""
        key = (str(device), dtype)
        cached = self._dither_cache.get(key)
        if cached is None or cached.shape[0] < n_frames:
            gen = torch.Generator().manual_seed(self.opts.dither_seed)
            rows = max(n_frames, 0 if cached is None else 2 * cached.shape[0])
            cached = torch.randn(rows, self.opts.frame_length, generator=gen, dtype=torch.float32)
            cached = (cached * self.opts.dither).to(device=device, dtype=dtype)
            self._dither_cache[key] = cached
        return cached[:n_frames]

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """``[B, T]`` (or ``[T]``) -> ``[B, frames, num_mel_bins]`` (``[frames, bins]`` for 1-D)."""
        o = self.opts
        squeeze = waveform.dim() == 1
        x = waveform.unsqueeze(0) if squeeze else waveform
        if x.dim() != 2:
            raise ValueError(f"expected [B, T] or [T] waveforms, got shape {tuple(waveform.shape)}")
        n = num_frames(x.shape[-1], o)
        if n == 0:
            raise ValueError(f"{x.shape[-1]} samples is shorter than one frame "
                             f"({o.frame_length} samples)")
        frames = x.unfold(-1, o.frame_length, o.frame_shift)  # view [B, F, L]
        if o.dither > 0:
            frames = frames + self._dither(n, frames.device, frames.dtype)
        if o.remove_dc_offset:
            frames = frames - frames.mean(dim=-1, keepdim=True)
        if o.preemphasis:
            # The first sample is pre-emphasised against itself (Kaldi repeats it).
            frames = torch.cat([frames[..., :1] * (1.0 - o.preemphasis),
                                frames[..., 1:] - o.preemphasis * frames[..., :-1]], dim=-1)
        spec = torch.fft.rfft(frames * self.window, n=o.fft_size, dim=-1)
        del frames
        power = spec.real.square() + spec.imag.square()
        del spec
        energies = power if o.use_power else power.sqrt()
        mel = torch.matmul(energies, self.banks_t)
        out = mel.clamp_min(LOG_FLOOR).log()
        return out.squeeze(0) if squeeze else out

    def with_deltas(self, waveform: torch.Tensor, win_length: int = 5) -> torch.Tensor:
        """Features, deltas and delta-deltas concatenated: ``[B, frames, 3 * num_mel_bins]``.

        The delta-delta is the delta of the delta (what torchaudio callers compute), not Kaldi's
        own second-order regression, which differs at the edges.
        """
        fb = self.forward(waveform)
        d1 = compute_deltas(fb, win_length, dim=-2)
        d2 = compute_deltas(d1, win_length, dim=-2)
        return torch.cat([fb, d1, d2], dim=-1)
