"""The ``dask`` engine for real: a LocalCluster of 2 worker processes scores 1M rows, a worker is killed mid-job.

The engine's own LocalCluster scores the shared dataset and must agree, row by
row, with the ``local`` engine; a scheduler started by the test (the ``address``
path a real cluster takes) loses a worker process mid-job and the job still writes
every row exactly once.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mlops_core import api
from mlops_core.errors import ConfigError
from mlops_core.stack import DEFAULTS, SINGLE_COMPONENTS, ComponentConfig, Stack, StackConfig
from mlops_core.testing.batch import expected_predictions, make_dataset, read_predictions, train_small_model
from mlops_core.testing.batch_engines import WorkerKiller, assert_exactly_once

ROWS, PARTS = 1_000_000, 8


def _stack(home: Path, **settings) -> Stack:
    components = {c: ComponentConfig(DEFAULTS[c]) for c in SINGLE_COMPONENTS}
    components["batch"] = ComponentConfig("dask", settings)
    return Stack(StackConfig(home=home, components=components, source="test_batch_dask"))


def test_the_dask_engine_is_offered_and_refuses_bad_settings(tmp_path):
    stack = _stack(tmp_path / ".mlops", workers=3)
    try:
        assert stack.batch_engine.workers() == 3
        assert "LocalCluster of 3 worker process(es)" in stack.batch_engine.check()
    finally:
        stack.close()
    for bad in ({"workers": 0}, {"threads_per_worker": "many"}, {"adress": "tcp://x:8786"}):
        with pytest.raises(ConfigError) as info:
            _stack(tmp_path / ".bad", **bad).batch_engine
        assert "dask" in str(info.value)


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path):
    from mlops_core.errors import BackendUnavailableError

    stack = _stack(tmp_path / ".mlops", address="tcp://127.0.0.1:9", timeout=2)
    try:
        with pytest.raises(BackendUnavailableError) as info:
            stack.batch_engine.check()
        assert "tcp://127.0.0.1:9" in str(info.value) and "hint" in str(info.value)
    finally:
        stack.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch-dask")
    stack = _stack(root / ".mlops", workers=2)
    uri = train_small_model(stack=stack)
    data = make_dataset(root / "data", rows=ROWS, partitions=PARTS)
    ids, expected = expected_predictions(uri, data, stack=stack)
    try:
        yield {"root": root, "stack": stack, "uri": uri, "data": data, "ids": ids, "expected": expected}
    finally:
        stack.close()


@pytest.mark.slow
@pytest.mark.xdist_group("batch-cluster")
def test_a_local_cluster_scores_1m_rows_like_the_local_engine(env, tmp_path):
    out = tmp_path / "dask"
    result = api.batch_score(env["uri"], env["data"], out, keys="id", stack=env["stack"])
    assert result.ok and result.engine == "dask"
    assert (result.rows, result.partitions, result.skipped) == (ROWS, PARTS, 0)
    frame = assert_exactly_once(out, env["ids"], env["expected"])

    local = api.batch_score(env["uri"], env["data"], tmp_path / "local", keys="id", engine="local",
                            engine_config={"workers": 2}, stack=env["stack"])
    assert local.ok and local.rows == ROWS
    reference = read_predictions(tmp_path / "local")
    np.testing.assert_array_equal(frame["id"].to_numpy(), reference["id"].to_numpy())
    np.testing.assert_array_equal(frame["prediction"].to_numpy(), reference["prediction"].to_numpy())


@pytest.fixture
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
def test_killing_a_worker_mid_job_still_writes_every_row_once(env, scheduler, tmp_path):
    cluster, client = scheduler
    engine_config = {"address": cluster.scheduler_address}
    doctor = _stack(tmp_path / ".doctor", **engine_config)
    try:
        summary = doctor.batch_engine.check()  # what `mlops doctor` prints for a stack with this address
    finally:
        doctor.close()
    assert cluster.scheduler_address in summary and "2 worker(s)" in summary and "mlops-core" in summary

    pids_before = set(client.run(os.getpid).values())
    killer = WorkerKiller()
    out = tmp_path / "out"
    result = api.batch_score(env["uri"], env["data"], out, keys="id", engine="dask", engine_config=engine_config,
                             progress=killer, stack=env["stack"])
    assert killer.killed in pids_before, "the first partition did not come from a worker of the cluster"
    assert result.ok, result.failed
    assert (result.rows, result.partitions) == (ROWS, PARTS)
    assert killer.after and killer.killed not in killer.workers_after()  # the rest ran on other processes
    assert_exactly_once(out, env["ids"], env["expected"])

