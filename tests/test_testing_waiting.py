"""mlops_core.testing.wait_until: the kit's one way to wait on an observable condition."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mlops_core.testing import wait_until


def test_returns_the_first_truthy_value() -> None:
    answers = iter([None, 0, [], "ready"])
    assert wait_until(lambda: next(answers), 30, interval=0) == "ready"


def test_names_the_condition_and_the_last_value_when_the_deadline_passes() -> None:
    with pytest.raises(AssertionError, match=r"timed out after 0 s waiting for the cache to fill; last: \[\]"):
        wait_until(list, 0, "the cache to fill")


def test_ignored_exceptions_mean_not_yet_others_propagate() -> None:
    calls = []

    def starting() -> bool:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError("still starting")
        return True

    assert wait_until(starting, 30, interval=0, ignore=(ConnectionError,)) is True
    assert len(calls) == 3
    with pytest.raises(ZeroDivisionError):
        wait_until(lambda: 1 / 0, 30, ignore=(ConnectionError,))
    with pytest.raises(AssertionError, match="ConnectionRefusedError"):
        wait_until(lambda: (_ for _ in ()).throw(ConnectionRefusedError()), 0, ignore=(ConnectionError,))


def test_a_process_that_exits_ends_the_wait_at_once() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(AssertionError, match="exited with 3 while waiting for the server to listen"):
        wait_until(lambda: False, 3600, "the server to listen", proc=proc)
