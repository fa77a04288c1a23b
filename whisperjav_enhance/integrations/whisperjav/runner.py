"""Pipeline scene tuples through one pooled run: output names fixed by the contract, one run of
:func:`whisperjav_enhance.pipeline.run_scenes`, and what became of each tuple's position.

The same file listed twice shares one output; a different file whose output name is already
taken is not run (its output name is fixed by the contract, so it could only clobber another
scene's) and counts as failed.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ...config import EnhanceOptions, PoolPolicy
from ...errors import ConfigError
from ...events import SceneFinished
from ...status import DONE_STATUSES, Reason

logger = logging.getLogger("whisperjav_enhance.integrations.whisperjav")

TARGET_SAMPLE_RATE_HZ = 16_000   # what the recogniser after this step reads
TARGET_SUBTYPE = "PCM_16"


@dataclass(frozen=True)
class Job:
    """Where each position's output goes."""

    originals: tuple                      # the pipeline's tuples, as given
    pairs: tuple                          # (input path, output file name), one per distinct input
    pair_of: dict                         # position -> index into pairs (positions that run)
    refused: dict                         # position -> why it is not run (an output name clash)
    # pair -> the positions it serves, in order (the inverse of pair_of, built once: every
    # finished scene asks for it)
    positions: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        assert all(0 <= p < len(self.pairs) for p in self.pair_of.values()), self.pair_of
        positions: dict[int, list[int]] = {}
        for pos, pair in sorted(self.pair_of.items()):
            positions.setdefault(pair, []).append(pos)
        object.__setattr__(self, "positions", {p: tuple(v) for p, v in positions.items()})

    def positions_of(self, pair: int) -> tuple[int, ...]:
        return self.positions.get(pair, ())


@dataclass(frozen=True)
class Outcome:
    """What became of one position."""

    path: Path | None          # the output when done, else None
    why: str | None = None     # "<scene name>: <what went wrong>" when not done
    unavailable: bool = False  # the failure is the enhancer raising SpeechEnhancerUnavailable


def plan_job(scene_paths: Sequence, suffix: str) -> Job:
    """Output ``<stem><suffix>.wav`` for each distinct input; ConfigError for a malformed tuple."""
    pairs, pair_of, refused = [], {}, {}
    first: dict[str, int] = {}    # resolved input -> pair
    owner: dict[str, str] = {}    # output name (case-folded) -> resolved input
    for pos, item in enumerate(scene_paths):
        if not isinstance(item, (tuple, list)) or len(item) != 4:
            raise ConfigError(f"scene {pos + 1} is not a (path, start, end, duration) tuple: {item!r}")
        path = Path(item[0])
        key = str(path.resolve())
        if key in first:
            pair_of[pos] = first[key]
            continue
        out_name = f"{path.stem}{suffix}.wav"
        if owner.setdefault(out_name.casefold(), key) != key:
            refused[pos] = f"{path.name}: another scene already uses the output name {out_name}"
            continue
        first[key] = pair_of[pos] = len(pairs)
        pairs.append((path, out_name))
    return Job(tuple(scene_paths), tuple(pairs), pair_of, refused)


class Progress:
    """The pipeline's ``progress_callback(n, total, name)`` with upstream's sequence of calls:
    n = 1..total once each, ``name`` the n-th scene's file name in input order. Upstream calls n
    just before it starts scene n; here call n comes when n - 1 scenes are finished (call 1 at
    the start), since several workers finish scenes out of order. A callback that raises is
    logged once and ignored."""

    def __init__(self, callback: Callable | None, names: Sequence[str]):
        self.callback = callback
        self.names = list(names)
        self.finished: set[int] = set()
        self.calls = 0
        self.warned = False

    def start(self) -> None:
        self._call_up_to(1)

    def done(self, position: int) -> None:
        self.finished.add(position)
        self._call_up_to(len(self.finished) + 1)

    def finish(self) -> None:
        self._call_up_to(len(self.names))

    def _call_up_to(self, n: int) -> None:
        while self.calls < min(n, len(self.names)):
            self.calls += 1
            if self.callback is None:
                continue
            try:
                self.callback(self.calls, len(self.names), self.names[self.calls - 1])
            except Exception as exc:  # a broken progress bar must not cost the enhancement
                if not self.warned:
                    logger.warning("progress_callback raised %r; ignoring it from now on", exc)
                    self.warned = True


def run_options(options: EnhanceOptions | None, spec: str, **overrides) -> EnhanceOptions:
    """The caller's options with the contract's fixed parts: backend, 16 kHz mono PCM_16,
    outputs always rewritten."""
    return dataclasses.replace(options or EnhanceOptions(), backend=spec,
                               output_sample_rate=TARGET_SAMPLE_RATE_HZ,
                               output_subtype=TARGET_SUBTYPE, clip="clip", overwrite=True,
                               **overrides)


def run_job(job: Job, out_dir: Path, options: EnhanceOptions, policy: PoolPolicy | None,
            on_event: Callable | None = None, progress: Progress | None = None, *,
            state_dir: Path | None) -> dict:
    """Run the job's pairs into ``out_dir``; position -> :class:`Outcome` for every position.
    ``state_dir`` holds the run's lock and settings records (None: ``out_dir`` itself); the
    caller names it, because only the caller knows which folder is its own to write in.
    Raises what run_scenes raises when nothing can run (EnhanceError, RunInterrupted)."""
    from ...pipeline import run_scenes
    from ...scenes import scenes_from_pairs

    outcomes = {pos: Outcome(None, why) for pos, why in job.refused.items()}
    if not job.pairs:
        return outcomes
    scenes = scenes_from_pairs(job.pairs, out_dir)

    def handle(event):
        if isinstance(event, SceneFinished):
            for pos in job.positions_of(event.index):
                if progress is not None:
                    progress.done(pos)
            if event.status not in DONE_STATUSES:
                logger.warning("Scene %s not cleaned up (%s: %s)", Path(event.input_path).name,
                               event.reason, event.message)
        if on_event is not None:
            on_event(event)

    if progress is not None:
        progress.start()
    summary = run_scenes(scenes, out_dir, options, policy or PoolPolicy(), handle,
                         manifest_path=None, summary_json=None, state_dir=state_dir)
    by_index = {r.index: r for r in summary.scenes}
    for pos, pair in job.pair_of.items():
        r = by_index.get(pair)
        name = job.pairs[pair][0].name
        if r is not None and r.status in DONE_STATUSES and r.output_path:
            outcomes[pos] = Outcome(Path(r.output_path))
        elif r is None:
            outcomes[pos] = Outcome(None, f"{name}: the run reported nothing for it")
        else:
            message = r.message or r.reason or "failed"
            why = message if name in message else f"{name}: {message}"
            outcomes[pos] = Outcome(None, why, r.reason == Reason.ENHANCER_UNAVAILABLE)
    logger.info("%s on %s: %d of %d scenes done in %.1f s (%d worker(s))", summary.backend,
                summary.device, sum(1 for o in outcomes.values() if o.path), len(job.originals),
                summary.wall_seconds, summary.workers_started)
    return outcomes


__all__ = ["Job", "Outcome", "Progress", "plan_job", "run_job", "run_options",
           "TARGET_SAMPLE_RATE_HZ", "TARGET_SUBTYPE"]
