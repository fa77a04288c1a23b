"""The three pooled helpers with upstream's signatures: ``enhance_scenes``,
``enhance_single_audio`` and ``resample_scenes`` (the contract is in the package docstring)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

from ...config import EnhanceOptions, PoolPolicy
from ...errors import EnhanceError, RunInterrupted
from .runner import Job, Progress, plan_job, run_job, run_options
from .settle import cannot_start, cannot_start_message, conversion_run, settle
from .target import target_for
from .upstream import installed_rules

logger = logging.getLogger("whisperjav_enhance.integrations.whisperjav")

ENHANCED_DIR_NAME = "enhanced_scenes"     # sub-folder of temp_dir WhisperJAV expects
RESAMPLED_DIR_NAME = "resampled_scenes"   # resample_scenes' sub-folder of temp_dir
ENHANCED_SUFFIX = "_enhanced"
RESAMPLED_SUFFIX = "_resampled"
SCENE_EXTRACTION_SAMPLE_RATE_HZ = 48_000  # what WhisperJAV should cut scenes at for this step


def enhance_scenes(scene_paths: Sequence, enhancer, temp_dir,
                   progress_callback: Callable[[int, int, str], None] | None = None,
                   degradations: list | None = None, *, strict: bool = False,
                   options: EnhanceOptions | None = None, policy: PoolPolicy | None = None,
                   on_event: Callable[[object], None] | None = None) -> list:
    """Enhance WhisperJAV scene tuples in the pool; see the package docstring for the contract.

    ``options``/``policy`` tune the run (device, batching, workers); the backend comes from
    ``enhancer`` and the output format is fixed by the contract. ``strict`` (1.8 rules only)
    raises instead of returning the scenes unenhanced. ``on_event`` gets this package's events.
    """
    if not scene_paths:
        return scene_paths
    rules = installed_rules()
    target = target_for(enhancer)
    originals = list(scene_paths)
    job = plan_job(originals, ENHANCED_SUFFIX)
    state_dir = Path(temp_dir)    # the run's lock and records: enhanced_scenes holds only outputs
    out_dir = state_dir / ENHANCED_DIR_NAME
    out_dir.mkdir(exist_ok=True)  # as upstream: no parents, a missing temp_dir raises
    progress = Progress(progress_callback, [Path(item[0]).name for item in originals])
    logger.info("Enhancing %d scenes with %s (%s; 16 kHz mono PCM_16 in %s)", len(originals),
                target.display_name, target.spec, out_dir)
    try:
        outcomes = run_job(job, out_dir, run_options(options, target.spec), policy, on_event,
                           progress, state_dir=state_dir)
    except RunInterrupted:
        raise KeyboardInterrupt("speech enhancement interrupted; workers stopped") from None
    except EnhanceError as exc:
        if not rules.failures_are_fatal:
            progress.finish()
        return cannot_start(rules, target.display_name, exc, originals, degradations, strict)
    progress.finish()
    copies = conversion_run(out_dir, state_dir, options, policy, on_event)
    return settle(rules, target.display_name, job, outcomes, degradations, strict, copies)


def enhance_single_audio(audio_path, enhancer, output_path=None, *,
                         options: EnhanceOptions | None = None, policy: PoolPolicy | None = None,
                         on_event: Callable[[object], None] | None = None):
    """Enhance one file (pipelines without scenes) to 16 kHz mono PCM_16 at ``output_path``
    (default ``<stem>_enhanced.wav`` beside it); returns that path, or ``audio_path`` itself
    when the file could not be cleaned. A clean-up that cannot start raises under 1.9 rules, as
    does WhisperJAV's SpeechEnhancerUnavailable raised by the enhancer. The run's lock and
    records go beside the output."""
    rules = installed_rules()
    target = target_for(enhancer)
    source = Path(audio_path)
    out = Path(output_path) if output_path is not None else \
        source.with_name(f"{source.stem}{ENHANCED_SUFFIX}.wav")
    job = Job(((source, 0.0, 0.0, 0.0),), ((source, out.name),), {0: 0}, {})
    try:
        # No temp_dir here: the lock and records go beside the output, the one folder the
        # caller asked us to write in.
        outcome = run_job(job, out.parent, run_options(options, target.spec), policy, on_event,
                          state_dir=None)[0]
    except RunInterrupted:
        raise KeyboardInterrupt("speech enhancement interrupted; workers stopped") from None
    except EnhanceError as exc:
        if rules.failures_are_fatal:
            raise rules.unavailable(cannot_start_message(target.display_name, exc)) from exc
        logger.error("Speech enhancement of %s could not run (%s); using the original.",
                     source.name, str(exc).strip())
        return audio_path
    if outcome.path is not None:
        return outcome.path
    if outcome.unavailable and rules.failures_are_fatal:
        raise rules.unavailable(outcome.why)
    logger.warning("%s was not cleaned up by %s (%s); using the original.", source.name,
                   target.display_name, outcome.why)
    return audio_path


def resample_scenes(scene_paths: Sequence, temp_dir, *, options: EnhanceOptions | None = None,
                    policy: PoolPolicy | None = None,
                    on_event: Callable[[object], None] | None = None) -> list:
    """16 kHz mono PCM_16 copies of the scenes at ``temp_dir/resampled_scenes/<stem>_resampled.wav``
    (the dual-track mode's recogniser track), in the pool on the CPU; a scene that cannot be
    read keeps its original tuple."""
    if not scene_paths:
        return scene_paths
    originals = list(scene_paths)
    job = plan_job(originals, RESAMPLED_SUFFIX)
    out_dir = Path(temp_dir) / RESAMPLED_DIR_NAME
    out_dir.mkdir(exist_ok=True)
    try:
        outcomes = conversion_run(out_dir, Path(temp_dir), options, policy, on_event)(job)
    except RunInterrupted:
        raise KeyboardInterrupt("resampling interrupted; workers stopped") from None
    except EnhanceError as exc:
        logger.error("Scenes could not be resampled (%s); using the originals.", str(exc).strip())
        return originals
    for pos, outcome in outcomes.items():
        if outcome.path is None:
            logger.warning("Scene not resampled (%s); using the original.", outcome.why)
    return [item if outcomes[pos].path is None else (outcomes[pos].path, *item[1:])
            for pos, item in enumerate(originals)]


__all__ = ["enhance_scenes", "enhance_single_audio", "resample_scenes", "ENHANCED_DIR_NAME",
           "RESAMPLED_DIR_NAME", "SCENE_EXTRACTION_SAMPLE_RATE_HZ"]
