"""What one strategy did (:class:`StrategyResult`), how its scenes are counted, and how results of
several commands join into one table (``--append``) or one median (``--repeat``)."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from whisperjav_enhance.errors import ConfigError, SceneError
from whisperjav_enhance.status import NOT_RECYCLES, Status

# A strategy's own status (not a scene's).
RAN, SKIPPED, ERROR = "ran", "skipped", "error"
# Why the benchmark counts a scene as failed although the product said "enhanced".
BAD_OUTPUT = "bad_output"      # the output is missing or not exactly as long as the input
UNKNOWN = "unknown"            # failed without a reason


@dataclass(frozen=True)
class StrategyResult:
    """What one strategy did; one object per strategy in results.json."""

    strategy: str                       # Strategy.name
    description: str                    # Strategy.description
    requires_cuda: bool                 # Strategy.requires_cuda
    status: str                         # RAN, SKIPPED or ERROR (the harness could not run it)
    reason: str | None                  # why skipped / what went wrong; None when it ran
    device: str                         # "cpu" or "cuda:N"
    backend: str                        # canonical backend name
    weights: dict | None                # WeightsInfo.as_dict(): which weights ran (random or not)
    scenes_total: int                   # scenes in the set
    scenes_ok: int = 0                  # enhanced, output present and as long as the input
    scenes_failed: int = 0              # every other scene (failure_reasons says why)
    failure_reasons: dict = field(default_factory=dict)  # reason -> count
    audio_seconds: float = 0.0          # audio in the scenes that ended ok
    wall_seconds: float | None = None   # start of model load / pool start to last scene written
    audio_seconds_per_second: float | None = None  # audio_seconds / wall_seconds
    peak_reserved_mib: dict = field(default_factory=dict)   # process -> peak reserved (None on CPU)
    peak_allocated_mib: dict = field(default_factory=dict)  # process -> peak allocated (None on CPU)
    allocated_is_peak: bool = True      # False: some telemetry carried no allocated peak, so the
                                        # values are the largest allocated seen after a unit
    peak_rss_mib: dict = field(default_factory=dict)        # process -> largest RSS seen (MiB)
    alloc_retries: int | None = None    # cudaMalloc retries summed over processes (None on CPU)
    oom_events: int = 0                 # out-of-memory errors seen by the allocator/engine
    recycles: dict = field(default_factory=dict)  # reason -> count (reloads for reload-every-n)
    workers_started: int = 0            # processes that loaded the model (1 for in-process)
    workers_at_once: int = 1            # most model processes alive at one time
    worker_crashes: int = 0             # workers that died without retiring
    startup_wait_seconds: float = 0.0   # time no model was ready: pool start-up waits, or the
                                        # model loads of an in-process loop
    first_ready_seconds: float | None = None  # start -> first model ready (part of the above)
    batch_sizes: dict = field(default_factory=dict)  # padded window samples -> batch size used
    worker_pids: dict = field(default_factory=dict)  # worker id -> process id (pool only)
    wall_seconds_runs: list = field(default_factory=list)  # every repeat's wall (--repeat)
    settings: dict = field(default_factory=dict)     # knobs this strategy ran with
    series: list = field(default_factory=list)       # memory samples for the plots

    def __post_init__(self):
        if self.status not in (RAN, SKIPPED, ERROR):
            raise ValueError(f"status must be ran, skipped or error, not {self.status!r}")
        if (self.status == RAN) == bool(self.reason):
            raise ValueError("a strategy that ran has no reason; one that did not must have one")
        if self.scenes_ok + self.scenes_failed > self.scenes_total:
            raise ValueError(f"{self.strategy}: more outcomes than scenes")

    @property
    def recycle_cost_seconds(self) -> float | None:
        """Waiting per recycle: start-up waits beyond the first start, per worker retired for
        its scene count or its memory (None when nothing was recycled)."""
        n = sum(v for k, v in self.recycles.items() if k not in NOT_RECYCLES and k != "reload")
        if self.status != RAN or not n or self.first_ready_seconds is None:
            return None
        return max(0.0, self.startup_wait_seconds - self.first_ready_seconds) / n


def not_run(s, status: str, reason: str, ctx) -> StrategyResult:
    """The result of a strategy that was skipped (status SKIPPED) or could not run (ERROR)."""
    return StrategyResult(s.name, s.description, s.requires_cuda, status, reason,
                          ctx.slot.label, ctx.backend, ctx.weights_dict, len(ctx.scene_paths))


# -- counting ------------------------------------------------------------------------------------
def count_outcomes(ctx, statuses, reasons, outputs) -> tuple[int, int, dict, float]:
    """(ok, failed, reason -> count, audio seconds ok): a scene is ok when the product says it
    was enhanced and its output exists exactly as long as its input."""
    from whisperjav_enhance.audio import probe

    ok, audio_s, failed = 0, 0.0, {}
    for path, dur, status, reason, out in zip(ctx.scene_paths, ctx.durations, statuses, reasons,
                                              outputs):
        if status == Status.ENHANCED:
            try:
                same = out is not None and probe(out).frames == probe(path).frames
            except SceneError:
                same = False
            if same:
                ok += 1
                audio_s += dur
                continue
            reason = BAD_OUTPUT
        failed[reason or UNKNOWN] = failed.get(reason or UNKNOWN, 0) + 1
    return ok, sum(failed.values()), failed, audio_s


def rate(audio_s: float, wall_s: float | None) -> float | None:
    return audio_s / wall_s if wall_s else None


def largest(values) -> float | None:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


# -- several runs into one table ---------------------------------------------------------------
def median_of_repeats(runs: list[StrategyResult]) -> StrategyResult:
    """The run with the median wall time (the lower middle for an even count), carrying every
    run's wall; a strategy that did not run every time is the first run that did not."""
    assert runs, "no runs to combine"
    for r in runs:
        if r.status != RAN:
            return r
    walls = [r.wall_seconds for r in runs]
    mid = statistics.median_low(walls)
    chosen = runs[walls.index(mid)]
    return replace(chosen, wall_seconds_runs=[round(w, 3) for w in walls])


# What must be equal for results of two commands to share one table (--append).
COMPARABLE = ("set", "seed", "scene_set_fingerprint", "backend", "backend_options",
              "scenes_per_recycle", "batch_seconds", "vram_budget_gb")


def _weights_identity(w: dict | None):
    """Random weights are rewritten (to a new temporary path) on every run; real ones must match."""
    if not w:
        return None
    return ("random", w.get("description")) if w.get("random_test_weights") else (w.get("path"),)


def previous_results(out: Path, meta: dict) -> list[StrategyResult]:
    """Results already in ``out`` that a run with ``meta`` may be merged with (--append); their
    commands are prepended to ``meta["commands"]``."""
    path = out / "results.json"
    if not path.exists():
        return []
    try:
        doc = json.loads(path.read_text())
        old, results = doc["meta"], [StrategyResult(**d) for d in doc["strategies"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--append: {path} is not a results file of this harness ({exc})")
    differ = [k for k in COMPARABLE if old.get(k) != meta.get(k)]
    if old["environment"].get("device") != meta["environment"]["device"]:
        differ.append("device")
    if _weights_identity(old.get("weights")) != _weights_identity(meta.get("weights")):
        differ.append("weights")
    if differ:
        raise ConfigError(f"--append: {out} holds results of a different run (differs in "
                          f"{', '.join(differ)}); use a new --out")
    meta["commands"] = list(old.get("commands") or [old["environment"]["command"]]) + meta["commands"]
    return results


def merge(previous: list[StrategyResult], new: list[StrategyResult],
          order: tuple[str, ...]) -> list[StrategyResult]:
    """One table: strategies run now replace earlier results of the same name; ``order``."""
    by_name = {r.strategy: r for r in previous}
    by_name.update({r.strategy: r for r in new})
    rank = {n: i for i, n in enumerate(order)}
    return sorted(by_name.values(), key=lambda r: rank.get(r.strategy, len(rank)))


def load_results(folder: Path) -> tuple[list[StrategyResult], dict]:
    """The strategies and meta of a results folder's results.json."""
    doc = json.loads((Path(folder) / "results.json").read_text())
    return [StrategyResult(**d) for d in doc["strategies"]], doc["meta"]


def as_json(results: list[StrategyResult], meta: dict) -> str:
    return json.dumps({"meta": meta, "strategies": [asdict(r) for r in results]}, indent=1,
                      default=str) + "\n"
