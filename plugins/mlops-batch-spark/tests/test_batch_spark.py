"""The spark batch engine, for real: PySpark ``local[2]`` (a JVM, Spark's Python workers) scoring Parquet files.

Spark's JVM takes long to start, so one SparkSession serves the whole module
(``spark`` fixture). Each ``batch_score(engine="spark")`` builds its own engine,
which finds that session running, uses it and leaves it running when it closes:
the "stop only a session you started" rule is exercised by every test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlops_core import api
from mlops_core.errors import ConfigError
from mlops_core.stack import DEFAULTS, SINGLE_COMPONENTS, ComponentConfig, Stack, StackConfig
from mlops_core.testing.batch import (FEATURES, CountingModel, FaultyModel, expected_predictions, make_dataset,
                                      make_frame, read_predictions, small_model, train_small_model)
from mlops_batch_spark.engine import SparkConfig, SparkEngine

pytest.importorskip("pyspark")

ROWS, PARTS = 1_000_000, 8
SPARK = {"master": "local[2]"}


def _stack(home: Path, batch: ComponentConfig | None = None) -> Stack:
    components = {c: ComponentConfig(DEFAULTS[c]) for c in SINGLE_COMPONENTS}
    components["batch"] = batch or ComponentConfig("local", {"workers": 2})
    return Stack(StackConfig(home=home, components=components, source="test_batch_spark"))


@pytest.fixture(scope="module")
def spark():
    """The module's one SparkSession (local[2]), started by an engine that owns and finally stops it."""
    engine = SparkEngine(SparkConfig(**SPARK))
    session = engine.session()
    try:
        yield session
    finally:
        engine.close()
    assert session.sparkContext._jsc is None, "the engine that started the session did not stop it"


@pytest.fixture(scope="module")
def env(tmp_path_factory, spark):
    root = tmp_path_factory.mktemp("batch-spark")
    stack = _stack(root / ".mlops")
    uri = train_small_model(stack=stack)
    data = make_dataset(root / "data", rows=ROWS, partitions=PARTS)
    ids, expected = expected_predictions(uri, data, stack=stack)
    try:
        yield {"stack": stack, "uri": uri, "data": data, "ids": ids, "expected": expected}
    finally:
        stack.close()


def _register_wrapped(stack: Stack, name: str, model) -> str:
    api.register(name, model, example=make_frame(50).select(list(FEATURES)).to_pandas().to_numpy(), stack=stack)
    return f"models:/{name}"


def _assert_exactly_once(output: Path, ids: np.ndarray, expected: np.ndarray) -> None:
    frame = read_predictions(output)
    assert frame["id"].is_unique, "a row was written twice"
    np.testing.assert_array_equal(frame["id"].to_numpy(), ids)  # none missing
    np.testing.assert_array_equal(frame["prediction"].to_numpy(), expected)


# ------------------------------------------------------------------ no JVM needed
def test_master_urls_are_checked_before_spark_starts():
    with pytest.raises(ConfigError, match="not a Spark master URL") as err:
        SparkEngine(SparkConfig(master="spark-master:7077")).check()
    assert "spark://" in err.value.hint
    with pytest.raises(ConfigError, match="Spark Connect"):
        SparkEngine(SparkConfig(address="sc://host:15002")).check()


def test_settings_map_onto_spark():
    local = SparkEngine(SparkConfig(workers=3, conf={"spark.ui.enabled": True, "spark.sql.shuffle.partitions": 4}))
    assert local.master == "local[3]" and local.workers() == 3
    conf = local.spark_conf()
    assert conf["spark.driver.bindAddress"] == conf["spark.driver.host"] == "127.0.0.1"
    assert conf["spark.python.worker.reuse"] == "true"
    assert conf["spark.ui.enabled"] == "true" and conf["spark.sql.shuffle.partitions"] == "4"  # the stack's conf wins
    cluster = SparkEngine(SparkConfig(master="local[*]", address="spark://10.0.0.5:7077", workers=16))
    assert cluster.master == "spark://10.0.0.5:7077"  # --address wins over master
    conf = cluster.spark_conf()
    assert "spark.driver.host" not in conf and conf["spark.cores.max"] == "16"  # executors must reach the driver
    with pytest.raises(ValueError, match="at least 1"):
        SparkConfig(workers=0)
    # what `mlops batch --engine-option conf=...` passes
    assert SparkConfig(conf="spark.executor.memory=4g, spark.x=a=b").conf == {"spark.executor.memory": "4g",
                                                                            "spark.x": "a=b"}
    with pytest.raises(ValueError, match="key=value"):
        SparkConfig(conf="spark.executor.memory")


def test_the_stack_builds_the_spark_engine(tmp_path):
    stack = _stack(tmp_path / ".mlops", ComponentConfig("spark", {"master": "local[2]", "conf": {"spark.x": 1}}))
    try:
        engine = stack.batch_engine
        assert isinstance(engine, SparkEngine) and engine.spark_conf()["spark.x"] == "1"
        with pytest.raises(ConfigError, match="unknown setting"):
            _stack(tmp_path / ".other", ComponentConfig("spark", {"masters": "local"})).batch_engine
    finally:
        stack.close()


# ------------------------------------------------------------------ real Spark
@pytest.mark.slow
def test_spark_scores_like_the_local_engine(env, tmp_path):
    seen = []
    spark_out, local_out = tmp_path / "spark", tmp_path / "local"
    result = api.batch_score(env["uri"], env["data"], spark_out, engine="spark", engine_config=SPARK, keys="id",
                             progress=seen.append, stack=env["stack"])
    assert result.ok and result.engine == "spark"
    assert (result.rows, result.partitions, result.skipped) == (ROWS, PARTS, 0)
    assert sorted(r.index for r in seen) == list(range(PARTS)) and sum(r.rows for r in seen) == ROWS
    assert len({r.worker for r in seen}) <= 2, "local[2] runs at most two Python workers, reused across tasks"
    _assert_exactly_once(spark_out, env["ids"], env["expected"])

    local = api.batch_score(env["uri"], env["data"], local_out, engine="local", engine_config={"workers": 2},
                            keys="id", stack=env["stack"])
    assert local.ok and local.rows == ROWS
    assert read_predictions(spark_out).equals(read_predictions(local_out))

    again = api.batch_score(env["uri"], env["data"], spark_out, engine="spark", engine_config=SPARK, keys="id",
                            stack=env["stack"])
    assert again.ok and (again.rows, again.skipped) == (0, PARTS)  # complete partitions are not scored again


@pytest.mark.slow
def test_model_loads_once_per_spark_python_worker(env, tmp_path):
    data = make_dataset(tmp_path / "data", rows=40_000, partitions=8)
    log = tmp_path / "loads.log"
    uri = _register_wrapped(env["stack"], "counting", CountingModel(small_model(), log))
    log.unlink(missing_ok=True)  # the driver's own loads while registering do not count
    result = api.batch_score(uri, data, tmp_path / "out", engine="spark", engine_config=SPARK, keys="id",
                             stack=env["stack"])
    assert result.ok and result.partitions == 8
    pids = log.read_text().split()
    assert len(pids) == len(set(pids)) <= 2, f"model loaded {len(pids)} times by {len(set(pids))} workers"


@pytest.mark.slow
def test_a_killed_python_worker_loses_no_row(env, tmp_path):
    """A Spark Python worker dies mid-partition: the job fails, the core runs what is missing again."""
    data = make_dataset(tmp_path / "data", rows=40_000, partitions=4)
    ids, expected = expected_predictions(env["uri"], data, stack=env["stack"])
    trigger = tmp_path / "exit-once"
    uri = _register_wrapped(env["stack"], "faulty-exit", FaultyModel(small_model(), trigger, "exit"))
    trigger.touch()
    out = tmp_path / "out"
    result = api.batch_score(uri, data, out, engine="spark", engine_config=SPARK, keys="id", stack=env["stack"])
    assert not trigger.exists(), "no worker was killed"
    assert result.ok and result.retried >= 1
    _assert_exactly_once(out, ids, expected)


@pytest.mark.slow
def test_a_bad_partition_fails_alone(env, tmp_path):
    data = make_dataset(tmp_path / "data", rows=30_000, partitions=3)
    (data / "part-00001.parquet").write_bytes(b"PAR1 this is not parquet")
    out = tmp_path / "out"
    result = api.batch_score(env["uri"], data, out, engine="spark", engine_config=SPARK, keys="id", max_retries=1,
                             stack=env["stack"])
    assert not result.ok and [f.index for f in result.failed] == [1] and result.failed[0].attempt == 2
    assert "part-00001.parquet" in result.failed[0].input_url and result.failed[0].error
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.parquet", "part-00002.parquet"]


@pytest.mark.slow
def test_doctor_check_reports_the_running_session(env, spark):
    engine = SparkEngine(SparkConfig(**SPARK))
    assert "java" in engine.check() and "session starts with the first job" in engine.check()
    assert engine.session() is spark  # the running session is used as it is...
    assert "session running" in engine.check() and "2 cores" in engine.check()
    engine.close()
    assert spark.sparkContext._jsc is not None  # ...and not stopped by an engine that did not start it
