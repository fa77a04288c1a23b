"""One run's state: what the parent decided before any worker started (skipped, redone for
changed settings, rejected, to run), the plan handed to the executor, every scene's one record as
it arrives (a manifest line and a settings record, then the caller's event), and the summary at
the end. A failure of the run's own records (a full disk under the manifest or the summary) is
reported in the summary's ``problems``, never allowed to stop the work."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

from . import audio, fingerprints
from .config import EnhanceOptions, PoolPolicy
from .errors import AudioError, OutputError, RunInterrupted, first_line
from .effective import effective_options, effective_policy
from .events import Log, RunStarted, SceneFinished
from .executor.interrupts import Terminated, install_termination_handler
from .manifest import Manifest, new_run_id, write_json_atomic
from .outdir import Match, OutputRecords, RunLock, remove_stale_temporaries
from .preflight import complete_output, output_bytes
from .records import SceneResult
from .scenes import Scene
from .status import DONE_STATUSES, Reason, Status
from .summary import RunSummary


# Work-unit budget for backends that take whole scenes (DeepFilterNet3, hosted enhancers): they
# gain nothing from packing scenes together, and short units spread a run over every worker.
WHOLE_SCENE_UNIT_SECONDS = 30.0


class Run:
    """State of one run: decisions made in the parent, records as they arrive."""

    def __init__(self, scenes, out_root: Path, options: EnhanceOptions, policy: PoolPolicy,
                 on_event: Callable | None, backend, note: str, slots, lock: RunLock | None):
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
        self.lock = lock
        # lock None: a dry run, which reads the records (in OUT_DIR) and writes nothing.
        self.records = OutputRecords(lock.out_root if lock else out_root, lock)
        self.settings = fingerprints.output_settings(
            backend=backend.name, weights_id=fingerprints.weights_identity(backend.weights.path),
            output_sample_rate=options.output_sample_rate, output_subtype=options.output_subtype,
            clip=options.clip, audio_options=_audio_changing(backend, options.backend_settings()))
        self.fingerprint = fingerprints.fingerprint(self.settings)
        self.manifest: Manifest | None = None
        self.problems: list[str] = []                   # failures of the run's own records
        self.redone = 0                                 # existing outputs redone: other settings
        self.kept_unrecorded = 0                        # ... kept: made before settings were recorded
        self.results: dict[int, SceneResult] = {}
        self.decided: list[SceneResult] = []            # skipped/failed before any worker ran
        self.to_run: list[tuple[Scene, audio.AudioInfo]] = []
        self.notes: list[Log] = []

    # -- parent-side decisions ------------------------------------------------------------------
    def decide_in_parent(self, extra_outputs=()) -> None:
        """Skip, redo or reject each scene before any worker starts (under the run lock, so
        temporaries left by interrupted runs can be removed: no other run is live; a dry run,
        without the lock, removes nothing)."""
        if self.lock is not None:
            removed = remove_stale_temporaries(self.lock, [*(s.output_path for s in self.scenes),
                                                           *extra_outputs])
            if removed:
                self.notes.append(Log(f"removed {len(removed)} temporary file(s) left by an "
                                      "earlier interrupted run"))
        limit = self.options.max_scene_seconds or audio.MAX_DURATION_S
        changed, self.redone, self.kept_unrecorded = set(), 0, 0
        for s in self.scenes:
            match, existing = self._existing(s)
            if match in (Match.SAME, Match.UNRECORDED):
                self.kept_unrecorded += match == Match.UNRECORDED
                self.decided.append(self.record(s, Status.SKIPPED, existing.duration_s))
                continue
            if match == Match.CHANGED:
                old = self.records.lookup(s.output_path)
                changed.update(fingerprints.changed_settings(old and old.settings, self.settings))
                self.redone += 1
            try:
                info = audio.probe(s.input_path)
                if info.duration_s > limit:
                    raise AudioError(Reason.TOO_LONG, f"{s.input_path}: {info.duration_s:.1f} s is "
                                     f"longer than the {limit:g} s limit for one scene "
                                     "(--max-scene-seconds)")
            except AudioError as exc:
                self.decided.append(self.record(s, Status.FAILED, 0.0, exc.reason, first_line(exc)))
                continue
            self.to_run.append((s, info))
        self._note_resume(changed)

    def _existing(self, s: Scene):
        """(how an existing output relates to this run's settings (outdir.Match), what probing
        it found), or (None, None) when there is none to keep (or ``overwrite`` redoes all)."""
        if self.options.overwrite:
            return None, None
        existing = complete_output(s.output_path)
        if existing is None:
            if s.output_path.exists():
                self.notes.append(Log(f"{s.output_path} exists but is not a readable WAV; "
                                      "enhancing it again", "warning"))
            return None, None
        return self.records.match(s.output_path, self.fingerprint), existing

    def _note_resume(self, changed: set) -> None:
        if self.redone:
            self.notes.append(Log(f"{self.redone} existing output(s) will be redone: made with "
                                  f"other settings ({', '.join(sorted(changed))})", "warning"))
        if self.kept_unrecorded:
            self.notes.append(Log(f"{self.kept_unrecorded} existing output(s) kept as they are: "
                                  "made before settings were recorded (use --overwrite to redo "
                                  "them)"))

    def close(self) -> None:
        """Close the run's own record files (the manifest, the settings records)."""
        self.records.close()
        if self.manifest is not None:
            self.manifest.close()

    def estimated_output_bytes(self) -> int:
        return sum(output_bytes(info.duration_s, self.options.output_sample_rate or info.sample_rate,
                                self.options.output_subtype) for _, info in self.to_run)

    def record(self, scene: Scene, status: str, duration_s: float, reason=None,
                message=None) -> SceneResult:
        out = str(scene.output_path) if status in DONE_STATUSES else None
        return SceneResult(scene.index, str(scene.input_path), out, status, reason, message,
                           float(duration_s))

    # -- running ----------------------------------------------------------------------------------
    def execute(self, started: float, summary_json) -> RunSummary:
        """Announce, run, summarise. Ctrl-C/SIGTERM raise RunInterrupted carrying the summary,
        which is written whatever arrives while the run stops (later signals are ignored until
        this returns)."""
        report = None
        restore = install_termination_handler()
        try:
            self._emit(RunStarted(
                scenes_total=len(self.scenes), scenes_to_run=len(self.to_run),
                audio_seconds=sum(info.duration_s for _, info in self.to_run),
                backend=self.backend.name, device=self.device_label(None), note=self.note))
            for note in self.notes:
                self._emit(note)
            for r in self.decided:
                self._finish(r)
            if self.to_run:
                report = self._run_executor()
        except (RunInterrupted, KeyboardInterrupt, Terminated) as exc:
            err = exc if isinstance(exc, RunInterrupted) else RunInterrupted(
                f"interrupted by {getattr(exc, 'signal_name', 'Ctrl-C')} before any worker ran")
            for r in err.outcomes:  # records the executor made just before the stop
                self._finish(r)
            report = err.report or report
            err.summary = self._write_summary(self._summary(report, started, interrupted=True),
                                              report, summary_json)
            if err is exc:
                raise
            raise err from None
        else:
            return self._write_summary(self._summary(report, started), report, summary_json)
        finally:
            restore()

    def _run_executor(self):
        from .executor import execute, make_transport

        tasks, units, specs = self.plan()
        transport = make_transport(self.options.executor, self.options.ray_address,
                                   self.options.device if self.slots is None else None)
        report = execute(tasks, units, specs, self.policy, self._on_executor_event, transport)
        for r in report.outcomes:  # every record, even one whose event was missed
            self._finish(r)
        return report

    def plan(self):
        """(tasks, planner units, worker specs) of the scenes to run."""
        from .devices import DeviceSlot
        from .executor import SceneTask, WorkerSpec
        from .planning import pack_units

        tasks = [SceneTask(index=s.index, input_path=str(s.input_path),
                           output_path=str(s.output_path), duration_s=info.duration_s,
                           output_sample_rate=self.options.output_sample_rate,
                           subtype=self.options.output_subtype, clip=self.options.clip,
                           out_dir=str(self.out_root))
                 for s, info in self.to_run]
        budget = self.options.batch_seconds
        if not self.backend.windowed:
            budget = min(budget, WHOLE_SCENE_UNIT_SECONDS)
        units = pack_units([t.duration_s for t in tasks], budget,
                           max_scenes=self.policy.max_scenes_per_worker)
        # Ray: one spec whose slot the transport replaces with the cluster's.
        slots = self.slots if self.slots is not None else [DeviceSlot("cpu", "", "cpu")]
        specs = [WorkerSpec(backend=self.backend.name, weights_path=self.backend.weights.path,
                            backend_options=self.options.backend_settings(), slot=slot)
                 for slot in slots]
        return tasks, units, specs

    def device_label(self, report) -> str:
        """The devices for people: what the executor chose if it chose, else the slots."""
        if report is not None and report.devices:
            return ",".join(report.devices)
        if self.slots is None:
            return f"{self.options.device} (Ray)"
        return ",".join(s.label for s in self.slots)

    def _emit(self, event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _on_executor_event(self, event) -> None:
        if isinstance(event, SceneFinished):
            self._finish(event.scene, event)
        else:
            self._emit(event)

    def _finish(self, result: SceneResult, event: SceneFinished | None = None) -> None:
        """Record a terminal state once: manifest line and settings record first (they must
        survive a kill), then the caller's callback (``event``: the one that announced it)."""
        if result.index in self.results or result.index not in self.by_index:
            return
        self.results[result.index] = result
        if self.manifest is not None:
            self._keep(lambda: self.manifest.write({**result.manifest_record(),
                                                    "backend": self.backend.name}), "manifest")
        if result.status == Status.ENHANCED:
            self._keep(lambda: self.records.record(result.output_path, self.fingerprint,
                                                   self.settings, self.run_id), "settings records")
        self._emit(event or SceneFinished(result))

    def _keep(self, write: Callable[[], None], what: str) -> None:
        """Write one of the run's own records; a failure (a full disk) is reported once per
        record and in the summary, and the run goes on: the scenes' work is not lost with it."""
        try:
            write()
        except OutputError as exc:
            problem = f"{what}: {first_line(exc)}"
            if not any(p.startswith(f"{what}: ") for p in self.problems):
                self.problems.append(problem)
                self._emit(Log(f"could not write the {problem}", "warning"))

    # -- summary ------------------------------------------------------------------------------------
    def _summary(self, report, started: float, interrupted: bool = False) -> RunSummary:
        rows = tuple(self.results.get(s.index) or self.record(s, Status.PENDING, 0.0)
                     for s in self.scenes)
        counters = {}
        if report is not None:
            counters = dict(workers_started=report.workers_started, recycles=dict(report.recycles),
                            worker_crashes=report.worker_crashes,
                            peak_vram_mib=report.peak_vram_mib,
                            startup_seconds=tuple(report.startup_seconds),
                            batch_sizes=dict(report.batch_sizes),
                            startup_wait_seconds=report.startup_wait_seconds,
                            first_ready_seconds=report.first_ready_seconds)
        return RunSummary(
            scenes=rows, backend=self.backend.name, backend_note=self.note,
            weights=self.backend.weights.as_dict(), device=self.device_label(report),
            executor=self.options.executor, out_dir=str(self.out_root),
            manifest_path=str(self.manifest.path) if self.manifest else None, summary_path=None,
            run_id=self.run_id, audio_seconds=sum(r.duration_s for r in rows
                                                  if r.status == Status.ENHANCED),
            wall_seconds=time.monotonic() - started, interrupted=interrupted,
            scenes_redone=self.redone, problems=tuple(self.problems), **counters)

    def _write_summary(self, summary: RunSummary, report, summary_json) -> RunSummary:
        """Write summary.json at ``summary_json`` (the path pipeline checked); a failure is
        returned in the summary's ``problems`` (with no ``summary_path``), never raised: the run's
        work is done either way."""
        if summary_json is None:
            return summary
        path = Path(summary_json)
        summary = dataclasses.replace(summary, summary_path=str(path))
        data = summary.as_dict()
        data["summary"] = summary.summary_path
        data["options"] = effective_options(self.options, self.backend)
        data["policy"] = effective_policy(self.policy, report, self.slots)
        try:
            # Inside OUT_DIR: written through folders opened without following links.
            write_json_atomic(path, data,
                              root=self.out_root if path.is_relative_to(self.out_root) else None)
        except OutputError as exc:
            problem = f"summary: {first_line(exc)}"
            self._emit(Log(f"could not write the {problem}", "warning"))
            return dataclasses.replace(summary, summary_path=None,
                                       problems=summary.problems + (problem,))
        return summary


def _audio_changing(backend, settings: dict) -> dict:
    """The settings that change the enhanced audio (BackendOption.changes_audio), each with the
    value the run uses: the resume key must not redo outputs for a setting that only changes
    speed, nor for the same value spelt another way (``4`` or ``4.0``, given or the default)."""
    from .backends import backend_class

    cls = backend_class(backend.name)
    changes = {o.key for o in cls.OPTIONS if o.changes_audio}
    return {k: v for k, v in cls.settings(settings).items() if k in changes}


__all__ = ["Run"]
