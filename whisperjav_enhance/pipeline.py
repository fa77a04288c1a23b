"""The Python API of a run: scenes in, enhanced files, a manifest and a summary out.

    inputs --scenes.discover_scenes--> Scene list (natural order, output paths checked)
      --> checks in the parent (no CUDA): output folder writable and big enough, backend and
          weights resolved, devices resolved (with Ray: by the cluster, in the executor)
      --> per scene: output already complete? skipped. Header unusable or too long? failed with
          its reason. Otherwise a pool.SceneTask.
      --> planning.pack_units --> pool.run_pool / run_inprocess / ray executor
      --> SceneFinished events: a manifest line each, then the caller's ``on_event``
      --> RunSummary (frozen) and summary.json

Resumable by construction: outputs are written atomically by the workers, so an output under its
final name is whole, and a rerun without ``overwrite`` skips it. Temporary files a killed run
left behind are removed before the run starts.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from . import audio
from .config import EnhanceOptions, PoolPolicy
from .errors import AudioError, ConfigError, OutputError, RunInterrupted
from .events import Log, RunStarted, SceneFinished
from .manifest import MANIFEST_NAME, SUMMARY_NAME, Manifest, new_run_id, write_json_atomic
from .pool.cleanup import Terminated, remove_partials
from .scenes import Scene, discover_scenes

# Free space kept in reserve beyond the estimated size of the outputs (bytes): the manifest, the
# summary and temporary files need a little room too.
DISK_MARGIN_BYTES = 16 * 1024 * 1024
_BYTES_PER_SAMPLE = {"PCM_16": 2, "PCM_24": 3, "FLOAT": 4}

EventCallback = Callable[[object], None]


@dataclass(frozen=True)
class SceneResult:
    """Where one scene ended up."""

    index: int                 # position in the run's naturally sorted scene list
    input_path: str            # the scene file
    output_path: str | None    # its output (written now or by an earlier run); None unless done
    status: str                # "enhanced", "skipped" (output already complete), "failed",
                               # or "pending" (only in the summary of an interrupted run)
    reason: str | None         # short code when failed (errors.SceneError.reason)
    message: str | None        # one line for people when failed
    duration_s: float          # audio seconds (0 when the probe rejected the file: not run)
    worker: int | None         # worker that produced it; None when decided in the parent
    seconds: float = 0.0       # wall seconds a worker spent on it (0 when decided in the parent)


@dataclass(frozen=True)
class RunSummary:
    """What a run did; ``as_dict()`` is what summary.json holds."""

    scenes: tuple[SceneResult, ...]  # one per scene, in run order
    backend: str                     # canonical backend name that ran
    backend_note: str                # why this backend (what `auto` picked and why)
    weights: dict                    # backends.WeightsInfo.as_dict(): path, origin, random_test_weights
    device: str                      # device slots used, e.g. "cpu" or "cuda:0,cuda:1"
    executor: str                    # "pool", "inprocess" or "ray"
    out_dir: str                     # OUT_DIR
    manifest_path: str | None        # OUT_DIR/manifest.jsonl (None when no manifest was kept)
    summary_path: str | None         # where summary.json was written (None: not written)
    run_id: str                      # ties manifest lines to this run
    workers_started: int             # worker processes started (0 when nothing needed running)
    recycles: dict                   # reason -> workers retired for it
    worker_crashes: int              # workers that died without reporting
    audio_seconds: float             # audio seconds enhanced by this run
    wall_seconds: float              # from the call to the end of the run
    peak_vram_mib: float | None      # highest reserved device memory of any worker; None on CPU
    startup_seconds: tuple[float, ...] = ()  # per started worker: spawn to model loaded
    batch_sizes: dict = field(default_factory=dict)  # padded window samples -> batch size used
    interrupted: bool = False        # True in the summary written when Ctrl-C/SIGTERM stopped it
    startup_wait_seconds: float = 0.0  # worker-slot seconds with work queued and no worker ready
    first_ready_seconds: float = 0.0   # executor start -> first worker ready (the unavoidable wait)

    def _count(self, status: str) -> int:
        return sum(1 for s in self.scenes if s.status == status)

    @property
    def scenes_total(self) -> int:
        return len(self.scenes)

    @property
    def scenes_enhanced(self) -> int:
        return self._count("enhanced")

    @property
    def scenes_skipped(self) -> int:
        return self._count("skipped")

    @property
    def scenes_failed(self) -> int:
        return self._count("failed")

    @property
    def failures(self) -> tuple[SceneResult, ...]:
        return tuple(s for s in self.scenes if s.status == "failed")

    @property
    def complete(self) -> bool:
        """Every scene has its output (enhanced now or before)."""
        return all(s.status in ("enhanced", "skipped") for s in self.scenes)

    def as_dict(self) -> dict:
        from . import __version__

        return {
            "version": __version__,
            "run_id": self.run_id,
            "backend": self.backend,
            "backend_note": self.backend_note,
            "weights": dict(self.weights),
            "device": self.device,
            "executor": self.executor,
            "out_dir": self.out_dir,
            "manifest": self.manifest_path,
            "interrupted": self.interrupted,
            "scenes_total": self.scenes_total,
            "scenes_enhanced": self.scenes_enhanced,
            "scenes_skipped": self.scenes_skipped,
            "scenes_failed": self.scenes_failed,
            "scenes_pending": self._count("pending"),
            "failures": [{"path": s.input_path, "reason": s.reason, "message": s.message}
                         for s in self.failures],
            "workers_started": self.workers_started,
            "recycles": dict(self.recycles),
            "worker_crashes": self.worker_crashes,
            "audio_seconds": round(self.audio_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "audio_seconds_per_second": (round(self.audio_seconds / self.wall_seconds, 2)
                                         if self.wall_seconds > 0 else None),
            "peak_vram_mib": self.peak_vram_mib,
            "startup_seconds": [round(s, 3) for s in self.startup_seconds],
            "batch_sizes": {str(k): v for k, v in dict(self.batch_sizes).items()},
            "startup_wait_seconds": round(self.startup_wait_seconds, 3),
            "first_ready_seconds": round(self.first_ready_seconds, 3),
        }


# -- public entry point ----------------------------------------------------------------------
def enhance_scenes(inputs, out_dir, options: EnhanceOptions | None = None,
                   policy: PoolPolicy | None = None, on_event: EventCallback | None = None,
                   summary_json: str | os.PathLike | None = None) -> RunSummary:
    """Enhance every scene under ``inputs`` (files and folders) into ``out_dir``.

    Returns a :class:`RunSummary`; per-scene failures are in it, never raised. Raises
    ConfigError, BackendUnavailable, WeightsError, DeviceError or OutputError when nothing can
    run, and RunInterrupted (with ``.summary`` set) after Ctrl-C/SIGTERM stopped the workers.
    ``on_event`` receives the events of :mod:`whisperjav_enhance.events` as they happen.
    """
    options = options or EnhanceOptions()
    scenes = discover_scenes(inputs, out_dir)
    out_root = Path(os.path.abspath(out_dir))
    return run_scenes(scenes, out_root, options, policy or PoolPolicy(), on_event,
                      manifest_path=out_root / MANIFEST_NAME,
                      summary_json=Path(summary_json) if summary_json else out_root / SUMMARY_NAME)


def run_scenes(scenes: Sequence[Scene], out_dir: str | os.PathLike, options: EnhanceOptions,
               policy: PoolPolicy, on_event: EventCallback | None = None, *,
               manifest_path: str | os.PathLike | None = None,
               summary_json: str | os.PathLike | None = None) -> RunSummary:
    """Run an already-built scene list (the drop-in builds its own output names).

    ``manifest_path``/``summary_json`` None: no manifest / no summary file.
    """
    started = time.monotonic()
    out_root = Path(os.path.abspath(out_dir))
    if not scenes:
        raise ConfigError("no scenes to enhance")
    try:
        run, executor = _prepare(scenes, out_root, options, policy, on_event)
    except (KeyboardInterrupt, Terminated) as exc:
        raise RunInterrupted(f"interrupted by {getattr(exc, 'signal_name', 'Ctrl-C')} before any "
                             "scene ran") from None
    manifest = Manifest(manifest_path, run.run_id) if manifest_path else None
    run.manifest = manifest
    try:
        return run.execute(executor, started, summary_json)
    finally:
        if manifest is not None:
            manifest.close()


def _prepare(scenes, out_root: Path, options: EnhanceOptions, policy: PoolPolicy, on_event):
    """Everything decided in the parent before a worker starts; raises when nothing can run."""
    from .backends import select_backend
    from .devices import resolve_devices

    # Cheap, side-effect-free checks first: a run refused for missing weights creates nothing.
    backend, note = select_backend(options.backend, options.weights, **options.backend_options())
    if backend.weights.random_test_weights:
        note += ("; WARNING: random test weights, the output is not enhanced speech")
    # With Ray the cluster's resources decide the devices (run_ray resolves options.device there):
    # this machine may have no GPU at all.
    slots = None if options.executor == "ray" else resolve_devices(options.device)
    executor = _executor(options)
    check_output_writable(out_root)
    run = _Run(scenes, out_root, options, policy, on_event, backend, note, slots)
    run.decide_in_parent()
    check_disk_space(out_root, run.estimated_output_bytes())
    return run, executor


# -- checks in the parent ------------------------------------------------------------------------
def check_output_writable(out_root: Path) -> None:
    """Create OUT_DIR if needed and prove a file can be created in it (OutputError if not)."""
    try:
        if out_root.exists() and not out_root.is_dir():
            raise OutputError(f"output folder {out_root} exists and is not a folder; "
                              "choose another -o/--out-dir")
        out_root.mkdir(parents=True, exist_ok=True)
        fd, probe_path = tempfile.mkstemp(prefix=".whisperjav-enhance-write-test.", suffix=".tmp",
                                          dir=out_root)
        os.close(fd)
        os.unlink(probe_path)
    except OSError as exc:
        raise OutputError(f"cannot write to the output folder {out_root}: "
                          f"{exc.strerror or exc}; choose a writable -o/--out-dir") from exc


def check_disk_space(out_root: Path, needed_bytes: int) -> None:
    """Refuse to start when the outputs cannot fit (a full disk mid-run fails every scene)."""
    try:
        free = shutil.disk_usage(out_root).free
    except OSError:
        return  # cannot tell (some network filesystems); the writes will say
    if needed_bytes + DISK_MARGIN_BYTES > free:
        raise OutputError(f"the output folder {out_root} has {free / 2**20:.0f} MiB free but the "
                          f"outputs need about {(needed_bytes + DISK_MARGIN_BYTES) / 2**20:.0f} MiB; "
                          "free some space or choose another -o/--out-dir")


def output_is_complete(path: Path) -> bool:
    """An existing output under its final name is whole (atomic writes); a header check guards
    against files some other tool left there."""
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return False
        import soundfile as sf

        return sf.info(str(path)).frames > 0
    except Exception:
        return False


def _executor(options: EnhanceOptions):
    """The function that runs tasks: (tasks, units, specs, policy, on_event) -> PoolReport."""
    if options.executor == "pool":
        from .pool import run_pool

        return lambda tasks, units, specs, policy, on_event: run_pool(
            tasks, units, specs, policy, on_event=on_event)
    if options.executor == "inprocess":
        from .pool import run_inprocess

        return lambda tasks, units, specs, policy, on_event: run_inprocess(
            tasks, units, specs[0], policy, on_event=on_event)
    from . import ray_executor  # imports ray lazily, inside run_ray

    return lambda tasks, units, specs, policy, on_event: ray_executor.run_ray(
        tasks, units, specs, policy, on_event=on_event, address=options.ray_address,
        device=options.device)


# -- one run ------------------------------------------------------------------------------------
class _Run:
    """State of one run: decisions made in the parent, results as they arrive."""

    def __init__(self, scenes, out_root, options, policy, on_event, backend, note, slots):
        self.scenes = list(scenes)
        self.by_index = {s.index: s for s in self.scenes}
        self.out_root = out_root
        self.options = options
        self.policy = policy
        self.on_event = on_event
        self.backend = backend
        self.note = note
        self.slots = slots      # devices.DeviceSlot list; None: the Ray executor decides them
        self.run_id = new_run_id()
        self.manifest: Manifest | None = None
        self.results: dict[int, SceneResult] = {}
        self.decided: list[SceneResult] = []            # skipped/failed before any worker ran
        self.to_run: list[tuple[Scene, audio.AudioInfo]] = []
        self.notes: list[Log] = []

    # parent-side decisions --------------------------------------------------------------------
    def decide_in_parent(self) -> None:
        removed = remove_partials(str(s.output_path) for s in self.scenes)
        if removed:
            self.notes.append(Log(f"removed {len(removed)} temporary file(s) left by an earlier "
                                  "interrupted run"))
        limit = self.options.max_scene_seconds or audio.MAX_DURATION_S
        for s in self.scenes:
            if not self.options.overwrite and output_is_complete(s.output_path):
                self.decided.append(self._result(s, "skipped", _probe_seconds(s.input_path)))
                continue
            if s.output_path.exists() and not self.options.overwrite:
                self.notes.append(Log(f"{s.output_path} exists but is not a readable WAV; "
                                      "enhancing it again", "warning"))
            try:
                info = audio.probe(s.input_path)
                if info.duration_s > limit:
                    raise AudioError("too_long", f"{s.input_path}: {info.duration_s:.1f} s is longer "
                                     f"than the {limit:g} s limit for one scene (--max-scene-seconds)")
            except AudioError as exc:
                self.decided.append(self._result(s, "failed", 0.0, exc.reason, _first_line(exc)))
                continue
            self.to_run.append((s, info))

    def estimated_output_bytes(self) -> int:
        per_sample = _BYTES_PER_SAMPLE.get(self.options.output_subtype, 4)
        total = 0
        for _, info in self.to_run:
            rate = self.options.output_sample_rate or info.sample_rate
            total += int(info.duration_s * rate * per_sample) + 1024
        return total

    def _result(self, scene: Scene, status: str, duration_s: float, reason=None, message=None,
                worker=None, seconds=0.0) -> SceneResult:
        out = str(scene.output_path) if status in ("enhanced", "skipped") else None
        return SceneResult(scene.index, str(scene.input_path), out, status, reason, message,
                           float(duration_s), worker, float(seconds))

    # running ----------------------------------------------------------------------------------
    def execute(self, executor, started: float, summary_json) -> RunSummary:
        report = None
        try:
            self._emit(RunStarted(
                scenes_total=len(self.scenes), scenes_to_run=len(self.to_run),
                audio_seconds=sum(info.duration_s for _, info in self.to_run),
                backend=self.backend.name, device=self._device_label(None), note=self.note))
            for note in self.notes:
                self._emit(note)
            for r in self.decided:
                self._finish(SceneFinished(r.index, r.input_path, r.output_path, r.status, r.reason,
                                           r.message, r.duration_s, None))
            if self.to_run:
                tasks, units, specs = self._plan()
                report = executor(tasks, units, specs, self.policy, self._on_pool_event)
                self._reconcile(report, tasks)
        except (RunInterrupted, KeyboardInterrupt, Terminated) as exc:
            summary = self._summary(report, started, interrupted=True)
            summary = self._write_summary(summary, summary_json)
            err = exc if isinstance(exc, RunInterrupted) else RunInterrupted(
                f"interrupted by {getattr(exc, 'signal_name', 'Ctrl-C')} before any worker ran")
            err.summary = summary
            if err is exc:
                raise
            raise err from None
        return self._write_summary(self._summary(report, started), summary_json)

    def _plan(self):
        from .devices import DeviceSlot
        from .planning import pack_units
        from .pool import SceneTask, WorkerSpec

        tasks = [SceneTask(index=s.index, input_path=str(s.input_path),
                           output_path=str(s.output_path), duration_s=info.duration_s,
                           output_sample_rate=self.options.output_sample_rate,
                           subtype=self.options.output_subtype, clip=self.options.clip)
                 for s, info in self.to_run]
        units = pack_units([t.duration_s for t in tasks], self.options.batch_seconds,
                           max_scenes=self.policy.max_scenes_per_worker)
        # Ray: one spec whose slot run_ray(device=...) replaces with the cluster's.
        slots = self.slots if self.slots is not None else [DeviceSlot("cpu", "", "cpu")]
        specs = [WorkerSpec(backend=self.backend.name, weights_path=self.backend.weights.path,
                            backend_options=self.options.backend_options(), slot=slot)
                 for slot in slots]
        return tasks, units, specs

    def _device_label(self, report) -> str:
        """The devices for people: what the executor chose if it chose, else the slots."""
        if report is not None and report.devices:
            return ",".join(report.devices)
        if self.slots is None:
            return f"{self.options.device} (Ray)"
        return ",".join(s.label for s in self.slots)

    def _emit(self, event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _on_pool_event(self, event) -> None:
        if isinstance(event, SceneFinished):
            self._finish(event)
        else:
            self._emit(event)

    def _finish(self, ev: SceneFinished) -> None:
        """Record a terminal state once: manifest line first (it must survive a kill), then the
        caller's callback."""
        if ev.index in self.results:
            return
        scene = self.by_index.get(ev.index)
        if scene is None:
            return
        result = SceneResult(ev.index, str(scene.input_path),
                             str(scene.output_path) if ev.status in ("enhanced", "skipped") else None,
                             ev.status, ev.reason, ev.message, float(ev.duration_s), ev.worker)
        self.results[ev.index] = result
        if self.manifest is not None:
            self.manifest.write({"index": result.index, "input": result.input_path,
                                 "output": result.output_path, "status": result.status,
                                 "reason": result.reason, "message": result.message,
                                 "duration_s": round(result.duration_s, 3), "worker": result.worker,
                                 "backend": self.backend.name})
        self._emit(ev)

    def _reconcile(self, report, tasks) -> None:
        """Every outcome the pool reports gets a terminal state, even if its event was missed;
        worker seconds come from the outcomes."""
        durations = {t.index: t.duration_s for t in tasks}
        for o in report.outcomes:
            if o.index not in self.by_index:
                continue
            if o.index not in self.results:
                self._finish(SceneFinished(o.index, str(self.by_index[o.index].input_path),
                                           o.output_path, o.status, o.reason, o.message,
                                           durations.get(o.index, 0.0), o.worker))
            self.results[o.index] = dataclasses.replace(self.results[o.index],
                                                        seconds=float(o.seconds or 0.0))

    # summary ----------------------------------------------------------------------------------
    def _summary(self, report, started: float, interrupted: bool = False) -> RunSummary:
        rows = []
        for s in self.scenes:
            r = self.results.get(s.index)
            rows.append(r if r is not None else self._result(s, "pending", 0.0))
        enhanced_s = sum(r.duration_s for r in rows if r.status == "enhanced")
        return RunSummary(
            scenes=tuple(rows), backend=self.backend.name, backend_note=self.note,
            weights=self.backend.weights.as_dict(), device=self._device_label(report),
            executor=self.options.executor, out_dir=str(self.out_root),
            manifest_path=str(self.manifest.path) if self.manifest else None, summary_path=None,
            run_id=self.run_id,
            workers_started=report.workers_started if report else 0,
            recycles=dict(report.recycles) if report else {},
            worker_crashes=report.worker_crashes if report else 0,
            audio_seconds=enhanced_s, wall_seconds=time.monotonic() - started,
            peak_vram_mib=report.peak_vram_mib if report else None,
            startup_seconds=tuple(report.startup_seconds) if report else (),
            batch_sizes=dict(report.batch_sizes) if report else {},
            interrupted=interrupted,
            startup_wait_seconds=report.startup_wait_seconds if report else 0.0,
            first_ready_seconds=report.first_ready_seconds if report else 0.0)

    def _write_summary(self, summary: RunSummary, summary_json) -> RunSummary:
        if summary_json is None:
            return summary
        summary = dataclasses.replace(summary, summary_path=str(Path(summary_json).absolute()))
        data = summary.as_dict()
        data["summary"] = summary.summary_path
        data["options"] = dataclasses.asdict(self.options)
        data["policy"] = dataclasses.asdict(self.policy)
        write_json_atomic(summary_json, data)
        return summary


def _probe_seconds(path: Path) -> float:
    try:
        return audio.probe(path).duration_s
    except Exception:
        return 0.0


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
