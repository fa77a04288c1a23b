"""The strategies the benchmark compares: every candidate fix for the subtitle pipeline's
out-of-memory failures, the status quo, the pool this project ships in its variants, and the
backend's runtime called directly (what process isolation is measured against).

A strategy is data: a name, a description, which runner executes it (``kind``) and that
runner's knobs. The runners are :mod:`.inprocess` (status quo, in-process loops, direct runtime,
each in a fresh spawned process) and :mod:`.poolrun` (the product's pipeline)."""

from __future__ import annotations

from dataclasses import dataclass, field

from whisperjav_enhance.errors import ConfigError

KINDS = ("upstream", "inprocess", "direct", "pool")


@dataclass(frozen=True)
class Strategy:
    """One way of running the enhancer over the scenes."""

    name: str                  # stable identifier used on the command line and in results
    description: str           # one line for the table and README
    requires_cuda: bool        # meaningless without a CUDA device (skipped with the reason)
    kind: str                  # which runner executes it (KINDS)
    params: dict = field(default_factory=dict)  # runner knobs. In-process: empty_cache,
    # expandable, reload_every (bools). Pool: batched (duration units, else one scene per unit),
    # max_scenes (1, "n" = --scenes-per-recycle, None = never, "default" = PoolPolicy's),
    # drift (drift recycling on), standby (warm standby), shipped_default (PoolPolicy() as is),
    # workers (worker slots per device), standbys (warm standbys per slot at most); absent =
    # the policy's defaults

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown strategy kind {self.kind!r}")
        if not self.name or not self.description:
            raise ValueError("a strategy needs a name and a description")


STRATEGIES: tuple[Strategy, ...] = (
    Strategy("upstream-clearvoice",
             "status quo: clearvoice's own numpy path (decode_one_audio_mossformer2_se_48k), "
             "autograd on, whole scene per forward, one process",
             requires_cuda=False, kind="upstream"),
    Strategy("inprocess-scene",
             "ours in one process: inference mode, whole scene per forward (window >= longest "
             "scene, batch 1)", requires_cuda=False, kind="inprocess"),
    Strategy("inprocess-scene-emptycache",
             "inprocess-scene + torch.cuda.empty_cache() after every scene",
             requires_cuda=True, kind="inprocess", params={"empty_cache": True}),
    Strategy("inprocess-expandable",
             "inprocess-scene with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True (set before "
             "CUDA starts, in a fresh process)",
             requires_cuda=True, kind="inprocess", params={"expandable": True}),
    Strategy("reload-every-n",
             "inprocess-scene, model dropped and reloaded every N scenes in the same process",
             requires_cuda=False, kind="inprocess", params={"reload_every": True}),
    Strategy("subprocess-per-scene",
             "pool, one fresh worker process per scene (max_scenes_per_worker=1, no standby)",
             requires_cuda=False, kind="pool",
             params={"batched": False, "max_scenes": 1, "drift": False, "standby": False}),
    Strategy("pool-recycle-n",
             "pool, one scene per unit, worker recycled every N scenes (no drift check, no standby)",
             requires_cuda=False, kind="pool",
             params={"batched": False, "max_scenes": "n", "drift": False, "standby": False}),
    Strategy("pool-recycle-drift",
             "pool, one scene per unit, worker recycled only on allocator drift (no standby)",
             requires_cuda=False, kind="pool",
             params={"batched": False, "max_scenes": None, "drift": True, "standby": False}),
    Strategy("pool-batched",
             "pool + duration batching (windows of many scenes per forward), default recycling, "
             "no standby", requires_cuda=False, kind="pool",
             params={"batched": True, "max_scenes": "default", "drift": True, "standby": False}),
    Strategy("pool-batched-standby",
             "pool + duration batching + warm standby: the shipped default (default workers)",
             requires_cuda=False, kind="pool",
             params={"batched": True, "max_scenes": "default", "drift": True, "standby": True,
                     "shipped_default": True}),
    Strategy("pool-batched-standby-n",
             "pool + duration batching + warm standby, worker recycled every N scenes: what a "
             "recycle costs when a standby hides the start",
             requires_cuda=False, kind="pool",
             params={"batched": True, "max_scenes": "n", "drift": True, "standby": True}),
    Strategy("direct-runtime",
             "the backend's runtime called directly in one process, scenes in order, as a worker "
             "would call it but with no pool around it (DeepFilterNet3: the libDF runtime)",
             requires_cuda=False, kind="direct"),
    Strategy("pool-one-worker",
             "the shipped default with one worker: against direct-runtime, what isolation costs",
             requires_cuda=False, kind="pool",
             params={"batched": True, "max_scenes": "default", "drift": True, "standby": True,
                     "shipped_default": True, "workers": 1}),
)
STRATEGY_NAMES = tuple(s.name for s in STRATEGIES)


def strategy(name: str) -> Strategy:
    """The strategy called ``name``; a ConfigError listing the names otherwise."""
    for s in STRATEGIES:
        if s.name == name:
            return s
    raise ConfigError(f"unknown strategy {name!r}; choose from {', '.join(STRATEGY_NAMES)}")


def selected(spec: str | None) -> list[Strategy]:
    """The strategies of a comma-separated ``--strategies`` value (all when empty), in the
    order given."""
    if not spec:
        return list(STRATEGIES)
    names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise ConfigError("--strategies names no strategy")
    return [strategy(n) for n in names]
