"""Checks every distributed batch engine's tests share: same rows as ``local``, a worker killed mid-job.

Used by the ``dask`` and ``ray`` engine plugins' tests (and open to any engine
plugin): subclass :class:`BatchEngineChecks`, set ``ENGINE`` and define the
``engine_settings`` fixture. The engine scores the 1M-row dataset of
:func:`mlops_core.testing.batch.make_dataset` and must agree row by row with the
``local`` engine; then the worker process that returned the first partition is
killed while the others are still running, and the job must still write every row
exactly once. Needs pytest, numpy, pandas, pyarrow and scikit-learn.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

__all__ = ["BatchEngineChecks", "WorkerKiller", "assert_exactly_once"]


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


class BatchEngineChecks:
    """End-to-end checks of a distributed engine; subclass with ``ENGINE`` and an ``engine_settings`` fixture.

    ``kill_settings`` (default: the stack's engine as configured) may point the
    killed-worker job at a cluster the test owns (``{"address": ...}``).
    """

    ENGINE = ""
    ROWS, PARTITIONS = 1_000_000, 8

    @pytest.fixture(scope="class")
    def env(self, tmp_path_factory: Any, engine_settings: dict[str, Any]) -> Any:
        from .batch import batch_stack, expected_predictions, make_dataset, train_small_model

        root = tmp_path_factory.mktemp(f"batch-{self.ENGINE}")
        stack = batch_stack(root / ".mlops", self.ENGINE, engine_settings)
        uri = train_small_model(stack=stack)
        data = make_dataset(root / "data", rows=self.ROWS, partitions=self.PARTITIONS)
        ids, expected = expected_predictions(uri, data, stack=stack)
        try:
            yield {"root": root, "stack": stack, "uri": uri, "data": data, "ids": ids, "expected": expected}
        finally:
            stack.close()

    @pytest.fixture
    def kill_settings(self) -> dict[str, Any]:
        return {}

    def test_scores_the_dataset_like_the_local_engine(self, env: Any, tmp_path: Path) -> None:
        import numpy as np

        from .. import api
        from .batch import read_predictions

        result = api.batch_score(env["uri"], env["data"], tmp_path / "out", keys="id", stack=env["stack"])
        assert result.ok, result.failed
        assert (result.engine, result.rows, result.partitions, result.skipped) == (
            self.ENGINE, self.ROWS, self.PARTITIONS, 0)
        frame = assert_exactly_once(tmp_path / "out", env["ids"], env["expected"])
        assert list(frame.columns) == ["id", "prediction"]  # the key next to the predictions

        local = api.batch_score(env["uri"], env["data"], tmp_path / "local", keys="id", engine="local",
                                engine_config={"workers": 2}, stack=env["stack"])
        assert local.ok and local.rows == self.ROWS
        reference = read_predictions(tmp_path / "local")
        np.testing.assert_array_equal(frame["id"].to_numpy(), reference["id"].to_numpy())
        np.testing.assert_array_equal(frame["prediction"].to_numpy(), reference["prediction"].to_numpy())

    def test_killing_a_worker_mid_job_still_writes_every_row_once(self, env: Any, kill_settings: dict[str, Any],
                                                                   tmp_path: Path) -> None:
        from .. import api

        killer = WorkerKiller()
        result = api.batch_score(env["uri"], env["data"], tmp_path / "out", keys="id",
                                 engine=self.ENGINE if kill_settings else None, engine_config=kill_settings or None, progress=killer, stack=env["stack"])
        assert killer.killed is not None
        assert result.ok, result.failed
        assert (result.rows, result.partitions) == (self.ROWS, self.PARTITIONS)
        # the partitions after the kill were scored by other (or restarted) worker processes
        assert killer.after and killer.killed not in killer.workers_after()
        assert_exactly_once(tmp_path / "out", env["ids"], env["expected"])
