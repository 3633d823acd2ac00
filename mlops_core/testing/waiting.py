"""Waiting in tests: poll a condition you can observe until it holds, within a deadline.

A fixed ``time.sleep`` before an assertion is a guess at how long something takes (a
server to bind, a file to appear, a signal handler to be installed, a process to die).
On a loaded machine the guess is wrong: the test fails, or passes without testing what
it claims. :func:`wait_until` waits for the thing itself and fails with a message naming
it when the deadline passes, so a slow machine only makes a test slower, never red.
"""

from __future__ import annotations

import time
from typing import Any, Callable

__all__ = ["wait_until"]


def wait_until(check: Callable[[], Any], timeout: float = 30.0, what: str = "the condition", *,
               interval: float = 0.05, proc: Any = None,
               ignore: tuple[type[BaseException], ...] = ()) -> Any:
    """Call ``check()`` until it returns a truthy value, and return that value.

    ``timeout`` is a deadline in seconds, generous on purpose (it only matters when
    something is broken); ``interval`` is the pause between polls, not a guess at a
    duration. ``what`` names the condition in the failure message, with the last value
    ``check`` returned. Exceptions of the types in ``ignore`` count as "not yet" (a
    service still starting refuses connections). When ``proc`` (a ``subprocess.Popen``)
    exits meanwhile, the wait fails at once instead of running out the clock.

    Raises ``AssertionError`` when the deadline passes or ``proc`` exits.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
            if last:
                return last
        except ignore as exc:
            last = exc
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process exited with {proc.returncode} while waiting for {what}; "
                                 f"last: {last!r}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last: {last!r}")
        time.sleep(interval)
