"""What a run would do, without doing it (``enhance --dry-run``): discovery, probing and
planning only. No worker is started, nothing is downloaded, OUT_DIR is neither created nor
locked, and no file is written but the plan itself, where ``--summary-json`` names a file for it.
Whatever would stop a real run before its first scene (bad arguments, missing weights that cannot
be fetched, an unusable device, an unwritable or busy OUT_DIR) raises the same
error here, so a script gets the exit code the real run would give.

    inputs --discover_scenes--> scenes --backend (no download) + devices + OUT_DIR checks
      --> runner.Run.decide_in_parent (read-only) --> skip / redo / reject / run
      --> lanes and units as the executor would make them --> RunPlan (and a rough estimate)
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import locking
from .config import EnhanceOptions, PoolPolicy
from .errors import OutputError
from .manifest import MANIFEST_NAME
from .outdir import LOCK_NAME, OutDirBusy, check_summary_path
from .preflight import check_disk_space, check_out_dir_is_folder
from .records import SceneResult
from .runner import Run
from .scenes import discover_scenes
from .status import Status

# Seconds a worker takes to start before its first scene (docs/measurements.md: ~3 s on this
# CPU with torch, ~6 s on a GPU with a model): part of the estimate.
STARTUP_S = {"cpu": 3.0, "cuda": 6.0}


@dataclass(frozen=True)
class RunPlan:
    """What ``enhance`` would do with the same arguments; ``as_dict()`` is what --summary-json
    gets in a dry run."""

    backend: str                      # canonical backend that would run
    backend_note: str                 # why (what auto picked and why)
    weights: dict                     # where they are (WeightsInfo.as_dict()), or the download
    download: str | None              # what would be downloaded first (None: nothing)
    device: str                       # device slots, e.g. "cpu" or "cuda:0,cuda:1"
    executor: str                     # "pool", "inprocess" or "ray"
    workers: int | None               # workers that would start (None: Ray decides on its cluster)
    out_dir: str                      # OUT_DIR
    scenes: tuple[SceneResult, ...]   # one per scene: "skipped", "failed" (rejected in the
                                      # parent, with the reason) or "pending" (would run)
    scenes_redone: int                # existing outputs that would be made again (other settings)
    scenes_kept_unrecorded: int       # existing outputs kept: made before settings were recorded
    units: int                        # work units the scenes to run would be packed into
    audio_seconds: float              # audio the workers would enhance
    estimate_seconds: float | None    # rough wall time (None: no speed known for this backend)
    estimate_basis: str               # what the estimate assumes
    notes: tuple[str, ...] = field(default_factory=tuple)  # what the run would announce first
    summary_path: str | None = None   # where --summary-json asked for the plan, as checked
                                      # (the caller writes it there; None: not asked)

    def count(self, status: str) -> int:
        return sum(1 for s in self.scenes if s.status == status)

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["dry_run"] = True
        d["scenes"] = [{"index": s.index, "input": s.input_path, "output": s.output_path,
                        "action": _ACTIONS[s.status], "reason": s.reason, "message": s.message,
                        "duration_s": round(s.duration_s, 3)} for s in self.scenes]
        d.update(scenes_total=len(self.scenes), scenes_to_run=self.count(Status.PENDING),
                 scenes_skipped=self.count(Status.SKIPPED), scenes_rejected=self.count(Status.FAILED))
        return d


_ACTIONS = {Status.PENDING: "run", Status.SKIPPED: "skip", Status.FAILED: "reject"}


def plan_scenes(inputs, out_dir, options: EnhanceOptions | None = None,
                policy: PoolPolicy | None = None, summary_json=None) -> RunPlan:
    """The plan of ``pipeline.enhance_scenes`` with the same arguments; raises what it would
    raise before its first scene."""
    from .backends import backend_class, parse_backend_spec
    from .devices import resolve_devices

    options, policy = options or EnhanceOptions(), policy or PoolPolicy()
    scenes = discover_scenes(inputs, out_dir)
    out_root = Path(os.path.abspath(out_dir))
    backend, note, download = _backend_without_download(options)
    slots = None if options.executor == "ray" else resolve_devices(options.device)
    _check_out_dir(out_root)
    manifest = out_root / MANIFEST_NAME
    if summary_json is not None:
        summary_json = check_summary_path(summary_json, inputs=[s.input_path for s in scenes],
                                          outputs=[s.output_path for s in scenes],
                                          manifest=manifest, out_dir=out_root)
    run = Run(scenes, out_root, options, policy, None, backend, note, slots, lock=None)
    run.decide_in_parent()
    check_disk_space(out_root, run.estimated_output_bytes())
    decided = {r.index: r for r in run.decided}
    pending = {s.index: run.record(s, Status.PENDING, info.duration_s) for s, info in run.to_run}
    rows = tuple(decided.get(s.index) or pending[s.index] for s in scenes)
    tasks, units, specs = run.plan() if run.to_run else ([], [], [])
    workers = _workers(options, policy, specs, len(units))
    audio_s = sum(info.duration_s for _, info in run.to_run)
    cls = backend_class(parse_backend_spec(backend.name))
    estimate, basis = _estimate(cls, slots, workers, audio_s)
    return RunPlan(
        backend=backend.name, backend_note=note, weights=backend.weights.as_dict(),
        download=download, device=run.device_label(None), executor=options.executor,
        workers=workers, out_dir=str(out_root), scenes=rows, scenes_redone=run.redone,
        scenes_kept_unrecorded=run.kept_unrecorded, units=len(units), audio_seconds=audio_s,
        estimate_seconds=estimate, estimate_basis=basis,
        notes=tuple(n.message for n in run.notes),
        summary_path=None if summary_json is None else str(summary_json))


def _backend_without_download(options: EnhanceOptions):
    """(backend, note, what would be downloaded first): weights a real run would fetch are
    described, not fetched; when it could not fetch them, the same WeightsError."""
    from .backends import WeightsInfo, backend_class, parse_backend_spec, select_backend
    from .hub import download_blocked
    from .weights import SOURCES, WeightsNotFound

    try:
        backend, note = select_backend(options.backend, options.weights,
                                       **options.backend_settings())
        return backend, note, None
    except WeightsNotFound:
        name = parse_backend_spec(options.backend)
        source = SOURCES.get(name)
        if source is None or options.weights or download_blocked(source, options.download):
            raise
    download = f"{source.repo_id} from {source.hub} (no weights were found here)"
    weights = WeightsInfo(None, "download", False, f"would be downloaded: {download}")
    cls = backend_class(name)
    return _Unresolved(cls.name, cls.windowed, weights), f"{name} was requested", download


@dataclass(frozen=True)
class _Unresolved:
    """What a plan needs of a backend whose weights are not here yet."""

    name: str                  # canonical backend name
    windowed: bool             # its class's (units are planned by it)
    weights: object            # WeightsInfo describing the download


def _check_out_dir(out_root: Path) -> None:
    """What a real run would refuse about OUT_DIR, checked without creating or locking it."""
    check_out_dir_is_folder(out_root)
    existing = next(p for p in (out_root, *out_root.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to the output folder {out_root} ({existing} is not "
                          "writable); choose a writable -o/--out-dir")
    holder = locking.live_holder(out_root / LOCK_NAME)
    if holder is not None:
        raise OutDirBusy(out_root, holder)


def _workers(options: EnhanceOptions, policy: PoolPolicy, specs, units: int) -> int | None:
    """Workers the run would start: a lane with no unit to take starts none."""
    from .executor.transport import local_cores, plan_lanes

    if options.executor == "ray":
        return None
    if options.executor == "inprocess":
        return min(1, units)
    return min(len(plan_lanes(specs, policy, local_cores())), units) if specs else 0


def _estimate(cls, slots, workers: int | None, audio_s: float) -> tuple[float | None, str]:
    kind = "cuda" if slots and any(s.is_cuda for s in slots) and cls.needs_cuda_for_speed else "cpu"
    speed = cls.TYPICAL_SPEED.get(kind)
    if not audio_s:
        return 0.0, "nothing to run"
    if speed is None or not workers:
        return None, f"no typical speed is known for {cls.name} on {kind}"
    seconds = STARTUP_S[kind] + audio_s / (speed * workers)
    return seconds, (f"rough: {speed:g} audio s/s per worker on {kind} (docs/measurements.md) x "
                     f"{workers} worker(s), plus {STARTUP_S[kind]:g} s to start")


__all__ = ["RunPlan", "plan_scenes"]
