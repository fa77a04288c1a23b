"""What the pipeline gets back once the run is over, under the rules of the installed WhisperJAV.

1.9 ("only all-fail is fatal"): every returned path is 16 kHz. A failed scene comes back as a
16 kHz mono PCM_16 copy of its original, ``enhanced_scenes/<stem>_original_16000.wav`` (the
original path if even the copy fails); partial failures add one line to ``degradations`` in
upstream's wording; WhisperJAV's own ``SpeechEnhancerUnavailable`` is raised when every scene
failed, when the clean-up cannot start, or when the enhancer itself raised it.

1.8: a failed scene keeps its original tuple (the same object); nothing is raised (unless the
caller asked for ``strict``); a clean-up that cannot start leaves every scene unenhanced.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ...errors import EnhanceError, RunInterrupted, first_line
from .runner import Job, Outcome, plan_job, run_job, run_options
from .upstream import Rules

logger = logging.getLogger("whisperjav_enhance.integrations.whisperjav")

COPY_SUFFIX = "_original_16000"   # upstream's name for a failed scene's 16 kHz copy
WAY_OUT = "Choose a different clean-up, or none."


def degradation_line(failed: int, total: int, display_name: str, first: str) -> str:
    """Upstream's wording, exactly."""
    return (f"{failed} of {total} scenes went through without being cleaned up by "
            f"{display_name} (first: {first})")


def all_failed_message(display_name: str, total: int, first: str) -> str:
    return (f"{display_name} could not clean up the audio: it failed on every one of the "
            f"{total} pieces (first: {first}). {WAY_OUT}")


def cannot_start_message(display_name: str, exc: BaseException) -> str:
    details = "".join("\n" + line for line in str(exc).strip().splitlines()[1:])
    return (f"{display_name} was asked for, but it cannot start: {first_line(exc).rstrip('.')}. "
            f"{WAY_OUT}{details}")


def cannot_start(rules: Rules, display_name: str, exc: EnhanceError, originals: list,
                 degradations: list | None, strict: bool) -> list:
    """Nothing could run: raise (1.9, or strict under 1.8), else every scene unenhanced."""
    if rules.failures_are_fatal:
        raise rules.unavailable(cannot_start_message(display_name, exc)) from exc
    if strict:
        raise exc
    first = first_line(exc)
    logger.error("Speech enhancement could not run (%s); continuing with the %d scenes "
                 "unenhanced.", str(exc).strip(), len(originals))
    if degradations is not None:
        degradations.append(f"speech enhancement did not run, all {len(originals)} scenes went "
                            f"through unenhanced ({first})")
    return list(originals)


def settle(rules: Rules, display_name: str, job: Job, outcomes: dict[int, Outcome],
           degradations: list | None, strict: bool, copy_run) -> list:
    """The returned list; ``copy_run(job) -> outcomes`` makes the 16 kHz copies (1.9)."""
    originals = list(job.originals)
    total = len(originals)
    failed = [pos for pos in range(total) if outcomes[pos].path is None]
    first = outcomes[failed[0]].why if failed else ""
    if rules.failures_are_fatal:
        gave_up = [outcomes[pos] for pos in failed if outcomes[pos].unavailable]
        if gave_up:
            raise rules.unavailable(gave_up[0].why)
        if failed and len(failed) == total:
            raise rules.unavailable(all_failed_message(display_name, total, first))
    result = [item if outcomes[pos].path is None else (outcomes[pos].path, *item[1:])
              for pos, item in enumerate(originals)]
    if not failed:
        return result
    if strict and len(failed) == total:
        raise EnhanceError(f"{display_name} failed on every one of the {total} scenes, so "
                           f"nothing was cleaned up; first failure: {first}")
    note = degradation_line(len(failed), total, display_name, first)
    logger.warning(note)
    if degradations is not None:
        degradations.append(note)
    if rules.failures_are_fatal:
        for pos, path in _copies(failed, originals, copy_run).items():
            result[pos] = (path, *originals[pos][1:])
    return result


def _copies(failed: list[int], originals: list, copy_run) -> dict[int, Path]:
    """position -> its 16 kHz copy, for the failed positions whose copy could be made."""
    job = plan_job([originals[pos] for pos in failed], COPY_SUFFIX)
    try:
        made = copy_run(job)
    except RunInterrupted:  # an EnhanceError too, but Ctrl-C must reach the pipeline
        raise KeyboardInterrupt("speech enhancement interrupted; workers stopped") from None
    except EnhanceError as exc:
        logger.warning("16 kHz copies of the %d failed scenes could not be made (%s); they keep "
                       "their original paths", len(failed), first_line(exc))
        return {}
    return {failed[i]: o.path for i, o in made.items() if o.path is not None}


def conversion_run(out_dir: Path, state_dir: Path | None, options, policy, on_event):
    """``job -> outcomes``: a pooled passthrough run on the CPU writing 16 kHz mono PCM_16 into
    ``out_dir`` (the copies above, and resample_scenes), its lock and records in ``state_dir``."""
    opts = run_options(options, "none", device="cpu", executor=_cpu_executor(options))

    def run(job: Job) -> dict[int, Outcome]:
        return run_job(job, out_dir, opts, policy, on_event, state_dir=state_dir)
    return run


def _cpu_executor(options) -> str:
    executor = getattr(options, "executor", "pool") if options is not None else "pool"
    return executor if executor in ("pool", "inprocess") else "pool"


__all__ = ["settle", "cannot_start", "conversion_run", "degradation_line", "all_failed_message",
           "cannot_start_message", "COPY_SUFFIX", "WAY_OUT"]
