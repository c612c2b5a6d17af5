"""Ctrl-C and SIGTERM as exceptions that are never lost.

Python raises KeyboardInterrupt wherever the main thread happens to be; if that is inside a weakref
callback or a `__del__` (garbage collection runs at arbitrary points), the exception is printed as
"ignored" and the program carries on as if nothing happened. So the handlers also remember the signal,
and `check()` (called by the training loop at every step) raises it again until it is handled.
"""

from __future__ import annotations

import signal


class Stopped(BaseException):
    """SIGTERM: a scheduler's preemption, or a launcher stopping the processes of a failed run."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signum)
        self.signum = signum


_pending: list[int] = []


def _handle(signum, frame) -> None:
    _pending.append(signum)
    _raise(signum)


def _raise(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Stopped(signum)


def install() -> None:
    """Make SIGINT and SIGTERM raise (KeyboardInterrupt, Stopped) and remember them (main thread only)."""
    signal.signal(signal.SIGINT, _handle)
    signal.signal(signal.SIGTERM, _handle)


def check() -> None:
    """Raise again a signal whose exception was swallowed on the way (no-op when there was none)."""
    if _pending:
        _raise(_pending[-1])


def handled() -> None:
    """The exception reached its handler: forget the signal."""
    _pending.clear()
