"""Checks every distributed batch engine's tests share: rows written exactly once, a worker killed mid-job.

Used by the ``dask`` and ``ray`` engine plugins' tests (and open to any engine
plugin): score the dataset of :func:`mlops_core.testing.batch.make_dataset`, kill
the worker process that returned the first partition while the others are still
running, and show the job still writes every row exactly once.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, Callable

__all__ = ["WorkerKiller", "assert_exactly_once", "wait_until"]


def assert_exactly_once(output: str | Path, ids: Any, expected: Any) -> Any:
    """Every id once (none missing, none twice) with the expected prediction; returns the frame read."""
    import numpy as np

    from .batch import read_predictions

    frame = read_predictions(output)
    assert len(frame) == len(ids), f"{len(frame)} rows written for {len(ids)} input rows"
    assert frame["id"].is_unique, "a row was written twice"
    np.testing.assert_array_equal(frame["id"].to_numpy(), ids)
    np.testing.assert_array_equal(frame["prediction"].to_numpy(), expected)
    return frame


class WorkerKiller:
    """A ``progress`` callback for ``batch_score`` that SIGKILLs the worker process of the first result.

    ``PartitionResult.worker`` is ``host:pid`` of the process that ran ``run_task``
    (a Dask worker process, a Ray worker); the engines under test run on this
    machine, so the pid is ours to kill. Results that arrive later record who
    scored them, so a test can show that work went on elsewhere.
    """

    def __init__(self) -> None:
        self.killed: int | None = None
        self.after: list[Any] = []  # results received after the kill

    def __call__(self, result: Any) -> None:
        if self.killed is not None:
            self.after.append(result)
            return
        pid = int(result.worker.rsplit(":", 1)[1])
        assert pid != os.getpid(), "the engine ran the task in the driver process"
        os.kill(pid, signal.SIGKILL)
        self.killed = pid

    def workers_after(self) -> set[int]:
        return {int(r.worker.rsplit(":", 1)[1]) for r in self.after if r.error is None}


def wait_until(condition: Callable[[], Any], timeout: float = 120.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy (returned), failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)
