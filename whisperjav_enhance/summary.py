"""What a run did: :class:`RunSummary`, returned by the Python API and written as summary.json."""

from __future__ import annotations

from dataclasses import dataclass, field

from .records import SceneResult
from .status import Status


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
    workers_started: int = 0         # worker processes started (0 when nothing needed running)
    recycles: dict = field(default_factory=dict)  # status.Retirement -> workers retired for it
    worker_crashes: int = 0          # workers that died without reporting
    audio_seconds: float = 0.0       # audio seconds enhanced by this run
    wall_seconds: float = 0.0        # from the call to the end of the run
    peak_vram_mib: float | None = None  # highest reserved device memory of any worker; None on CPU
    startup_seconds: tuple[float, ...] = ()  # per started worker: spawn to model loaded
    batch_sizes: dict = field(default_factory=dict)  # padded window samples -> batch size used
    interrupted: bool = False        # True in the summary written when Ctrl-C/SIGTERM stopped it
    startup_wait_seconds: float = 0.0  # worker-slot seconds with work queued and no worker ready
    first_ready_seconds: float = 0.0   # executor start -> first worker ready (the unavoidable wait)
    scenes_redone: int = 0           # existing outputs enhanced again: made with other settings
    problems: tuple[str, ...] = ()   # the run's own records that could not be written (a full
                                     # disk under the manifest or summary); the work is kept

    @property
    def rate(self) -> float | None:
        """Audio seconds enhanced by this run per wall second since it started (start-up
        included): the one rate the CLI shows and summary.json holds; None before any time."""
        return self.audio_seconds / self.wall_seconds if self.wall_seconds > 0 else None

    def count(self, status: str) -> int:
        return sum(1 for s in self.scenes if s.status == status)

    @property
    def scenes_total(self) -> int:
        return len(self.scenes)

    @property
    def scenes_enhanced(self) -> int:
        return self.count(Status.ENHANCED)

    @property
    def scenes_skipped(self) -> int:
        return self.count(Status.SKIPPED)

    @property
    def scenes_failed(self) -> int:
        return self.count(Status.FAILED)

    @property
    def failures(self) -> tuple[SceneResult, ...]:
        return tuple(s for s in self.scenes if s.status == Status.FAILED)

    @property
    def complete(self) -> bool:
        """Every scene has its output (enhanced now or before)."""
        return all(s.done for s in self.scenes)

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
            "scenes_pending": self.count(Status.PENDING),
            "failures": [{"path": s.input_path, "reason": s.reason, "message": s.message}
                         for s in self.failures],
            "workers_started": self.workers_started,
            "recycles": dict(self.recycles),
            "worker_crashes": self.worker_crashes,
            "audio_seconds": round(self.audio_seconds, 3),
            "wall_seconds": round(self.wall_seconds, 3),
            "audio_seconds_per_second": None if self.rate is None else round(self.rate, 2),
            "peak_vram_mib": self.peak_vram_mib,
            "startup_seconds": [round(s, 3) for s in self.startup_seconds],
            "batch_sizes": {str(k): v for k, v in dict(self.batch_sizes).items()},
            "scenes_redone": self.scenes_redone,
            "problems": list(self.problems),
            "startup_wait_seconds": round(self.startup_wait_seconds, 3),
            "first_ready_seconds": round(self.first_ready_seconds, 3),
        }


__all__ = ["RunSummary"]
