"""Benchmark scene sets, generated on the fly from a seed.

Time and memory of enhancement depend on scene durations, not on what the scenes contain, so a
set is a list of durations drawn from a seeded generator plus cheap deterministic audio (a tone
and some noise) written as 48 kHz mono PCM_16 WAVs, named like the subtitle pipeline's scenes
(``<media>_scene_<idx:04d>.wav``). The same name and seed give the same durations and the same
samples on every machine and for every strategy.

    SET_SPECS[name] --durations(name, seed)--> SceneSet --write_scene_set(folder)--> WAV paths
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE_HZ = 48_000      # what the subtitle pipeline hands an enhancer
MEDIA_NAME = "bench"         # file stem prefix: bench_scene_0000.wav, ...
AMPLITUDE = 0.25             # peak of the tone part (full scale = 1.0)
NOISE_RMS = 0.03             # RMS of the noise part
CHUNK_SAMPLES = 4_800_000    # long scenes are synthesised in pieces of this many samples (100 s)
MANIFEST_NAME = "sceneset.json"  # written beside the WAVs so a folder can be reused safely


@dataclass(frozen=True)
class SetSpec:
    """The shape of one scene set; ``durations()`` turns it into concrete durations."""

    description: str         # one line for reports
    short_count: int         # scenes drawn log-normally and clipped to [short_min_s, short_max_s]
    short_min_s: float       # shortest short scene (s)
    short_max_s: float       # longest short scene (s)
    short_median_s: float    # median of the log-normal before clipping and scaling (s)
    short_sigma: float       # log-normal shape (natural-log standard deviation)
    long_count: int          # scenes drawn uniformly in [long_min_s, long_max_s]
    long_min_s: float        # (s)
    long_max_s: float        # (s)
    target_total_s: float | None  # short scenes are rescaled so the whole set sums to this (s)
    uniform_short: bool = False    # tiny set: short scenes uniform instead of log-normal

    def __post_init__(self):
        if self.short_count < 0 or self.long_count < 0 or self.short_count + self.long_count == 0:
            raise ValueError(f"a scene set needs scenes: {self}")
        if not 0 < self.short_min_s <= self.short_max_s:
            raise ValueError(f"bad short scene bounds: {self}")
        if self.long_count and not 0 < self.long_min_s <= self.long_max_s:
            raise ValueError(f"bad long scene bounds: {self}")


# Film: WhisperJAV cuts a two-hour film into a few hundred scenes of 0.2-29 s with the odd scene
# of several minutes (docs/design.md); 700 scenes and 7,200 s is the shape the GPU criteria name.
SET_SPECS: dict[str, SetSpec] = {
    # Tiny: every pool strategy spawns workers (~3 s each on a 2-core CPU), and one of them
    # spawns one per scene, so the scene count is what keeps CI under two minutes.
    "tiny": SetSpec("CPU/CI smoke set: 8 scenes of 0.1-1.5 s plus one of 3 s",
                    short_count=8, short_min_s=0.1, short_max_s=1.5, short_median_s=0.6,
                    short_sigma=0.0, long_count=1, long_min_s=3.0, long_max_s=3.0,
                    target_total_s=None, uniform_short=True),
    "film": SetSpec("two-hour film: ~700 scenes, log-normal 0.2-29 s plus 4 of 60-220 s, ~7,200 s",
                    short_count=696, short_min_s=0.2, short_max_s=29.0, short_median_s=6.0,
                    short_sigma=0.9, long_count=4, long_min_s=60.0, long_max_s=220.0,
                    target_total_s=7_200.0),
    # The film shape scaled by 40/700 (the long-scene share kept with one long scene): small
    # enough to go through a real network on a 2-core CPU.
    "film-small": SetSpec("film shape scaled down: 40 scenes, log-normal 0.2-29 s plus 1 of "
                          "60-220 s, ~410 s",
                          short_count=39, short_min_s=0.2, short_max_s=29.0, short_median_s=6.0,
                          short_sigma=0.9, long_count=1, long_min_s=60.0, long_max_s=220.0,
                          target_total_s=7_200.0 * 40 / 700),
    "longtail": SetSpec("long-tail stress: 70 scenes log-normal 0.2-29 s plus 30 of 60-300 s",
                        short_count=70, short_min_s=0.2, short_max_s=29.0, short_median_s=6.0,
                        short_sigma=0.9, long_count=30, long_min_s=60.0, long_max_s=300.0,
                        target_total_s=None),
    # The CPU isolation check (pool against the runtime called directly): 12 scenes, ~192 s, the
    # size at which a 2-core machine gives a stable median of 3 in a few minutes per strategy.
    "isolation": SetSpec("CPU isolation check: 11 scenes log-normal 0.3-29 s plus 1 of 60 s, "
                         "192 s", short_count=11, short_min_s=0.3, short_max_s=29.0,
                         short_median_s=6.0, short_sigma=0.9, long_count=1, long_min_s=60.0,
                         long_max_s=60.0, target_total_s=192.0),
    # The smallest set that still has a short and a long scene: what the GPU acceptance's --smoke
    # pushes through real networks on a 2-core CPU in seconds.
    "micro": SetSpec("smoke set: 4 scenes of 0.2-0.6 s plus one of 1 s",
                     short_count=4, short_min_s=0.2, short_max_s=0.6, short_median_s=0.4,
                     short_sigma=0.0, long_count=1, long_min_s=1.0, long_max_s=1.0,
                     target_total_s=None, uniform_short=True),
}
SET_NAMES = tuple(SET_SPECS)


@dataclass(frozen=True)
class SceneSet:
    """Concrete durations of one set for one seed, in run order."""

    name: str
    seed: int
    durations_s: tuple[float, ...]   # per scene, rounded to whole samples at SAMPLE_RATE_HZ
    sample_rate: int = SAMPLE_RATE_HZ

    @property
    def total_s(self) -> float:
        return float(sum(self.durations_s))

    def file_names(self) -> list[str]:
        return [f"{MEDIA_NAME}_scene_{i:04d}.wav" for i in range(len(self.durations_s))]

    def fingerprint(self) -> str:
        """Identifies the set's exact content (durations, rate and synthesis constants)."""
        blob = json.dumps([self.name, self.seed, self.sample_rate, AMPLITUDE, NOISE_RMS,
                           [round(d * self.sample_rate) for d in self.durations_s]])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def durations(name: str, seed: int = 0) -> SceneSet:
    """Durations of set ``name`` for ``seed`` (pure: no files)."""
    if name not in SET_SPECS:
        raise ValueError(f"unknown scene set {name!r}; choose from {', '.join(SET_NAMES)}")
    spec = SET_SPECS[name]
    rng = np.random.default_rng([seed, _name_key(name)])
    if spec.uniform_short:
        short = rng.uniform(spec.short_min_s, spec.short_max_s, spec.short_count)
    else:
        short = rng.lognormal(math.log(spec.short_median_s), spec.short_sigma, spec.short_count)
    short = np.clip(short, spec.short_min_s, spec.short_max_s)
    long = rng.uniform(spec.long_min_s, spec.long_max_s, spec.long_count)
    if spec.target_total_s is not None and spec.short_count:
        short = _rescale_clipped(short, spec.target_total_s - float(long.sum()),
                                 spec.short_min_s, spec.short_max_s)
    # Long scenes sit at seeded positions among the short ones, as they do in a real film.
    order = list(short) + list(long)
    perm = rng.permutation(len(order))
    placed = [order[i] for i in perm]
    rounded = tuple(round(float(d) * SAMPLE_RATE_HZ) / SAMPLE_RATE_HZ for d in placed)
    return SceneSet(name, int(seed), rounded)


def subset(scene_set: SceneSet, every: int, keep_longer_than_s: float = 29.0,
           first: int | None = None) -> tuple[SceneSet, tuple[int, ...]]:
    """A smaller set with the same shape for strategies too slow for the whole set: every
    ``every``-th scene, plus every scene longer than ``keep_longer_than_s`` (the long ones are
    what breaks whole-scene decoding), optionally only among the ``first`` scenes. Returns the
    subset and the indices it took, so its files are the parent set's own."""
    if every < 1:
        raise ValueError("every must be at least 1")
    n = len(scene_set.durations_s) if first is None else min(first, len(scene_set.durations_s))
    picked = tuple(i for i in range(n)
                   if i % every == 0 or scene_set.durations_s[i] > keep_longer_than_s)
    name = scene_set.name + (f"[:{n}]" if first is not None else "") + \
        (f"/every-{every}" if every > 1 else "")
    return SceneSet(name, scene_set.seed, tuple(scene_set.durations_s[i] for i in picked),
                    scene_set.sample_rate), picked


def _rescale_clipped(x: np.ndarray, target: float, lo: float, hi: float) -> np.ndarray:
    """Scale ``x`` so it sums to ``target`` while staying inside [lo, hi] (a few fixed-point
    rounds: clipping after a scale moves the sum, so scale only what is not pinned)."""
    if target <= lo * len(x) or target >= hi * len(x):
        raise ValueError(f"cannot fit {len(x)} scenes in [{lo}, {hi}] s to {target:.1f} s")
    x = x.astype(np.float64)
    for _ in range(50):
        free = (x > lo) & (x < hi)
        pinned = float(x[~free].sum())
        if not free.any():
            break
        scale = (target - pinned) / float(x[free].sum())
        x = np.where(free, np.clip(x * scale, lo, hi), x)
        if abs(x.sum() - target) < 1e-6 * target:
            break
    return x


def _name_key(name: str) -> int:
    """A stable integer per set name, so sets with the same seed draw different numbers."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def synthesize(index: int, n_samples: int, seed: int,
               sample_rate: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Deterministic float32 audio for scene ``index``: a scene-specific tone plus noise."""
    rng = np.random.default_rng([seed, index])
    freq = float(rng.uniform(120.0, 2_000.0))
    out = np.empty(n_samples, dtype=np.float32)
    for start in range(0, n_samples, CHUNK_SAMPLES):
        n = min(CHUNK_SAMPLES, n_samples - start)
        t = (np.arange(start, start + n, dtype=np.float64) / sample_rate)
        chunk = AMPLITUDE * np.sin(2 * np.pi * freq * t) + rng.normal(0.0, NOISE_RMS, n)
        out[start:start + n] = chunk
    return out


def write_scene_set(scene_set: SceneSet, folder: str | Path) -> list[Path]:
    """Write the set's WAVs into ``folder`` (reusing them when the folder already holds exactly
    this set) and return their paths in run order."""
    from whisperjav_enhance.audio import write_audio_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / n for n in scene_set.file_names()]
    manifest = folder / MANIFEST_NAME
    if _matches(manifest, scene_set) and all(p.exists() for p in paths):
        return paths
    manifest.unlink(missing_ok=True)
    for i, (path, d) in enumerate(zip(paths, scene_set.durations_s)):
        n = round(d * scene_set.sample_rate)
        write_audio_atomic(path, synthesize(i, n, scene_set.seed, scene_set.sample_rate),
                           scene_set.sample_rate, subtype="PCM_16", clip="clip")
    manifest.write_text(json.dumps({"name": scene_set.name, "seed": scene_set.seed,
                                    "fingerprint": scene_set.fingerprint(),
                                    "scenes": len(paths), "total_s": scene_set.total_s}, indent=1))
    return paths


def _matches(manifest: Path, scene_set: SceneSet) -> bool:
    try:
        return json.loads(manifest.read_text()).get("fingerprint") == scene_set.fingerprint()
    except (OSError, ValueError):
        return False
