"""The one exception type users see: a message that says what was wrong and what was expected."""

import difflib


class DelphiError(Exception):
    """Bad input or state detected before (or instead of) expensive work.

    The CLI prints these as one clean line (no traceback) and exits with status 2.
    """


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """`"; did you mean 'x'?"` for the closest choice (case-insensitive), or "" when nothing is close."""
    by_lower = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.6)
    return f"; did you mean '{by_lower[close[0]]}'?" if close else ""
