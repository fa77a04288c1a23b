"""The installed WhisperJAV: which rules its speech-enhancement step follows, and its own names.

The rules are decided by what ``whisperjav.modules.speech_enhancement`` provides, never by a
version string: a ``base`` module with ``SpeechEnhancerUnavailable`` is the 1.9 line ("only
all-fail is fatal"); one without it is the 1.8 line. Without WhisperJAV importable the newest
rules apply, with this package's own :class:`SpeechEnhancerUnavailable` standing in for
WhisperJAV's.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

from ...errors import EnhanceError

logger = logging.getLogger("whisperjav_enhance.integrations.whisperjav")

PACKAGE = "whisperjav.modules.speech_enhancement"
# Submodules searched, in order, for a name the package itself does not export.
SUBMODULES = ("pipeline_helper", "factory", "base")
LINE_1_8 = "1.8"
LINE_1_9 = "1.9"


class SpeechEnhancerUnavailable(EnhanceError):
    """The chosen clean-up cannot run, or cleaned nothing (1.9 rules, raised only when WhisperJAV
    itself is not importable; otherwise WhisperJAV's own class of this name is raised)."""


@dataclass(frozen=True)
class Rules:
    """The contract the drop-in follows for one call."""

    line: str                   # LINE_1_8 or LINE_1_9
    unavailable: type           # the SpeechEnhancerUnavailable class raised under 1.9 rules
    whisperjav_found: bool      # WhisperJAV's speech-enhancement package is importable

    def __post_init__(self):
        if self.line not in (LINE_1_8, LINE_1_9):
            raise ValueError(f"unknown WhisperJAV line {self.line!r}")
        if not (isinstance(self.unavailable, type) and issubclass(self.unavailable, BaseException)):
            raise ValueError("Rules.unavailable must be an exception class")

    @property
    def failures_are_fatal(self) -> bool:
        """1.9: a clean-up that cannot start or cleaned nothing raises; 1.8: never raises."""
        return self.line == LINE_1_9


def import_module(sub: str | None = None):
    """WhisperJAV's speech-enhancement package (or one of its submodules), or None when
    WhisperJAV is not importable. A WhisperJAV that is installed but fails to import is logged."""
    name = PACKAGE + (f".{sub}" if sub else "")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            return None  # WhisperJAV (or this part of it) is not there
        logger.warning("WhisperJAV is installed but %s cannot be imported: %s", name, exc)
        return None
    except ImportError as exc:
        logger.warning("WhisperJAV is installed but %s cannot be imported: %s", name, exc)
        return None


def installed_rules() -> Rules:
    """The rules of the WhisperJAV importable now (read at every call: cheap once imported)."""
    base = import_module("base")
    if base is None:
        return Rules(LINE_1_9, SpeechEnhancerUnavailable, False)
    theirs = getattr(base, "SpeechEnhancerUnavailable", None)
    if isinstance(theirs, type) and issubclass(theirs, BaseException):
        return Rules(LINE_1_9, theirs, True)
    return Rules(LINE_1_8, SpeechEnhancerUnavailable, True)


MISSING = object()


def lookup(name: str):
    """WhisperJAV's own object called ``name`` (the package first, then its submodules), or
    :data:`MISSING`."""
    for sub in (None,) + SUBMODULES:
        module = import_module(sub)
        if module is not None and hasattr(module, name):
            return getattr(module, name)
    return MISSING


__all__ = ["SpeechEnhancerUnavailable", "Rules", "installed_rules", "import_module", "lookup",
           "MISSING", "PACKAGE", "LINE_1_8", "LINE_1_9"]
