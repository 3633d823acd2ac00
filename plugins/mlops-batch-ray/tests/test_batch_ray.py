"""The ``ray`` engine for real: a local Ray (2 CPUs, loopback) scores 1M rows, a worker is killed mid-job.

The local Ray is started by the engine itself (as ``mlops batch --engine ray``
does) with its session folder in a private temporary folder, and shut down when
the stack closes. The checks are :class:`~mlops_core.testing.batch_engines.BatchEngineChecks`:
the same predictions as the ``local`` engine, and every row exactly once after the
Ray worker process that returned the first partition was killed.
"""

from __future__ import annotations

import shutil
import tempfile

import pytest

from mlops_core import api
from mlops_core.errors import ConfigError
from mlops_core.testing.batch import batch_stack, expected_predictions, make_dataset
from mlops_core.testing.batch_engines import BatchEngineChecks, assert_exactly_once


def test_the_ray_engine_is_offered_and_refuses_bad_settings(tmp_path):
    stack = batch_stack(tmp_path / ".mlops", "ray", dict(workers=3))
    try:
        assert stack.batch_engine.workers() == 3
        assert "local Ray with 3 CPU(s) on loopback" in stack.batch_engine.check()
    finally:
        stack.close()
    for bad in ({"workers": 0}, {"max_retries": "often"}, {"adress": "auto"}):
        with pytest.raises(ConfigError) as info:
            batch_stack(tmp_path / ".bad", "ray", bad).batch_engine
        assert "ray" in str(info.value)


@pytest.fixture(scope="module")
def ray_temp():
    """Ray's session folder (sockets, logs): private, and short, since socket paths are limited to 107 bytes."""
    folder = tempfile.mkdtemp(prefix="mlops-ray-", dir="/tmp")
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.xdist_group("batch-cluster")
class TestRayEngine(BatchEngineChecks):
    ENGINE = "ray"

    @pytest.fixture(scope="class")
    def engine_settings(self, ray_temp):
        return {"workers": 2, "temp_dir": ray_temp}

    def test_a_ray_the_engine_did_not_start_keeps_running(self, env, tmp_path):
        import ray

        small = make_dataset(tmp_path / "data", rows=1000, partitions=2)
        api.batch_score(env["uri"], small, tmp_path / "first", keys="id", stack=env["stack"])
        assert ray.is_initialized()  # started by the stack's engine, which keeps it for the next jobs
        # a second engine (same settings, built for one job and closed after it) finds Ray running
        result = api.batch_score(env["uri"], small, tmp_path / "second", keys="id", engine="ray",
                                 engine_config={"workers": 2}, stack=env["stack"])
        assert result.ok and result.rows == 1000
        assert ray.is_initialized(), "an engine shut down a Ray it had not started"
        assert_exactly_once(tmp_path / "second", *expected_predictions(env["uri"], small, stack=env["stack"]))
