"""Which of our backends runs the enhancer a pipeline hands over, and what it is called for people.

MossFormer2_SE_48K (``clearvoice``'s default) and ZipEnhancer's ``torch`` variant run on this
package's native batched engine; ``none`` is our passthrough. Every other enhancer WhisperJAV can
create is hosted: its recipe (the factory's backend name, the model, and the constructor settings
that differ from their defaults, read from the object) becomes a ``whisperjav:...`` backend name,
and a worker rebuilds it with WhisperJAV's factory (backends/hosted.py).

Constructor settings are read without calling anything on the object: for each keyword of the
class's ``__init__`` (``model`` aside), the instance attribute of that name or with a leading
underscore, when its value is plain JSON data and differs from the default. Values that are not
plain data (a torch device, a callback) cannot travel to a worker and are left to their defaults
there; they are listed in the debug log.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass

from ...backends import hosted, parse_backend_spec
from ...errors import ConfigError

logger = logging.getLogger("whisperjav_enhance.integrations.whisperjav")

# Where WhisperJAV's classes keep their model (ClearVoice and BS-RoFormer: _model_name,
# ZipEnhancer: model_variant, FFmpeg DSP: its effect chain), in the order they are tried.
MODEL_ATTRIBUTES = ("_model_name", "model_variant", "model_name", "model", "effects")
# Object names that differ from the factory's backend name.
FACTORY_NAME_OF_OBJECT = {"ffmpeg": "ffmpeg-dsp"}


@dataclass(frozen=True)
class Target:
    """What runs for one enhancer."""

    spec: str           # EnhanceOptions.backend: a native spelling or a hosted whisperjav:... name
    display_name: str   # the clean-up's name for people (the enhancer's own display_name if any)
    hosted: bool        # True: WhisperJAV's own class runs in the workers

    def __post_init__(self):
        if not self.spec or not self.display_name:
            raise ConfigError("an enhancer target needs a spec and a display name")
        assert self.hosted == hosted.is_hosted_spec(self.spec)


def target_for(enhancer) -> Target:
    """The target of a ``"backend[:model]"`` string or an enhancer-like object (``name`` plus
    an optional model attribute); ConfigError for anything else."""
    spec = enhancer_spec(enhancer)
    if isinstance(enhancer, str):
        return Target(spec, enhancer.strip(), hosted.is_hosted_spec(spec))
    shown = getattr(enhancer, "display_name", None)
    if not isinstance(shown, str) or not shown.strip():
        model = model_of(enhancer)
        shown = enhancer.name.strip() + (f" ({model})" if model else "")
    return Target(spec, shown.strip(), hosted.is_hosted_spec(spec))


def enhancer_spec(enhancer) -> str:
    """``"backend[:model]"`` (native) or ``"whisperjav:..."`` (hosted) for an enhancer."""
    if isinstance(enhancer, str):
        return _spec_for_string(enhancer)
    name = getattr(enhancer, "name", None)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("enhancer must be a 'backend[:model]' string or an object with a "
                          f"'name' attribute, not {type(enhancer).__name__}")
    return _spec_for_object(enhancer, name.strip(), model_of(enhancer))


def model_of(enhancer) -> str | None:
    """The object's model, wherever its class keeps it."""
    for attr in MODEL_ATTRIBUTES:
        value = getattr(enhancer, attr, None)
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
            value = ",".join(v.strip() for v in value)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _spec_for_string(text: str) -> str:
    spec = text.strip()
    if not spec:
        raise ConfigError("enhancer name is empty")
    try:
        parse_backend_spec(spec)
        return spec  # a native spelling, or already whisperjav:...
    except ConfigError:
        pass
    backend, _, model = spec.partition(":")
    backend = FACTORY_NAME_OF_OBJECT.get(backend.strip().lower(), backend)
    return hosted.HostedRecipe.make(backend, model or None).name


def _spec_for_object(enhancer, name: str, model: str | None) -> str:
    backend, _, named_model = name.partition(":")  # a spelling as the name: "clearvoice:X"
    model = model or named_model or None
    backend = FACTORY_NAME_OF_OBJECT.get(backend.lower(), backend.lower())
    explicit = getattr(enhancer, "hosted_settings", None)  # PoolEnhancer's explicit settings
    if not explicit:
        spelling = f"{backend}:{model}" if model else backend
        try:
            parse_backend_spec(spelling)
            return spelling  # served natively (MossFormer2_SE_48K, ZipEnhancer torch, none, ...)
        except ConfigError:
            pass
    settings = explicit if isinstance(explicit, dict) else constructor_settings(enhancer)
    return hosted.HostedRecipe.make(backend, model, settings).name


def constructor_settings(enhancer) -> dict:
    """The object's constructor settings that differ from their defaults (see the module doc)."""
    try:
        params = list(inspect.signature(type(enhancer).__init__).parameters.values())[1:]
    except (TypeError, ValueError):
        return {}
    state = getattr(enhancer, "__dict__", {})
    settings, dropped = {}, []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name == "model":
            continue
        for attr in (p.name, "_" + p.name):
            if attr not in state:
                continue
            value = state[attr]
            if not hosted.is_plain_setting(value):
                dropped.append(p.name)
            elif p.default is p.empty or value != p.default:
                settings[p.name] = list(value) if isinstance(value, tuple) else value
            break
    if dropped:
        logger.debug("%s: settings %s are not plain data and keep their defaults in the worker",
                     type(enhancer).__name__, ", ".join(dropped))
    return settings


__all__ = ["Target", "target_for", "enhancer_spec", "model_of", "constructor_settings"]
