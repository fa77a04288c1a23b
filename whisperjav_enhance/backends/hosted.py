"""Hosted enhancers: any enhancer WhisperJAV's own factory can create (FFmpeg DSP, BS-RoFormer,
ClearVoice's other models, htdemucs, ZipEnhancer's ONNX variant, and whatever the factory gains
later), rebuilt inside a worker and called scene by scene, so it gets the same isolation,
recycling, crash, hang and quarantine handling as the native backends.

How the enhancer reaches the worker: by its recipe, never by pickling the object. The recipe is
the factory's backend name, the model, and the constructor settings that differ from their
defaults, all in the backend's canonical name::

    whisperjav:<backend>[:<model>][{"setting": value, ...}]
    whisperjav:bs-roformer:vocals
    whisperjav:ffmpeg-dsp:loudnorm,highpass
    whisperjav:clearvoice:FRCRN_SE_16K{"device": "cpu"}

The worker receives that name (``WorkerSpec.backend``), the registry turns it into a class bound
to the recipe (:func:`hosted_class`), and ``load`` calls
``SpeechEnhancerFactory.create(backend, model=model, **settings)`` and the object's
``_ensure_initialized()`` there, so downloads and model loading happen in the worker and a failure
is a load failure (``BackendUnavailable``). Rebuilding is deterministic; pickling a pipeline's
object is not (it may already hold a model, CUDA tensors, locks or a subprocess). Everything the
recipe needs is in the name, so it reaches the worker whatever route backend options take.

In the parent a run only asks the factory whether the backend exists and is available
(``is_backend_available``); the ``models`` listing (:func:`available_hosted`) also has the factory
create each backend's object to ask for its models (WhisperJAV's enhancers load nothing until
first used) and cleans it up. The parent never initialises an enhancer, so it never touches CUDA.

A scene the enhancer cannot clean fails alone with the enhancer's own words (``backend_error``);
WhisperJAV's ``SpeechEnhancerUnavailable`` raised on a scene fails it with ``enhancer_unavailable``,
which the drop-in turns back into that exception in the pipeline.
"""

from __future__ import annotations

import functools
import importlib
import json
import re
from dataclasses import dataclass
from typing import ClassVar

from ..errors import BackendUnavailable, ConfigError, SceneError, first_line
from ..status import Reason
from .base import Backend, WeightsInfo

PREFIX = "whisperjav:"
FACTORY_MODULE = "whisperjav.modules.speech_enhancement.factory"
# WhisperJAV's exception for "this clean-up cannot run" (1.9 line), recognised by name so the
# worker need not import WhisperJAV's base module to know it.
UNAVAILABLE_EXCEPTION = "SpeechEnhancerUnavailable"
# An enhancer's output may be a few samples off its input after its own resampling; more than
# this is a broken result (the scene's subtitle times would no longer match).
LENGTH_TOLERANCE_S = 0.05
_BACKEND_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_PLAIN = (str, int, float, bool, type(None))


def is_hosted_spec(spec) -> bool:
    """Whether ``spec`` is spelt ``whisperjav:...`` (a hosted enhancer)."""
    return isinstance(spec, str) and spec.strip().lower().startswith(PREFIX)


def is_plain_setting(value) -> bool:
    """Values a recipe can carry: JSON scalars and lists/dicts of them."""
    if isinstance(value, _PLAIN):
        return not isinstance(value, float) or value == value and abs(value) != float("inf")
    if isinstance(value, (list, tuple)):
        return all(is_plain_setting(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain_setting(v) for k, v in value.items())
    return False


@dataclass(frozen=True)
class HostedRecipe:
    """What the worker needs to rebuild the enhancer the pipeline configured."""

    backend: str                    # the factory's backend name, lower-case, e.g. "bs-roformer"
    model: str | None = None        # the factory's ``model`` argument; None: the backend's default
    settings: tuple = ()            # other constructor keywords as sorted (key, value) pairs

    def __post_init__(self):
        if not _BACKEND_NAME.match(self.backend or ""):
            raise ConfigError(f"hosted enhancer name {self.backend!r} is not a WhisperJAV backend "
                              "name (lower-case letters, digits, '-', '_', '.')")
        if self.model is not None and (not self.model.strip() or "{" in self.model):
            raise ConfigError(f"hosted enhancer {self.backend}: model {self.model!r} is not valid")
        keys = [k for k, _ in self.settings]
        if keys != sorted(set(keys)) or not all(k.isidentifier() and k != "model" for k in keys):
            raise ConfigError(f"hosted enhancer {self.backend}: settings must have distinct "
                              f"identifier keys other than 'model', in order, not {keys}")
        if not all(is_plain_setting(v) for _, v in self.settings):
            raise ConfigError(f"hosted enhancer {self.backend}: settings must be JSON values")

    @classmethod
    def make(cls, backend: str, model: str | None = None, settings: dict | None = None):
        return cls(backend.strip().lower(), model.strip() if model else None,
                   tuple(sorted((settings or {}).items())))

    @classmethod
    def parse(cls, spec: str) -> "HostedRecipe":
        """The recipe of a ``whisperjav:<backend>[:<model>][{json}]`` spelling (ConfigError if
        it is malformed). The backend is case-insensitive; the model keeps its case."""
        if not is_hosted_spec(spec):
            raise ConfigError(f"{spec!r} is not a hosted enhancer (spelt {PREFIX}<backend>[:<model>])")
        body = spec.strip()[len(PREFIX):]
        settings = {}
        if "{" in body:
            body, text = body[:body.index("{")], body[body.index("{"):]
            try:
                settings = json.loads(text)
            except ValueError as exc:
                raise ConfigError(f"{spec!r}: the settings after the model are not a JSON object "
                                  f"({exc})") from None
            if not isinstance(settings, dict):
                raise ConfigError(f"{spec!r}: the settings after the model must be a JSON object")
        backend, _, model = body.partition(":")
        return cls.make(backend, model or None, settings)

    @property
    def name(self) -> str:
        """The canonical spelling (the backend's name in summaries and worker specs)."""
        text = PREFIX + self.backend + (f":{self.model}" if self.model else "")
        if self.settings:
            text += json.dumps(dict(self.settings), sort_keys=True, separators=(",", ":"))
        return text

    def create_kwargs(self) -> dict:
        """Keyword arguments for ``SpeechEnhancerFactory.create(backend, **kwargs)``."""
        kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.settings}
        if self.model is not None:
            kwargs["model"] = self.model
        return kwargs

    def label(self) -> str:
        """For people: ``bs-roformer (vocals)``."""
        return self.backend + (f" ({self.model})" if self.model else "")


# -- WhisperJAV's factory ----------------------------------------------------------------------
def import_factory():
    """WhisperJAV's ``SpeechEnhancerFactory``; BackendUnavailable when WhisperJAV is not importable."""
    try:
        module = importlib.import_module(FACTORY_MODULE)
    except ImportError as exc:
        raise BackendUnavailable(
            f"hosted enhancers are built by WhisperJAV's own factory, and WhisperJAV cannot be "
            f"imported here ({exc}); install whisperjav-enhance into WhisperJAV's environment") from exc
    return module.SpeechEnhancerFactory


def factory_backends(factory) -> tuple[str, ...]:
    """Backend names from ``list_backends()`` (names, or records with a ``name``)."""
    names = []
    for item in factory.list_backends() or ():
        name = item.get("name") if isinstance(item, dict) else getattr(item, "name", item)
        if isinstance(name, str) and name.strip():
            names.append(name.strip().lower())
    return tuple(names)


def check_available(recipe: HostedRecipe) -> None:
    """The factory knows the backend and says it can run here; ConfigError / BackendUnavailable
    with the factory's own hint otherwise. Creates nothing."""
    factory = import_factory()
    names = factory_backends(factory)
    if recipe.backend not in names:
        raise ConfigError(f"WhisperJAV has no speech enhancer {recipe.backend!r}; it offers: "
                          f"{', '.join(names) or 'none'}")
    ok, hint = factory.is_backend_available(recipe.backend)
    if not ok:
        raise BackendUnavailable(f"WhisperJAV's {recipe.backend} enhancer is not usable on this "
                                 f"machine: {hint or 'no reason given'}")


# -- the backend -------------------------------------------------------------------------------
class HostedBackend(Backend):
    """One hosted enhancer; use :func:`hosted_class` to get the class bound to a recipe."""

    name: ClassVar[str] = PREFIX
    recipe: ClassVar[HostedRecipe | None] = None
    sample_rate = 48_000            # until loaded; then the enhancer's preferred rate
    windowed: ClassVar[bool] = False
    needs_cuda_for_speed: ClassVar[bool] = True   # most of WhisperJAV's enhancers are networks
    uses_torch: ClassVar[bool] = True

    def __init__(self, weights: WeightsInfo):
        super().__init__(weights)
        assert self.recipe is not None, "use hosted_class(name), not HostedBackend itself"
        self.display_name = self.recipe.label()
        self._enhancer = None

    @classmethod
    def resolve(cls, weights_path=None, **options) -> "HostedBackend":
        if cls.recipe is None:
            raise ConfigError("a hosted enhancer needs a name: whisperjav:<backend>[:<model>]")
        if weights_path is not None:
            raise ConfigError(f"{cls.name}: WhisperJAV's enhancers find their own weights; "
                              "--weights does not apply to them")
        if options:
            raise ConfigError(f"{cls.name} takes no backend options ({', '.join(sorted(options))}); "
                              "give the enhancer's settings as JSON after its name: "
                              f"{PREFIX}<backend>:<model>{{\"key\": value}}")
        check_available(cls.recipe)
        return cls(WeightsInfo(None, "whisperjav", False,
                               f"WhisperJAV's {cls.recipe.label()}, built in the worker"))

    def __reduce__(self):
        return _unloaded, (self.name, self.weights)

    # -- lifecycle (the worker) ----------------------------------------------------------------
    def load(self, device) -> None:
        from ..audio import MAX_SAMPLE_RATE_HZ, MIN_SAMPLE_RATE_HZ

        recipe = self.recipe
        try:
            enhancer = import_factory().create(recipe.backend, **recipe.create_kwargs())
        except BackendUnavailable:
            raise
        except Exception as exc:
            raise BackendUnavailable(f"WhisperJAV could not create {recipe.name}: "
                                     f"{type(exc).__name__}: {first_line(exc)}") from exc
        if str(getattr(enhancer, "name", "")).lower() == "none" and recipe.backend != "none":
            _cleanup(enhancer)
            raise BackendUnavailable(f"WhisperJAV's factory fell back to no clean-up instead of "
                                     f"{recipe.label()} (it is not usable in the worker)")
        self.display_name = str(getattr(enhancer, "display_name", "") or recipe.label())
        try:
            warm = getattr(enhancer, "_ensure_initialized", None)
            if callable(warm):
                warm()  # loads (and downloads) the model here, not inside the first scene
            rate = int(enhancer.get_preferred_sample_rate())
        except Exception as exc:
            _cleanup(enhancer)
            raise BackendUnavailable(f"{self.display_name} could not start in the worker: "
                                     f"{type(exc).__name__}: {first_line(exc)}") from exc
        if not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ:
            _cleanup(enhancer)
            raise BackendUnavailable(f"{self.display_name} asks for audio at {rate} Hz")
        self._enhancer, self.sample_rate, self.device = enhancer, rate, device

    def close(self) -> None:
        enhancer, self._enhancer = self._enhancer, None
        if enhancer is not None:
            _cleanup(enhancer)

    # -- inference -----------------------------------------------------------------------------
    def enhance_scene(self, audio):
        """The enhancer's result for one scene. Its exceptions propagate (the worker fails this
        scene alone, or retires on a CUDA error), except SpeechEnhancerUnavailable, which fails
        the scene with ``enhancer_unavailable`` in the enhancer's own words."""
        try:
            result = self._enhancer.enhance(audio, self.sample_rate)
        except Exception as exc:
            if any(c.__name__ == UNAVAILABLE_EXCEPTION for c in type(exc).__mro__):
                raise SceneError(Reason.ENHANCER_UNAVAILABLE, first_line(exc)) from exc
            raise
        if getattr(result, "success", False):
            return self._fit(result, audio.shape[0])
        why = getattr(result, "error_message", None) or "it reported a failure without a reason"
        raise SceneError(Reason.BACKEND_ERROR, f"{self.display_name} did not clean this scene: {why}")

    def _fit(self, result, n: int):
        """The result as mono float32 at ``sample_rate``, exactly ``n`` samples long."""
        import numpy as np

        from ..audio import fit_length, resample

        y = np.asarray(result.audio, dtype=np.float32)
        if y.ndim == 2:  # channels first or last: the short axis is the channels
            y = y.mean(axis=0 if y.shape[0] <= y.shape[1] else 1)
        if y.ndim != 1 or y.size == 0:
            raise SceneError(Reason.BACKEND_ERROR, f"{self.display_name} returned audio of shape "
                             f"{tuple(np.shape(result.audio))}")
        rate = int(getattr(result, "sample_rate", 0) or self.sample_rate)
        if rate != self.sample_rate:
            y = resample(y, rate, self.sample_rate)
        if abs(y.shape[0] - n) > LENGTH_TOLERANCE_S * self.sample_rate:
            raise SceneError(Reason.BACKEND_ERROR, f"{self.display_name} returned "
                             f"{y.shape[0] / self.sample_rate:.3f} s of audio for a "
                             f"{n / self.sample_rate:.3f} s scene")
        return np.ascontiguousarray(fit_length(y, n), dtype=np.float32)

    def describe(self) -> dict:
        return dict(super().describe(), display_name=self.display_name)


@functools.lru_cache(maxsize=None)
def _bound(name: str) -> type[HostedBackend]:
    recipe = HostedRecipe.parse(name)
    return type(f"HostedBackend[{name}]", (HostedBackend,),
                {"name": name, "recipe": recipe, "__module__": __name__})


def hosted_class(spec: str) -> type[HostedBackend]:
    """The backend class bound to ``spec``'s recipe (one class per canonical name)."""
    return _bound(HostedRecipe.parse(spec).name)


def _unloaded(name: str, weights: WeightsInfo) -> HostedBackend:
    return hosted_class(name)(weights)


def _cleanup(enhancer) -> None:
    try:
        enhancer.cleanup()
    except Exception:  # cleanup is best effort: the worker is about to leave anyway
        pass


# -- listing (the `models` command) ------------------------------------------------------------
@dataclass(frozen=True)
class HostedInfo:
    """One enhancer WhisperJAV's factory offers, as `whisperjav-enhance models` lists it."""

    backend: str                 # the factory's name, e.g. "bs-roformer"
    spelling: str                # what --backend accepts for its default model
    models: tuple[str, ...]      # get_supported_models(); () when unknown or unavailable
    available: bool              # is_backend_available(backend)[0]
    hint: str                    # the factory's hint when unavailable (how to install it)


def available_hosted() -> tuple[HostedInfo, ...]:
    """Every enhancer WhisperJAV's factory lists (``none`` excepted), with its models and whether
    it can run here; () when WhisperJAV is not importable. Creates lazy objects to ask for their
    models, never initialises one."""
    try:
        factory = import_factory()
    except BackendUnavailable:
        return ()
    infos = []
    for backend in factory_backends(factory):
        if backend == "none":
            continue
        try:
            ok, hint = factory.is_backend_available(backend)
        except Exception as exc:
            ok, hint = False, first_line(exc)
        models = _models_of(factory, backend) if ok else ()
        infos.append(HostedInfo(backend, PREFIX + backend, models, bool(ok), str(hint or "")))
    return tuple(infos)


def _models_of(factory, backend: str) -> tuple[str, ...]:
    """``get_supported_models()`` of the factory's (lazy) object; () when it cannot say."""
    enhancer = None
    try:
        enhancer = factory.create(backend)
        return tuple(str(m) for m in (enhancer.get_supported_models() or ()))
    except Exception:  # a listing shows what it can; this backend just lists no models
        return ()
    finally:
        if enhancer is not None:
            _cleanup(enhancer)


__all__ = ["PREFIX", "HostedRecipe", "HostedBackend", "HostedInfo",
           "hosted_class", "is_hosted_spec", "is_plain_setting", "check_available",
           "available_hosted", "import_factory", "factory_backends"]
