"""The one record of what happened to a scene, from the worker that decided it to the manifest line
and the summary. A scene is named by its run index everywhere (its position in the run's naturally
sorted scene list); nothing else numbers scenes across a process or module boundary.

Importing this module imports neither numpy nor torch: it crosses the process boundary inside
worker messages."""

from __future__ import annotations

from dataclasses import dataclass

from .status import DONE_STATUSES, REASON_MEANINGS, STATUS_MEANINGS, Status


@dataclass(frozen=True)
class SceneResult:
    """Where one scene ended up."""

    index: int                      # the scene's run index
    input_path: str                 # the scene file
    output_path: str | None         # its output when done (enhanced now or skipped); else None
    status: str                     # status.Status
    reason: str | None = None       # status.Reason when failed
    message: str | None = None      # one line for people when failed
    duration_s: float = 0.0         # audio seconds (0 when the probe rejected the file)
    worker: int | None = None       # worker that decided it; None when decided in the parent
    seconds: float = 0.0            # wall seconds a worker spent on it (0 when decided in the parent)
    detail: str | None = None       # the full diagnostic (a remote traceback) for the debug log;
                                    # never written to the manifest or summary

    def __post_init__(self):
        assert self.status in STATUS_MEANINGS, f"unknown status {self.status!r}"
        assert (self.status == Status.FAILED) == (self.reason is not None), \
            f"a failed scene needs a reason, and only a failed one ({self.status}, {self.reason})"
        assert self.reason is None or self.reason in REASON_MEANINGS, f"unknown reason {self.reason!r}"
        assert (self.output_path is not None) <= (self.status in DONE_STATUSES), \
            f"only a done scene has an output ({self.status}, {self.output_path})"

    @property
    def done(self) -> bool:
        """The scene's output is under its final name (enhanced now or before)."""
        return self.status in DONE_STATUSES

    def manifest_record(self) -> dict:
        """The fields of this scene's manifest line (the manifest adds run id and time)."""
        return {"index": self.index, "input": self.input_path, "output": self.output_path,
                "status": self.status, "reason": self.reason, "message": self.message,
                "duration_s": round(self.duration_s, 3), "worker": self.worker}


__all__ = ["SceneResult"]
