"""The CLI vocabulary every ``python -m ...`` command of the toolkit shares: one help formatter and the common
flags, so that all commands read and behave alike.

- :class:`HelpFormatter`: argparse's defaults formatter, but a flag's default is shown only when it says
  something: never for a required flag, a default of ``None`` (the help says what happens then) or an off switch
  (``store_true``), nor when the help text already states its default.
- :func:`peak_rss_mb`: the peak resident memory every command reports.
- :func:`add_no_progress`: ``--no-progress`` (progress on stderr is on by default: bars on a terminal, a few plain
  lines in a log, see :mod:`competition.progress`); ``deprecated=("--quiet",)`` also accepts an older spelling,
  hidden from ``--help``.

Every command also takes ``--seed`` (default 0; the same seed gives the same output on CPU), deterministic ones
included (there it is accepted and unused), so that scripts can pass it to any of them.

The probe flag shared by ``validate.probe``, ``validate.search`` and ``submit.pack`` is in :mod:`validate.cli`.
"""
from __future__ import annotations

import argparse
import resource


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``(default: X)`` after a flag's help, except for required flags, ``None`` defaults, off switches and help
    texts that already state their default. A list default is shown as its items, space-separated (as typed)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.required or action.default is None or action.default is argparse.SUPPRESS
                or action.nargs == 0 or "default" in text):
            return text
        if isinstance(action.default, (list, tuple)):
            items = " ".join(str(v) for v in action.default).replace("%", "%%")
            return f"{text} (default: {items})"
        return super()._get_help_string(action)


def add_no_progress(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                    deprecated: tuple[str, ...] = ()) -> None:
    """``--no-progress`` (dest ``no_progress``): no progress output. ``deprecated``: older spellings still accepted,
    hidden from ``--help``."""
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress output (on stderr: bars on a terminal, a few plain lines when redirected)")
    for flag in deprecated:
        parser.add_argument(flag, dest="no_progress", action="store_true", help=argparse.SUPPRESS)



def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
