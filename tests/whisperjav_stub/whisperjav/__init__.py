"""A stand-in for WhisperJAV, for this project's tests: the speech-enhancement package only, with
upstream's module layout and names, written from the public description of its releases 1.8.14
and 1.9.x (not from upstream's files). Its enhancers really change the audio, in plain numpy.

Which release line it imitates is chosen per process by ``WHISPERJAV_STUB_LINE`` ("1.9", the
default, or "1.8"); spawned workers inherit it. ``__version__`` deliberately says nothing about
the line: code under test must decide by what the modules provide, never by a version string.

Other switches (environment, so spawned workers see them too):
- ``WHISPERJAV_STUB_LOG``: a file each enhancer appends one JSON line to per call
  (``{"pid", "event", "name", "rate", "samples"}``), so tests can see which process ran what.
- ``WHISPERJAV_STUB_UNAVAILABLE``: comma-separated backend names ``is_backend_available``
  reports as not installed.
"""

__version__ = "0+stub"
