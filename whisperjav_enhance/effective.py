"""The settings a run really used, for summary.json: every option and policy field with its
effective value, never ``null`` for "the default" (what the default came to is written instead)."""

from __future__ import annotations

import dataclasses

from . import audio
from .config import EnhanceOptions, PoolPolicy


def effective_options(options: EnhanceOptions, backend) -> dict:
    """``options`` as run: the backend and weights resolved, every backend setting with its value
    (given or the backend's default), the defaults that ``None`` stands for spelled out."""
    from .backends import backend_class

    d = dataclasses.asdict(options)
    d.pop("window_seconds"), d.pop("overlap_seconds")  # older spellings: in backend_options
    d["backend_requested"], d["backend"] = options.backend, backend.name
    d["weights"] = backend.weights.path or "none needed"
    d["output_sample_rate"] = options.output_sample_rate or "input (each scene keeps its rate)"
    d["max_scene_seconds"] = options.max_scene_seconds or audio.MAX_DURATION_S
    d["backend_options"] = backend_class(backend.name).settings(options.backend_settings())
    if options.executor == "ray":
        d["ray_address"] = options.ray_address or "a local instance, started for the run"
    else:
        d["ray_address"] = f"not used (executor {options.executor})"
    return d


def effective_policy(policy: PoolPolicy, report, slots) -> dict:
    """``policy`` as run: automatic choices replaced by what they came to."""
    d = dataclasses.asdict(policy)
    if policy.workers_per_device is None:
        devices = max(1, len(report.devices or slots or ())) if report is not None else 1
        d["workers_per_device"] = (report.lanes // devices if report is not None and report.lanes
                                   else "automatic (no worker was needed)")
    if policy.vram_budget_gb is None:
        d["vram_budget_gb"] = "what is free on the device at each unit"
    if policy.max_worker_starts is None:
        d["max_worker_starts"] = "automatic (never reached by a sound run)"
    return d


__all__ = ["effective_options", "effective_policy"]
