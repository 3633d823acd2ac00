"""The ``dask`` engine for real: a LocalCluster of 2 worker processes scores 1M rows, a worker is killed mid-job.

The engine's own LocalCluster scores the shared dataset and must agree, row by
row, with the ``local`` engine; a scheduler started by the test (the ``address``
path a real cluster takes) loses a worker process mid-job and the job still writes
every row exactly once (:class:`~mlops_core.testing.batch_engines.BatchEngineChecks`).
"""

from __future__ import annotations

import pytest

from mlops_core.errors import BackendUnavailableError, ConfigError
from mlops_core.testing.batch import batch_stack
from mlops_core.testing.batch_engines import BatchEngineChecks


def test_the_dask_engine_is_offered_and_refuses_bad_settings(tmp_path):
    stack = batch_stack(tmp_path / ".mlops", "dask", dict(workers=3))
    try:
        assert stack.batch_engine.workers() == 3
        assert "LocalCluster of 3 worker process(es)" in stack.batch_engine.check()
    finally:
        stack.close()
    for bad in ({"workers": 0}, {"threads_per_worker": "many"}, {"adress": "tcp://x:8786"}):
        with pytest.raises(ConfigError) as info:
            batch_stack(tmp_path / ".bad", "dask", bad).batch_engine
        assert "dask" in str(info.value)


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path):
    stack = batch_stack(tmp_path / ".mlops", "dask", dict(address="tcp://127.0.0.1:9", timeout=2))
    try:
        with pytest.raises(BackendUnavailableError) as info:
            stack.batch_engine.check()
        assert "tcp://127.0.0.1:9" in str(info.value) and "hint" in str(info.value)
    finally:
        stack.close()


@pytest.fixture(scope="module")
def scheduler():
    """A scheduler and 2 worker processes the test owns, reached by address like a real cluster."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=None)
    client = Client(cluster, set_as_default=False)
    try:
        yield cluster, client
    finally:
        client.close()
        cluster.close()


@pytest.mark.slow
@pytest.mark.xdist_group("batch-cluster")
class TestDaskEngine(BatchEngineChecks):
    ENGINE = "dask"

    @pytest.fixture(scope="class")
    def engine_settings(self):
        return {"workers": 2}  # the engine's own LocalCluster: 2 worker processes, 1 thread each

    @pytest.fixture
    def kill_settings(self, scheduler):
        cluster, _ = scheduler
        return {"address": cluster.scheduler_address}  # the kill test reaches a cluster by address

    def test_doctor_check_of_a_scheduler_address(self, scheduler, tmp_path):
        cluster, client = scheduler
        client.wait_for_workers(2, timeout=300)  # the nanny restarts a worker the kill test killed
        stack = batch_stack(tmp_path / ".mlops", "dask", dict(address=cluster.scheduler_address))
        try:
            summary = stack.batch_engine.check()  # what `mlops doctor` prints for this stack
        finally:
            stack.close()
        assert cluster.scheduler_address in summary and "2 worker(s)" in summary
        assert "mlops-core" in summary  # the workers can import the core that runs the tasks
