"""The three objective scores of the quality comparison, each either a number or ``None`` (n/a)
when it cannot be computed for a scene, and never a library's fallback value dressed as a score.

- SI-SDR (Le Roux et al., 2019), zero-mean: n/a for a silent reference (no signal to project on).
- Wide-band PESQ (ITU-T P.862.2) at 16 kHz via ``pesq``: n/a when it finds no utterance or
  refuses the input (too short).
- STOI (Taal et al., 2011) via ``pystoi``: n/a when pystoi falls back to its constant 1e-5 (fewer
  than 30 non-silent frames of 384 ms analysis, e.g. a 0.3 s scene).

Third-party warnings raised while scoring are recorded in :class:`Notes` (and from there in the
report), never printed: the terminal shows the comparison's own lines only.
"""

from __future__ import annotations

import warnings
from collections import Counter

import numpy as np

PESQ_RATE_HZ = 16_000           # wide-band PESQ (ITU-T P.862.2) is defined at 16 kHz
SI_SDR_EPS = 1e-12              # keeps SI-SDR finite for perfect estimates
# Below this reference energy per sample the reference is silence: SI-SDR is n/a.
SILENT_ENERGY_PER_SAMPLE = 1e-10
METRICS = ("si_sdr_db", "pesq_wb", "stoi")
METRIC_MEANINGS = {
    "si_sdr_db": "scale-invariant SDR in dB, zero-mean (higher is better); n/a for a silent "
                 "reference",
    "pesq_wb": "wide-band PESQ, MOS-LQO 1.0-4.64, both signals resampled to 16 kHz; n/a when "
               "PESQ finds no utterance or refuses the input",
    "stoi": "short-time objective intelligibility, 0-1 (pystoi, classic STOI); n/a when the "
            "scene has fewer than 30 non-silent analysis frames (pystoi's 1e-5 fallback)",
}


class Notes:
    """Third-party warnings seen while scoring, counted by (source, message)."""

    def __init__(self):
        self.counts: Counter = Counter()

    def record(self, caught) -> None:
        for w in caught:
            path = str(getattr(w, "filename", "") or "?").replace("\\", "/")
            # The package that warned (pystoi, pesq, ...), else the file's name.
            source = (path.split("/site-packages/", 1)[1].split("/", 1)[0]
                      if "/site-packages/" in path else path.rsplit("/", 1)[-1])
            self.counts[(source, f"{w.category.__name__}: {w.message}")] += 1

    def as_list(self) -> list[dict]:
        return [{"source": src, "message": msg, "count": n}
                for (src, msg), n in sorted(self.counts.items())]

    def __len__(self) -> int:
        return sum(self.counts.values())


def _capture(fn, notes: Notes | None):
    """Call ``fn()`` with every warning captured; returns (result, captured warnings)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    if notes is not None:
        notes.record(caught)
    return result, caught


def si_sdr(reference: np.ndarray, estimate: np.ndarray) -> float | None:
    """Scale-invariant signal-to-distortion ratio in dB, zero-mean; None for a silent reference.

    The estimate is projected on the reference; the ratio of the projection's energy to the
    residual's is the score, so a louder or quieter but otherwise perfect estimate scores high.
    """
    ref, est = pair(reference, estimate)
    ref = ref - ref.mean()
    est = est - est.mean()
    energy = float(np.dot(ref, ref))
    if energy < SILENT_ENERGY_PER_SAMPLE * ref.size:
        return None
    alpha = np.dot(est, ref) / energy
    target = alpha * ref
    residual = est - target
    return float(10 * np.log10((np.dot(target, target) + SI_SDR_EPS)
                               / (np.dot(residual, residual) + SI_SDR_EPS)))


def pesq_wb(reference: np.ndarray, estimate: np.ndarray, sample_rate: int,
            notes: Notes | None = None) -> float | None:
    """Wide-band PESQ (MOS-LQO, about 1.0-4.64) at 16 kHz; None when it cannot be computed."""
    from pesq import NoUtterancesError, PesqError, pesq

    from whisperjav_enhance.audio import resample

    ref, est = pair(reference, estimate)
    ref16 = resample(ref.astype(np.float32), sample_rate, PESQ_RATE_HZ).astype(np.float64)
    est16 = resample(est.astype(np.float32), sample_rate, PESQ_RATE_HZ).astype(np.float64)

    def score():
        try:
            return float(pesq(PESQ_RATE_HZ, ref16, est16, "wb"))
        except (NoUtterancesError, PesqError, ValueError):
            return None

    return _capture(score, notes)[0]


def stoi(reference: np.ndarray, estimate: np.ndarray, sample_rate: int,
         notes: Notes | None = None) -> float | None:
    """Short-time objective intelligibility (0-1); None where pystoi would return its fallback."""
    from pystoi import stoi as _stoi

    ref, est = pair(reference, estimate)
    value, caught = _capture(lambda: float(_stoi(ref, est, sample_rate, extended=False)), notes)
    # pystoi's only warning is its "not enough frames, returning 1e-5" fallback: not a score.
    if any("not enough stft frames" in str(w.message).lower() for w in caught):
        return None
    return value


def measure(reference: np.ndarray, estimate: np.ndarray, sample_rate: int,
            notes: Notes | None = None) -> dict:
    """All three scores of ``estimate`` against ``reference`` (same rate and length)."""
    return {"si_sdr_db": si_sdr(reference, estimate),
            "pesq_wb": pesq_wb(reference, estimate, sample_rate, notes),
            "stoi": stoi(reference, estimate, sample_rate, notes)}


def pair(reference, estimate) -> tuple[np.ndarray, np.ndarray]:
    ref = np.asarray(reference, dtype=np.float64)
    est = np.asarray(estimate, dtype=np.float64)
    if ref.ndim != 1 or est.shape != ref.shape:
        raise ValueError(f"reference and estimate must be 1-D and equally long, not "
                         f"{ref.shape} and {est.shape}")
    return ref, est
