"""Backend registry: names (and the subtitle pipeline's spellings of them), lazy imports, and the
``auto`` choice. Importing this module imports no network code."""

from __future__ import annotations

import importlib

from ..errors import BackendUnavailable, ConfigError, WeightsError
from . import hosted as _hosted
from .base import Backend, WeightsInfo, install_hint

# canonical name -> "module:Class" (imported only when used)
_CLASSES = {
    "mossformer2": "whisperjav_enhance.backends.mossformer2:MossFormer2Backend",
    "zipenhancer": "whisperjav_enhance.backends.zipenhancer:ZipEnhancerBackend",
    "deepfilternet": "whisperjav_enhance.backends.deepfilternet:DeepFilterNetBackend",
    "passthrough": "whisperjav_enhance.backends.passthrough:PassthroughBackend",
}
CANONICAL = tuple(_CLASSES)

# Spellings used by the subtitle pipeline (lower-cased). "backend:model" strings are accepted.
ALIASES = {
    "clearvoice": "mossformer2",
    "clearvoice:mossformer2_se_48k": "mossformer2",
    "mossformer2_se_48k": "mossformer2",
    "mossformer2:mossformer2_se_48k": "mossformer2",
    "zipenhancer:torch": "zipenhancer",
    "zipenhancer:modelscope": "zipenhancer",
    "deepfilternet3": "deepfilternet",
    "deepfilternet:deepfilternet3": "deepfilternet",
    "none": "passthrough",
    "identity": "passthrough",
}

# Preference order of `auto`: the best enhancer whose weights are present.
AUTO_ORDER = ("mossformer2", "zipenhancer", "deepfilternet")


def parse_backend_spec(spec: str) -> str:
    """Map a user's spelling (``clearvoice:MossFormer2_SE_48K``, ``none``, ...) to a canonical
    name, or ``auto``. Unknown names are a :class:`ConfigError` listing what is accepted.
    ``whisperjav:<backend>[:<model>]`` names one of WhisperJAV's own enhancers, hosted in the
    workers (backends/hosted.py); its canonical name keeps the model's case."""
    if _hosted.is_hosted_spec(spec):
        return _hosted.HostedRecipe.parse(spec).name
    key = (spec or "").strip().lower()
    if key == "auto" or key in _CLASSES:
        return key
    if key in ALIASES:
        return ALIASES[key]
    head = key.split(":", 1)[0]
    if head in _CLASSES and ":" in key:
        raise ConfigError(f"backend {spec!r}: {head} has no model variant "
                          f"{key.split(':', 1)[1]!r}")
    accepted = ", ".join(("auto",) + CANONICAL + tuple(sorted(ALIASES))
                         + (_hosted.PREFIX + "<backend>[:<model>] (WhisperJAV's own enhancers)",))
    raise ConfigError(f"unknown backend {spec!r}; accepted: {accepted}")


def backend_class(name: str) -> type[Backend]:
    """Import and return a backend's class, from a registry name (or a pipeline spelling of one)
    or ``"package.module:Class"`` (backends outside this package, e.g. tests' fault injectors).
    A missing package is a :class:`BackendUnavailable` that names the extra to install."""
    if ":" in name and "." in name.split(":", 1)[0]:
        module, cls = name.split(":", 1)
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise BackendUnavailable(f"backend class {name!r} cannot be imported ({exc})") from exc
        if not isinstance(getattr(mod, cls, None), type):
            raise BackendUnavailable(f"module {module} has no backend class {cls!r}")
        return getattr(mod, cls)
    if _hosted.is_hosted_spec(name):
        return _hosted.hosted_class(name)
    if name == "auto":
        raise ConfigError("'auto' must be resolved with select_backend() first")
    module, cls = _CLASSES[parse_backend_spec(name)].split(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailable(
            f"backend {name!r} needs packages that are not installed ({exc}); install them with "
            f"{install_hint(parse_backend_spec(name))}") from exc
    return getattr(mod, cls)


def create_backend(name: str, weights_path: str | None = None, **options) -> Backend:
    """Resolve a backend's weights and return it unloaded (safe in the parent: no CUDA)."""
    return backend_class(name).resolve(weights_path, **options)


def select_backend(spec: str, weights_path: str | None = None, **options) -> tuple[Backend, str]:
    """Resolve ``spec`` (possibly ``auto``) to a backend; returns it and a one-line reason."""
    name = parse_backend_spec(spec)
    if name != "auto":
        return create_backend(name, weights_path, **options), f"{name} was requested"
    notes = []
    for cand in AUTO_ORDER:
        cand_weights = weights_path if cand != "deepfilternet" else None
        try:
            backend = create_backend(cand, cand_weights)
        except (WeightsError, BackendUnavailable) as exc:
            # First sentence only: the full text (where to get weights) is for `models`.
            notes.append(f"{cand}: {str(exc).splitlines()[0].split('. ')[0].rstrip('.')}")
            continue
        if options:  # the settings apply to the backend auto picked (ConfigError if they cannot)
            backend = create_backend(cand, cand_weights, **options)
        skipped = f" ({'; '.join(notes)}; `whisperjav-enhance models` says how to get them)" if notes else ""
        return backend, f"auto picked {cand}, the best backend usable here{skipped}"
    raise BackendUnavailable("no backend is usable: " + "; ".join(notes))


__all__ = ["Backend", "WeightsInfo", "CANONICAL", "ALIASES", "parse_backend_spec",
           "backend_class", "create_backend", "select_backend"]
