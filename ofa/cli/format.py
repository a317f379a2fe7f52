"""The help formatter of every ``ofa`` command: descriptions keep their line breaks, and every option states its
default (unless its help already says it, or it has none worth saying: a flag, an unset value)."""

from __future__ import annotations

import argparse

THREADS_HELP = ("torch threads (default: OMP_NUM_THREADS when set, else the usable cores divided by the processes on "
                "this machine)")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or "default" in text or not worth_saying(action.default):
            return text
        return f"{text} (default: %(default)s)"


def worth_saying(default: object) -> bool:
    """A value a user could not guess (0 is one; an unset option or an off flag is not)."""
    return default is not None and default is not False and default not in ([], "") \
        and default is not argparse.SUPPRESS
