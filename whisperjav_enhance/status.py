"""The run's vocabulary, declared once: the states a scene ends in, the reasons a scene fails, and
the reasons a worker retires. Producers use these names; the manifest, summary.json, events and
README's tables use their values (plain strings, so JSON and comparisons need no conversion).
``tests/test_status.py`` checks README's reason table against :data:`REASON_MEANINGS`."""

from __future__ import annotations


class Status:
    """Where a scene ended up (``SceneResult.status``)."""

    ENHANCED = "enhanced"    # written by this run
    SKIPPED = "skipped"      # its output was already complete from an earlier run with the same settings
    FAILED = "failed"        # not written; ``reason`` says why
    PENDING = "pending"      # no terminal state yet (only in the summary of an interrupted run)


STATUS_MEANINGS = {
    Status.ENHANCED: "enhanced by this run",
    Status.SKIPPED: "output already complete from an earlier run made with the same settings",
    Status.FAILED: "not enhanced; the reason says why",
    Status.PENDING: "not reached before the run was interrupted",
}

# Statuses after which the scene has its output under its final name.
DONE_STATUSES = frozenset({Status.ENHANCED, Status.SKIPPED})


class Reason:
    """Why a scene failed (``SceneResult.reason``): short, stable codes for scripts."""

    MISSING = "missing"
    NOT_A_FILE = "not_a_file"
    EMPTY = "empty"
    UNREADABLE = "unreadable"
    TRUNCATED = "truncated"
    NON_FINITE = "non_finite"
    TOO_LONG = "too_long"
    TOO_LARGE = "too_large"
    BAD_SAMPLE_RATE = "bad_sample_rate"
    BAD_CHANNELS = "bad_channels"
    OUT_OF_MEMORY = "out_of_memory"
    NON_FINITE_OUTPUT = "non_finite_output"
    BACKEND_ERROR = "backend_error"
    ENHANCER_UNAVAILABLE = "enhancer_unavailable"
    WORKER_CRASH = "worker_crash"
    QUARANTINED = "quarantined"
    WRITE_FAILED = "write_failed"
    DISK_FULL = "disk_full"


REASON_MEANINGS = {
    Reason.MISSING: "the input file does not exist",
    Reason.NOT_A_FILE: "the input is a folder, a pipe or a device, not a regular file",
    Reason.EMPTY: "the file holds no audio (0 bytes, or under 10 ms)",
    Reason.UNREADABLE: "not a readable audio file, or decoding failed",
    Reason.TRUNCATED: "the file holds less audio than its header declares",
    Reason.NON_FINITE: "the file holds NaN or infinite samples",
    Reason.TOO_LONG: "longer than --max-scene-seconds (4 h at most)",
    Reason.TOO_LARGE: "decoding it would need more memory than one worker may use",
    Reason.BAD_SAMPLE_RATE: "sample rate outside 4-384 kHz",
    Reason.BAD_CHANNELS: "channel count outside 1-64",
    Reason.OUT_OF_MEMORY: "one window does not fit in device memory, even alone in a fresh worker",
    Reason.NON_FINITE_OUTPUT: "the model produced NaN or infinite samples",
    Reason.BACKEND_ERROR: "the model raised an error on this scene, or said it could not clean it",
    Reason.ENHANCER_UNAVAILABLE: "the enhancer said it cannot start (WhisperJAV's "
                                 "SpeechEnhancerUnavailable)",
    Reason.WORKER_CRASH: "the run gave up on the scene after its workers kept crashing",
    Reason.QUARANTINED: "the scene was in flight at repeated worker crashes, the last alone",
    Reason.WRITE_FAILED: "the output could not be written",
    Reason.DISK_FULL: "the output's disk is full",
}


class Retirement:
    """Why a worker left (``Retiring.reason``, ``WorkerRetired.reason``, summary ``recycles``)."""

    MAX_SCENES = "max_scenes"
    DRIFT = "drift"
    INACTIVE_SPLIT = "inactive_split"
    ALLOC_RETRIES = "alloc_retries"
    OOM = "oom"
    CUDA_ERROR = "cuda_error"
    WORKER_ERROR = "worker_error"
    SHUTDOWN = "shutdown"
    LOAD_FAILED = "load_failed"


RETIREMENT_MEANINGS = {
    Retirement.MAX_SCENES: "reached --max-scenes-per-worker",
    Retirement.DRIFT: "reserved minus allocated device memory passed --max-drift-mb",
    Retirement.INACTIVE_SPLIT: "fragmented (inactive split) device memory passed its limit",
    Retirement.ALLOC_RETRIES: "the allocator had to retry allocations too often",
    Retirement.OOM: "a window ran out of memory alone; its scene goes to a fresh worker",
    Retirement.CUDA_ERROR: "a CUDA error left the device context unusable",
    Retirement.WORKER_ERROR: "an error outside any one scene (a bug around the model)",
    Retirement.SHUTDOWN: "the run ended (not a recycle)",
    Retirement.LOAD_FAILED: "the worker could not load its backend",
}

# Retirements that hand the scenes in flight to another worker as suspects (a crash is charged).
SUSPECT_RETIREMENTS = frozenset({Retirement.CUDA_ERROR, Retirement.WORKER_ERROR})
# Retirements that are not recycles (not counted in the summary's ``recycles``).
NOT_RECYCLES = frozenset({Retirement.SHUTDOWN, Retirement.LOAD_FAILED})

__all__ = ["Status", "Reason", "Retirement", "STATUS_MEANINGS", "REASON_MEANINGS",
           "RETIREMENT_MEANINGS", "DONE_STATUSES", "SUSPECT_RETIREMENTS", "NOT_RECYCLES"]
