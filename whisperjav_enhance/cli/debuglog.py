"""``--debug``: the library's own logging (loggers ``whisperjav_enhance.*``: every worker start,
retirement, kill and crash decision, requeues, remote tracebacks of failed scenes, a dead
worker's log and faulthandler dump) shown through the renderer, above the progress line, so it
never breaks the line. Without ``--debug`` none of it shows: the package's logger gets a handler
that drops everything (Python's last-resort handler would otherwise print warnings raw onto the
progress line)."""

from __future__ import annotations

import logging
from contextlib import contextmanager

LOGGER = "whisperjav_enhance"


class _ToRenderer(logging.Handler):
    """Each record as dim text through the renderer (thread-safe: rich's console locks)."""

    def __init__(self, renderer):
        super().__init__(logging.DEBUG)
        self.renderer = renderer
        self.setFormatter(logging.Formatter("debug %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record).replace(f"debug {LOGGER}.", "debug ", 1)
            self.renderer.print_text(text, style="red" if record.levelno >= logging.ERROR
                                     else "dim")
        except Exception:  # noqa: BLE001 - logging must never break the run
            pass


@contextmanager
def library_logging(renderer, debug: bool):
    """Route the package's logging to ``renderer`` (``debug``) or nowhere, for the ``with`` body."""
    logger = logging.getLogger(LOGGER)
    saved = (logger.level, logger.propagate)
    handler = _ToRenderer(renderer) if debug else logging.NullHandler()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if debug else logging.CRITICAL + 1)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


__all__ = ["library_logging"]
