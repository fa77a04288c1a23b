"""How every command's ``--help`` is laid out: one width, and every option saying its default."""

from __future__ import annotations

import argparse


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help says its default: ours spell it out, options added by other modules
    (the benchmark's) get argparse's value appended."""

    def __init__(self, prog):
        super().__init__(prog, max_help_position=34, width=100)

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.option_strings and "default" not in text.lower()
                and action.default is not argparse.SUPPRESS and not isinstance(
                    action, (argparse._HelpAction, argparse._VersionAction))):
            text += " (default: %(default)s)"
        return text


def default(value, unit: str = "") -> str:
    """``(default: VALUE UNIT)`` for a help text."""
    return f"(default: {value}{unit})"


__all__ = ["Formatter", "default"]
