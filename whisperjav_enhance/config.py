"""Run options and pool policy: frozen dataclasses, validated on construction, one comment per
field. The CLI builds these from its arguments; pipelines build them directly."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

from . import audio as _audio
from .audio import CLIP_POLICIES, SUBTYPES
from .backends.base import check_windowing
from .errors import ConfigError


def _merged_settings(options, **aliases) -> dict:
    """``options`` as a plain dict with the older spellings folded in; the same setting given
    twice with different values is a ConfigError."""
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise ConfigError(f"backend_options must map option names to values, not {options!r}")
    merged = dict(options)
    for key, value in aliases.items():
        if value is None:
            continue
        if key in merged and merged[key] != value and str(merged[key]) != str(value):
            raise ConfigError(f"{key} is given twice ({value!r} and backend option "
                              f"{key}={merged[key]!r}); give it once")
        merged[key] = value
    return merged


def _positive(name: str, value, allow_none: bool = False, integer: bool = False):
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    if integer:
        ok = ok and float(value).is_integer()
    if not ok:
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"{name} must be {kind}, not {value!r}")


@dataclass(frozen=True)
class EnhanceOptions:
    """What to run and how to write it."""

    backend: str = "auto"                 # backend name or pipeline spelling (see backends.ALIASES)
    weights: str | None = None            # checkpoint file or model folder; None = search caches
    device: str = "auto"                  # "auto" (every visible GPU, else CPU), "cpu", "cuda", "cuda:N"
    output_sample_rate: int | None = None  # Hz; None keeps each input's own rate
    output_subtype: str = "PCM_16"        # WAV sample encoding: PCM_16, PCM_24 or FLOAT
    clip: str = "clip"                    # how samples past full scale are handled (audio.CLIP_POLICIES)
    overwrite: bool = False               # redo scenes whose output exists (default: skip = resume)
    batch_seconds: float = 120.0          # audio seconds packed into one work unit
    backend_options: Mapping = field(default_factory=dict)  # the backend's own settings
                                          # (--backend-option KEY=VALUE; names, types and ranges:
                                          # the backend's OPTIONS, listed by `models`); values may
                                          # be text from a command line, parsed by the backend
    window_seconds: float | None = None   # older spelling of backend_options["window_seconds"]
    overlap_seconds: float | None = None  # older spelling of backend_options["overlap_seconds"]
    executor: str = "pool"                # "pool" (spawned workers), "inprocess" (no isolation), "ray"
    ray_address: str | None = None        # with executor="ray": join this cluster instead of a local one
    max_scene_seconds: float | None = None  # scenes longer than this (s) fail as too_long;
                                          # None = audio.MAX_DURATION_S (4 h), also the upper bound
    download: bool = True                 # fetch missing MossFormer2/ZipEnhancer weights once into the
                                          # hub cache before workers start (False: --no-download)

    def __post_init__(self):
        object.__setattr__(self, "backend_options", _merged_settings(
            self.backend_options, window_seconds=self.window_seconds,
            overlap_seconds=self.overlap_seconds))
        _positive("output_sample_rate", self.output_sample_rate, allow_none=True, integer=True)
        if self.output_sample_rate is not None:
            _audio.check_output_sample_rate(self.output_sample_rate)
        _positive("batch_seconds", self.batch_seconds)
        if self.window_seconds is not None or self.overlap_seconds is not None:
            # Each alone is checked against the backend's other half when the backend is built.
            check_windowing("options", 1e9 if self.window_seconds is None else self.window_seconds,
                            0.0 if self.overlap_seconds is None else self.overlap_seconds)
        if self.output_subtype not in SUBTYPES:
            raise ConfigError(f"output_subtype must be one of {', '.join(SUBTYPES)}")
        if self.clip not in CLIP_POLICIES:
            raise ConfigError(f"clip must be one of {', '.join(CLIP_POLICIES)}")
        if self.clip == "none" and self.output_subtype != "FLOAT":
            raise ConfigError("clip='none' needs output_subtype='FLOAT' (integer WAVs cannot hold "
                              "samples past full scale)")
        _positive("max_scene_seconds", self.max_scene_seconds, allow_none=True)
        if self.max_scene_seconds is not None and self.max_scene_seconds > _audio.MAX_DURATION_S:
            raise ConfigError(f"max_scene_seconds cannot exceed {_audio.MAX_DURATION_S:.0f} s "
                              "(audio.MAX_DURATION_S); cut longer recordings into scenes first")
        if self.executor not in ("pool", "inprocess", "ray"):
            raise ConfigError(f"executor must be pool, inprocess or ray, not {self.executor!r}")

    def backend_settings(self) -> dict:
        """Keyword options for the backend's resolve() (the older spellings folded in)."""
        return dict(self.backend_options)


@dataclass(frozen=True)
class PoolPolicy:
    """How workers are started, recycled and watched.

    Defaults: without autograd and with fixed windows the allocator showed no fragmentation over
    a 60-scene run (docs/measurements.md: inactive split ~13 MiB, reserved - allocated < 2 GiB with
    whole-scene decoding), so drift thresholds are set where only a real leak or fragmentation
    reaches them, and count-based recycling is a rare safety net (a start costs ~6 s on a GPU).
    """

    workers_per_device: int | None = None  # None: 1 per GPU; CPU: transport.cpu_lane_count
    max_scenes_per_worker: int = 250       # retire a worker after this many scenes
    max_drift_mb: float = 1024.0           # retire when reserved - allocated (MiB) exceeds this
    max_inactive_split_mb: float = 512.0   # retire when inactive split blocks (MiB) exceed this
    max_alloc_retries: int = 4             # retire when the allocator had to retry this often
    vram_budget_gb: float | None = None    # per-worker allocator cap (GiB); None = what is free
    scene_timeout_s: float = 600.0         # watchdog: longest a busy worker may go without
                                           # finishing a scene or a forward (a hang, not a slow
                                           # long scene: forwards keep it alive; whole-scene
                                           # backends get more per scene second, see
                                           # executor/driver.py WHOLE_SCENE_S_PER_AUDIO_S)
    startup_timeout_s: float = 300.0       # longest a worker may take to load its model
    warm_standby: bool = True              # start a replacement while the retiring worker works
    max_standby_workers: int = 1           # warm standbys per worker slot at most; more only help
                                           # when a worker's life is shorter than a start (each
                                           # holds ~1 GiB of the card while it waits)
    max_crashes_per_scene: int = 2         # a scene present at this many crashes is quarantined
    max_worker_starts: int | None = None   # give up the run after this many starts (None: automatic)

    def __post_init__(self):
        _positive("workers_per_device", self.workers_per_device, allow_none=True, integer=True)
        _positive("max_scenes_per_worker", self.max_scenes_per_worker, integer=True)
        _positive("max_drift_mb", self.max_drift_mb)
        _positive("max_inactive_split_mb", self.max_inactive_split_mb)
        _positive("max_alloc_retries", self.max_alloc_retries, integer=True)
        _positive("vram_budget_gb", self.vram_budget_gb, allow_none=True)
        _positive("scene_timeout_s", self.scene_timeout_s)
        _positive("startup_timeout_s", self.startup_timeout_s)
        _positive("max_crashes_per_scene", self.max_crashes_per_scene, integer=True)
        _positive("max_standby_workers", self.max_standby_workers, integer=True)
        _positive("max_worker_starts", self.max_worker_starts, allow_none=True, integer=True)
