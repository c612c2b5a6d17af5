"""The one exception type users see: a message that says what was wrong and what was expected."""


class DelphiError(Exception):
    """Bad input or state detected before (or instead of) expensive work.

    The CLI prints these as one clean line (no traceback) and exits with status 2.
    """
