"""Drop-in for WhisperJAV's ``speech_enhancement.enhance_scenes`` with the same contract, run
through this package's isolated worker pool and cross-scene batching.

Contract (DESIGN.md, "WhisperJAV contract"):

- ``scene_paths``: list of ``(scene_path, start_sec, end_sec, duration_sec)``; scenes are mono
  PCM_16 WAVs named ``<media>_scene_<idx:04d>.wav`` (48 kHz when an enhancer is configured).
- Returns a list of the same length and order. An enhanced scene's tuple has its path replaced
  by ``temp_dir/"enhanced_scenes"/f"{stem}_enhanced.wav"`` (16 kHz mono PCM_16) and the times
  unchanged; a scene that failed keeps its original tuple (the very same object).
- ``progress_callback(n, total, name)`` is called once per scene as it reaches its final state,
  ``n`` counting 1..total in completion order, ``name`` the scene file's name.
- ``enhancer``: a ``"backend[:model]"`` string (``clearvoice``, ``clearvoice:MossFormer2_SE_48K``,
  ``zipenhancer``, ``none``, ``mossformer2``, ...) or an object with a ``name`` attribute and
  optionally ``model`` / ``model_name`` (WhisperJAV's own enhancer objects qualify; they are never
  called, so they load nothing). The caller's ``enhancer.cleanup()`` afterwards is harmless: the
  calling process never holds GPU memory from this step, the workers are gone when it returns.

Failures: a scene that fails never raises; it keeps its original tuple and is logged. When
enhancement cannot run at all (no weights, unknown backend, unusable device, unwritable
``temp_dir``), the default is WhisperJAV's original behaviour: log an error and return the scenes
unenhanced, so the subtitle run goes on. Pipelines that would rather stop (WhisperJAV's newer rule:
"a component the user chose that cannot start is a failure") pass ``strict=True``: the
EnhanceError is raised, and so is one when every scene failed. ``degradations``, when given, gets
one plain-language line whenever scenes went through unenhanced. Ctrl-C raises KeyboardInterrupt
after the workers are stopped.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Callable, Sequence

from ..config import EnhanceOptions, PoolPolicy
from ..errors import ConfigError, EnhanceError, RunInterrupted
from ..events import SceneFinished

logger = logging.getLogger("whisperjav_enhance.integrations.whisperjav")

ENHANCED_DIR_NAME = "enhanced_scenes"   # sub-folder of temp_dir WhisperJAV expects
TARGET_SAMPLE_RATE_HZ = 16_000          # what the recogniser after this step reads
SCENE_EXTRACTION_SAMPLE_RATE_HZ = 48_000  # what WhisperJAV should cut scenes at for this step

SceneTuple = tuple  # (scene_path, start_sec, end_sec, duration_sec)


def enhancer_spec(enhancer) -> str:
    """``"backend[:model]"`` for a string or an enhancer-like object."""
    if isinstance(enhancer, str):
        spec = enhancer.strip()
    else:
        name = getattr(enhancer, "name", None)
        if not isinstance(name, str) or not name.strip():
            raise ConfigError("enhancer must be a 'backend[:model]' string or an object with a "
                              f"'name' attribute, not {type(enhancer).__name__}")
        model = None
        for attr in ("model", "model_name", "_model_name"):
            value = getattr(enhancer, attr, None)
            if isinstance(value, str) and value.strip():
                model = value.strip()
                break
        spec = name.strip() if (model is None or ":" in name) else f"{name.strip()}:{model}"
    if not spec:
        raise ConfigError("enhancer name is empty")
    return spec


def enhance_scenes(scene_paths: Sequence[SceneTuple], enhancer, temp_dir,
                   progress_callback: Callable[[int, int, str], None] | None = None,
                   degradations: list | None = None, *, strict: bool = False,
                   options: EnhanceOptions | None = None, policy: PoolPolicy | None = None,
                   on_event: Callable[[object], None] | None = None) -> list:
    """Enhance WhisperJAV scene tuples; see the module docstring for the contract.

    ``options``/``policy`` tune the run (device, batching, workers); the backend comes from
    ``enhancer`` and the output format is fixed by the contract (16 kHz mono PCM_16, always
    rewritten). ``on_event`` receives this package's progress events.
    """
    if not scene_paths:
        return scene_paths
    originals = list(scene_paths)
    total = len(originals)
    progress = _Progress(progress_callback, total)
    try:
        return _run(originals, enhancer, Path(temp_dir), progress, degradations, strict,
                    options, policy, on_event)
    except RunInterrupted:
        raise KeyboardInterrupt("speech enhancement interrupted; workers stopped") from None
    except EnhanceError as exc:
        if strict:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        logger.error("Speech enhancement could not run (%s); continuing with the %d scenes "
                     "unenhanced.", str(exc).strip(), total)
        if degradations is not None:
            degradations.append(f"speech enhancement did not run, all {total} scenes went through "
                                f"unenhanced ({first})")
        progress.finish_remaining(originals)
        return originals


class _Progress:
    """Calls the pipeline's callback once per scene, n = 1..total, never letting it raise."""

    def __init__(self, callback, total: int):
        self.callback = callback
        self.total = total
        self.done: set[int] = set()
        self.warned = False

    def report(self, position: int, name: str) -> None:
        if position in self.done:
            return
        self.done.add(position)
        if self.callback is None:
            return
        try:
            self.callback(len(self.done), self.total, name)
        except Exception as exc:  # a broken progress bar must not cost the enhancement
            if not self.warned:
                logger.warning("progress_callback raised %r; ignoring it from now on", exc)
                self.warned = True

    def finish_remaining(self, originals) -> None:
        for pos, item in enumerate(originals):
            self.report(pos, Path(item[0]).name)


def _run(originals, enhancer, temp_dir: Path, progress: _Progress, degradations, strict,
         options, policy, on_event) -> list:
    from ..pipeline import run_scenes
    from ..scenes import scenes_from_pairs

    spec = enhancer_spec(enhancer)
    out_dir = temp_dir / ENHANCED_DIR_NAME
    opts = dataclasses.replace(options or EnhanceOptions(), backend=spec,
                               output_sample_rate=TARGET_SAMPLE_RATE_HZ, output_subtype="PCM_16",
                               clip="clip", overwrite=True)

    # One output per distinct input; the same file listed twice shares its result, and a
    # different file whose stem is already taken keeps its original tuple (its output name is
    # fixed by the contract, so it cannot be written without clobbering another scene's).
    pairs, clashes = [], []
    first_position: dict[str, int] = {}   # resolved input -> pair number
    stem_owner: dict[str, str] = {}       # output name -> resolved input
    pair_for_position: dict[int, int] = {}
    for pos, item in enumerate(originals):
        if not isinstance(item, (tuple, list)) or len(item) != 4:
            raise ConfigError(f"scene {pos + 1} is not a (path, start, end, duration) tuple: {item!r}")
        path = Path(item[0])
        key = str(path.resolve())
        if key in first_position:
            pair_for_position[pos] = first_position[key]
            continue
        out_name = f"{path.stem}_enhanced.wav"
        if stem_owner.get(out_name.casefold(), key) != key:
            clashes.append(pos)
            continue
        stem_owner[out_name.casefold()] = key
        first_position[key] = len(pairs)
        pair_for_position[pos] = len(pairs)
        pairs.append((path, out_name))
    scenes = scenes_from_pairs(pairs, out_dir)

    positions_of_scene: dict[int, list[int]] = {}
    for pos, pair in pair_for_position.items():
        positions_of_scene.setdefault(pair, []).append(pos)

    def handle(event):
        if isinstance(event, SceneFinished):
            for pos in positions_of_scene.get(event.index, ()):
                progress.report(pos, Path(originals[pos][0]).name)
            if event.status == "failed":
                logger.warning("Scene %s not enhanced (%s: %s); using the original.",
                               Path(event.input_path).name, event.reason, event.message)
        if on_event is not None:
            on_event(event)

    logger.info("Enhancing %d scenes with %s (output %d Hz mono PCM_16 in %s)", len(originals),
                spec, TARGET_SAMPLE_RATE_HZ, out_dir)
    summary = run_scenes(scenes, out_dir, opts, policy or PoolPolicy(), handle,
                         manifest_path=None, summary_json=None)

    result = list(originals)
    failed: list[tuple[int, str]] = []
    by_scene = {r.index: r for r in summary.scenes}
    for pos, item in enumerate(originals):
        r = by_scene.get(pair_for_position.get(pos, -1))
        if r is not None and r.status in ("enhanced", "skipped") and r.output_path:
            result[pos] = (Path(r.output_path), item[1], item[2], item[3])
        else:
            reason = (f"{r.reason}: {r.message}" if r is not None
                      else "another scene has the same file name")
            failed.append((pos, reason))
    for pos in clashes:
        logger.warning("Scene %s not enhanced: another scene already uses the output name %s",
                       originals[pos][0], f"{Path(originals[pos][0]).stem}_enhanced.wav")
    progress.finish_remaining(originals)

    if failed:
        note = (f"{len(failed)} of {len(originals)} scenes went through without being cleaned up "
                f"by {spec} (first: {failed[0][1]})")
        if strict and len(failed) == len(originals):
            raise EnhanceError(f"{spec} failed on every one of the {len(originals)} scenes, so "
                               f"nothing was cleaned up; first failure: {failed[0][1]}")
        logger.warning(note)
        if degradations is not None:
            degradations.append(note)
    logger.info("Enhancement complete: %d/%d scenes in %.1f s (%s on %s, %d worker(s))",
                len(originals) - len(failed), len(originals), summary.wall_seconds,
                summary.backend, summary.device, summary.workers_started)
    return result


class PoolEnhancer:
    """A WhisperJAV-style enhancer object backed by this package.

    Pass it where WhisperJAV passes its enhancer: ``name``/``model`` select the backend, the
    sample-rate getters tell the pipeline to cut scenes at 48 kHz, and ``cleanup()`` is a no-op
    because nothing is ever loaded in the calling process.
    """

    def __init__(self, backend: str = "clearvoice", model: str | None = None,
                 options: EnhanceOptions | None = None, policy: PoolPolicy | None = None):
        self.name = backend
        self.model = model
        self.options = options
        self.policy = policy

    @property
    def display_name(self) -> str:
        return f"whisperjav-enhance ({enhancer_spec(self)})"

    def get_preferred_sample_rate(self) -> int:
        return SCENE_EXTRACTION_SAMPLE_RATE_HZ

    def get_output_sample_rate(self) -> int:
        return TARGET_SAMPLE_RATE_HZ

    def enhance_scenes(self, scene_paths, temp_dir, progress_callback=None, degradations=None,
                       strict: bool = False) -> list:
        return enhance_scenes(scene_paths, self, temp_dir, progress_callback, degradations,
                              strict=strict, options=self.options, policy=self.policy)

    def cleanup(self) -> None:
        """Nothing to release: models live only in worker processes, which have exited."""

    def __repr__(self) -> str:
        return f"PoolEnhancer({enhancer_spec(self)!r})"


__all__ = ["enhance_scenes", "enhancer_spec", "PoolEnhancer", "ENHANCED_DIR_NAME",
           "TARGET_SAMPLE_RATE_HZ", "SCENE_EXTRACTION_SAMPLE_RATE_HZ"]
