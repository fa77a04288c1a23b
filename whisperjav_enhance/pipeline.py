"""The Python API of a run: scenes in, enhanced files, a manifest and a summary out.

    inputs --scenes.discover_scenes--> Scene list (natural order, output paths checked)
      --> checks in the parent (no CUDA): backend and weights resolved, devices resolved (with
          Ray: by the cluster, in the transport); then OUT_DIR's lock taken (one run at a time),
          the output folder writable and big enough, the summary path safe
      --> runner.Run: per scene: output complete and made with the same settings (or before
          settings were recorded)? skipped. Header unusable or too long? failed with its reason.
          Otherwise a task for the executor.
      --> planning.pack_units --> executor.execute(..., transport for options.executor)
      --> one records.SceneResult per scene: a manifest line, then the caller's ``on_event``
      --> summary.RunSummary (frozen) and summary.json

Resumable by construction: outputs are written atomically by the workers, so an output under its
final name is whole, and a rerun without ``overwrite`` skips it when its settings record matches
(outdir.py, fingerprints.py). Temporary files a killed run left behind are removed before the run
starts, under the lock, so a live run's are never touched.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Sequence

from .config import EnhanceOptions, PoolPolicy
from .errors import ConfigError, RunInterrupted
from .executor.interrupts import Terminated
from .manifest import MANIFEST_NAME, SUMMARY_NAME, Manifest
from .outdir import check_summary_path, hold_out_dir
from .preflight import check_disk_space, check_output_writable, output_is_complete
from .records import SceneResult
from .runner import Run
from .scenes import Scene, discover_scenes
from .summary import RunSummary

EventCallback = Callable[[object], None]


def enhance_scenes(inputs, out_dir, options: EnhanceOptions | None = None,
                   policy: PoolPolicy | None = None, on_event: EventCallback | None = None,
                   summary_json: str | os.PathLike | None = None) -> RunSummary:
    """Enhance every scene under ``inputs`` (files and folders) into ``out_dir``.

    Returns a :class:`RunSummary`; per-scene failures are in it, never raised. Raises
    ConfigError, BackendUnavailable, WeightsError, DeviceError or OutputError when nothing can
    run, and RunInterrupted (with ``.summary`` set) after Ctrl-C/SIGTERM stopped the workers.
    ``on_event`` receives the events of :mod:`whisperjav_enhance.events` as they happen.
    """
    started = time.monotonic()  # the run's clock includes discovery, as the CLI's progress does
    options = options or EnhanceOptions()
    scenes = discover_scenes(inputs, out_dir)
    out_root = Path(os.path.abspath(out_dir))
    return run_scenes(scenes, out_root, options, policy or PoolPolicy(), on_event,
                      manifest_path=out_root / MANIFEST_NAME,
                      summary_json=Path(summary_json) if summary_json else out_root / SUMMARY_NAME,
                      started=started)


def run_scenes(scenes: Sequence[Scene], out_dir: str | os.PathLike, options: EnhanceOptions,
               policy: PoolPolicy, on_event: EventCallback | None = None, *,
               manifest_path: str | os.PathLike | None = None,
               summary_json: str | os.PathLike | None = None,
               state_dir: str | os.PathLike | None = None,
               started: float | None = None) -> RunSummary:
    """Run an already-built scene list (the drop-in builds its own output names).

    ``manifest_path``/``summary_json`` None: no manifest / no summary file. ``state_dir``: where
    the run's lock and settings records live (default ``out_dir``; the drop-in keeps WhisperJAV's
    ``enhanced_scenes`` folder to the outputs alone). ``started``: ``time.monotonic()`` when
    the run began (default: now), the start of its wall clock.
    """
    started = time.monotonic() if started is None else started
    out_root = Path(os.path.abspath(out_dir))
    if not scenes:
        raise ConfigError("no scenes to enhance")
    summary = None
    try:
        backend, note, slots = _choose(options, on_event)
        check_output_writable(out_root)
        with hold_out_dir(state_dir or out_root) as lock:
            run, summary_json = _prepare(scenes, out_root, options, policy, on_event, backend,
                                         note, slots, lock, manifest_path, summary_json)
            try:
                run.manifest = Manifest(manifest_path, run.run_id) if manifest_path else None
                summary = run.execute(started, summary_json)
            finally:
                run.close()
        return summary
    except (KeyboardInterrupt, Terminated) as exc:  # outside the run's own handling
        what = getattr(exc, "signal_name", "Ctrl-C")
        if summary is None:
            raise RunInterrupted(f"interrupted by {what} before any scene ran") from None
        raise RunInterrupted(f"interrupted by {what} after the run had ended (its records are "
                             "written)", summary=summary) from None


def _choose(options: EnhanceOptions, on_event):
    """Backend (weights found, fetched first if missing and allowed) and devices: nothing is
    created in OUT_DIR, so a run refused for missing weights or a missing GPU leaves no trace."""
    from .backends import select_backend
    from .devices import resolve_devices
    from .hub import ensure_weights

    # A missing checkpoint of the chosen backend is fetched once, before anything else is decided.
    ensure_weights(options.backend, options.weights, on_event, allow_download=options.download)
    backend, note = select_backend(options.backend, options.weights, **options.backend_settings())
    if backend.weights.random_test_weights:
        note += ("; WARNING: random test weights, the output is not enhanced speech")
    # With Ray the cluster's resources decide the devices (the Ray transport resolves
    # options.device there): this machine may have no GPU at all.
    slots = None if options.executor == "ray" else resolve_devices(options.device)
    return backend, note, slots


def _prepare(scenes, out_root: Path, options: EnhanceOptions, policy: PoolPolicy, on_event,
             backend, note, slots, lock, manifest_path, summary_json) -> tuple[Run, Path | None]:
    """Everything decided in the parent (holding OUT_DIR) before a worker starts; raises when
    nothing can run. Returns the run and the summary's path as checked (the one to write)."""
    if summary_json is not None:
        summary_json = check_summary_path(summary_json, inputs=[s.input_path for s in scenes],
                                          outputs=[s.output_path for s in scenes],
                                          manifest=manifest_path, out_dir=out_root)
    run = Run(scenes, out_root, options, policy, on_event, backend, note, slots, lock)
    run.decide_in_parent(extra_outputs=[p for p in (manifest_path, summary_json) if p])
    check_disk_space(out_root, run.estimated_output_bytes())
    return run, summary_json


__all__ = ["enhance_scenes", "run_scenes", "RunSummary", "SceneResult", "check_disk_space",
           "check_output_writable", "output_is_complete"]
