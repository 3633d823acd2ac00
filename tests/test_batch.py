"""Batch scoring with the local engine, for real: worker processes, Parquet/CSV files, retries, resume.

Every test runs real worker processes (spawned once per module: the stack's
engine keeps its pool, as a long-lived driver would) and compares the outputs
with the model's own ``predict`` on the same rows: no row missing, none twice.
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import mlops_core
from mlops_core import api
from mlops_core.batch import BatchOptions, PartitionTask, run_task
from mlops_core.errors import BackendNotFoundError, IntegrityError, InvalidInputError, NotFoundError
from mlops_core.stack import Stack
from mlops_core.testing.batch import (FEATURES, CountingModel, FaultyModel, batch_stack, expected_predictions,
                                      make_dataset, make_frame, read_predictions, small_model, train_small_model)

ROWS, PARTS = 20_000, 4


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """One stack (and so one warm pool of 2 workers), one model, one dataset for the module."""
    root = tmp_path_factory.mktemp("batch")
    stack = batch_stack(root / ".mlops", settings={"workers": 2})
    uri = train_small_model(stack=stack)
    data = make_dataset(root / "data", rows=ROWS, partitions=PARTS)
    ids, expected = expected_predictions(uri, data, stack=stack)
    try:
        yield {"root": root, "stack": stack, "uri": uri, "data": data, "ids": ids, "expected": expected}
    finally:
        stack.close()


def _assert_exactly_once(output: Path, ids: np.ndarray, expected: np.ndarray) -> None:
    frame = read_predictions(output)
    assert frame["id"].is_unique, "a row was written twice"
    np.testing.assert_array_equal(frame["id"].to_numpy(), ids)  # none missing
    np.testing.assert_array_equal(frame["prediction"].to_numpy(), expected)


def test_local_engine_scores_like_predict_and_keeps_keys(env, tmp_path):
    out = tmp_path / "out"
    result = api.batch_score(env["uri"], env["data"], out, keys="id", stack=env["stack"])
    assert result.ok and result.engine == "local"
    assert (result.rows, result.partitions, result.skipped, result.retried) == (ROWS, PARTS, 0, 0)
    assert sorted(p.name for p in out.iterdir()) == [f"part-{i:05d}.parquet" for i in range(PARTS)]
    assert pq.read_schema(out / "part-00000.parquet").names == ["id", "prediction"]
    _assert_exactly_once(out, env["ids"], env["expected"])
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "a temporary was left behind"
    assert result.to_dict()["rows"] == ROWS and result.rows_per_second > 0


def test_rerun_skips_complete_partitions_overwrite_scores_again(env, tmp_path):
    out = tmp_path / "out"
    api.batch_score(env["uri"], env["data"], out, keys="id", stack=env["stack"])
    again = api.batch_score(env["uri"], env["data"], out, keys="id", stack=env["stack"])
    assert (again.rows, again.skipped) == (0, PARTS)
    forced = api.batch_score(env["uri"], env["data"], out, keys="id", overwrite=True, stack=env["stack"])
    assert (forced.rows, forced.skipped) == (ROWS, 0)
    _assert_exactly_once(out, env["ids"], env["expected"])


def test_resume_after_an_interrupted_run_no_duplicate_no_missing_row(env, tmp_path):
    """A partition that cannot be read fails (after its retries); the re-run scores only what is missing."""
    data = tmp_path / "data"
    shutil.copytree(env["data"], data)
    good = (data / "part-00002.parquet").read_bytes()
    (data / "part-00002.parquet").write_bytes(good[: len(good) // 2])  # truncated: an interrupted upload
    out = tmp_path / "out"
    first = api.batch_score(env["uri"], data, out, keys="id", max_retries=1, stack=env["stack"])
    assert not first.ok and [f.index for f in first.failed] == [2]
    assert first.failed[0].attempt == 2 and first.retried == 1
    assert "part-00002" in first.failed[0].input_url and first.failed[0].error
    assert not (out / "part-00002.parquet").exists()
    assert first.rows == ROWS - pq.read_metadata(env["data"] / "part-00002.parquet").num_rows

    (data / "part-00002.parquet").write_bytes(good)
    second = api.batch_score(env["uri"], data, out, keys="id", stack=env["stack"])
    assert second.ok and second.skipped == PARTS - 1
    assert second.rows == pq.read_metadata(data / "part-00002.parquet").num_rows
    _assert_exactly_once(out, env["ids"], env["expected"])


def test_temporaries_of_killed_writers_are_removed_once_their_partition_is_complete(env, tmp_path):
    """A writer killed between its write and its rename leaves ``.part-N.parquet.tmp-PID-X``; the next job sweeps it."""
    out = tmp_path / "out"
    out.mkdir()
    leftovers = [out / ".part-00001.parquet.tmp-4242-0badc0de", out / ".part-00003.parquet.tmp-4243-deadbeef"]
    for leftover in leftovers:
        leftover.write_bytes(b"PAR1 half a file")
    unrelated = out / ".notes.tmp-1"  # not a partition's temporary: kept
    unrelated.write_text("mine")
    result = api.batch_score(env["uri"], env["data"], out, keys="id", stack=env["stack"])
    assert result.ok
    assert not any(p.exists() for p in leftovers) and unrelated.exists()
    _assert_exactly_once(out, env["ids"], env["expected"])


def _register_wrapped(stack: Stack, name: str, model) -> str:
    api.register(name, model, example=make_frame(50).select(list(FEATURES)).to_pandas().to_numpy(), stack=stack)
    return f"models:/{name}"


def test_failed_partition_is_retried(env, tmp_path):
    trigger = tmp_path / "fail-once"
    uri = _register_wrapped(env["stack"], "faulty-raise", FaultyModel(small_model(), trigger, "raise"))
    trigger.touch()  # armed after registering: signature inference called predict
    out = tmp_path / "out"
    result = api.batch_score(uri, env["data"], out, keys="id", stack=env["stack"])
    assert not trigger.exists(), "the failure was not injected"
    assert result.ok and result.retried == 1 and result.rows == ROWS
    _assert_exactly_once(out, env["ids"], env["expected"])


def test_worker_killed_mid_job_completes_with_every_row_once(env, tmp_path):
    """A worker process dies in the middle of a partition: the pool is rebuilt and lost partitions rerun."""
    trigger = tmp_path / "exit-once"
    uri = _register_wrapped(env["stack"], "faulty-exit", FaultyModel(small_model(), trigger, "exit"))
    trigger.touch()
    out = tmp_path / "out"
    result = api.batch_score(uri, env["data"], out, keys="id", stack=env["stack"])
    assert not trigger.exists(), "no worker was killed"
    assert result.ok and result.retried >= 1 and result.rows >= ROWS - result.skipped
    _assert_exactly_once(out, env["ids"], env["expected"])


def test_model_loads_once_per_worker_not_per_partition(env, tmp_path):
    data = make_dataset(tmp_path / "data", rows=8000, partitions=8)
    log = tmp_path / "loads.log"
    uri = _register_wrapped(env["stack"], "counting", CountingModel(small_model(), log))
    log.unlink(missing_ok=True)  # the driver's own loads while registering do not count
    result = api.batch_score(uri, data, tmp_path / "out", keys="id", stack=env["stack"])
    assert result.ok and result.partitions == 8
    pids = log.read_text().split()
    assert len(pids) == len(set(pids)) <= 2, f"model loaded {len(pids)} times by {len(set(pids))} workers"


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch UNPICKLED",))


def test_tampered_bundle_is_refused_before_anything_is_unpickled(env, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _version, path = api.resolve_bundle(env["uri"], stack=env["stack"])
    bundle = tmp_path / "bundle"
    shutil.copytree(path, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    payload = next(f["path"] for f in manifest["files"] if f["path"] != manifest.get("example"))
    evil = pickle.dumps(_Boom())  # a malicious pickle in place of the model, padded to the same size
    (bundle / payload).write_bytes(evil + b"\0" * ((bundle / payload).stat().st_size - len(evil)))
    digest = _version.artifact.digest
    task = PartitionTask(0, str(env["data"] / "part-00000.parquet"), str(tmp_path / "out" / "p.parquet"),
                         str(bundle), digest, BatchOptions(keys=("id",)))
    result = run_task(task)
    assert result.error and result.error.startswith("IntegrityError") and "sha256" in result.error
    assert not (tmp_path / "UNPICKLED").exists() and not (tmp_path / "out").exists()
    with pytest.raises(IntegrityError):
        api.batch_score(str(bundle), env["data"], tmp_path / "out2", keys="id", stack=env["stack"])
    assert not (tmp_path / "UNPICKLED").exists()


@pytest.mark.parametrize("header", [True, False])
def test_csv_with_or_without_header_row_keeps_every_row(env, tmp_path, header):
    data = make_dataset(tmp_path / "csv", rows=3000, partitions=3, fmt="csv", header=header)
    key = "id" if header else "0"  # without a header row, columns are named by position
    result = api.batch_score(env["uri"], data, tmp_path / "out", keys=key, output_format="csv", stack=env["stack"])
    assert result.ok and result.rows == 3000
    outputs = sorted((tmp_path / "out").glob("*.csv"))
    assert [p.name for p in outputs] == ["part-00000.csv", "part-00001.csv", "part-00002.csv"]
    frame = pacsv.read_csv(outputs[0]).to_pandas()
    assert list(frame.columns) == [key, "prediction"] and len(frame) == 1000
    ids, expected = expected_predictions(env["uri"], make_dataset(tmp_path / "pq", rows=3000, partitions=3),
                                         stack=env["stack"])
    got = read_predictions(tmp_path / "out").rename(columns={"0": "id"}).sort_values("id")
    np.testing.assert_array_equal(got["id"].to_numpy(), ids)
    np.testing.assert_array_equal(got["prediction"].to_numpy(), expected)


def test_forced_header_flag_wins_over_detection(env, tmp_path):
    data = make_dataset(tmp_path / "csv", rows=1000, partitions=1, fmt="csv", header=False)
    detected = api.batch_score(env["uri"], data, tmp_path / "a", keys="0", stack=env["stack"])
    assert detected.rows == 1000  # the first row is numbers: data, kept
    # header=True wins: the first row becomes the column names (its id cell "0" names the key column)
    forced = api.batch_score(env["uri"], data, tmp_path / "b", keys="0", header=True, stack=env["stack"])
    assert forced.rows == 999


def test_columns_map_onto_named_model_inputs(env, tmp_path):
    uri = train_small_model("batch-named", stack=env["stack"], dataframe=True)
    table = make_frame(4000, seed=7)
    renamed = table.rename_columns(["key", "a", "b", "c", "d"])
    (tmp_path / "in").mkdir()
    pq.write_table(renamed, tmp_path / "in" / "x.parquet")
    mapping = {"a": "f0", "b": "f1", "c": "f2", "d": "f3"}
    result = api.batch_score(uri, tmp_path / "in", tmp_path / "out", columns=mapping, keys=["key"],
                             stack=env["stack"])
    assert result.ok and result.rows == 4000
    got = pq.read_table(tmp_path / "out" / "x.parquet").to_pandas()
    model = api.load(uri, stack=env["stack"])
    np.testing.assert_array_equal(got["prediction"].to_numpy(), model.predict(table.select(list(FEATURES)).to_pandas()))
    np.testing.assert_array_equal(got["key"].to_numpy(), table.column("id").to_numpy())
    with pytest.raises(InvalidInputError, match="'f0' has no column") as info:
        api.batch_score(uri, tmp_path / "in", tmp_path / "out2", keys=["key"], stack=env["stack"])
    assert "--columns" in info.value.hint


def test_single_tensor_model_needs_keys_or_columns(env, tmp_path):
    with pytest.raises(InvalidInputError, match="takes 4 feature"):
        api.batch_score(env["uri"], env["data"], tmp_path / "out", stack=env["stack"])
    picked = api.batch_score(env["uri"], env["data"], tmp_path / "out", keys="id",
                             columns={"f0": "0", "f1": "1", "f2": "2", "f3": "3"}, stack=env["stack"])
    assert picked.ok
    _assert_exactly_once(tmp_path / "out", env["ids"], env["expected"])


def test_hive_folders_are_kept_and_usable_as_keys(env, tmp_path):
    for day in (1, 2):
        folder = tmp_path / "in" / f"day={day}"
        folder.mkdir(parents=True)
        pq.write_table(make_frame(500, seed=day, start=day * 1000), folder / "part-0.parquet")
    (tmp_path / "in" / "_SUCCESS").touch()
    (tmp_path / "in" / "day=1" / ".part-1.parquet.tmp").write_bytes(b"junk")
    result = api.batch_score(env["uri"], tmp_path / "in", tmp_path / "out", keys=["id", "day"],
                             stack=env["stack"])
    assert result.ok and result.partitions == 2 and result.rows == 1000
    got = pq.read_table(tmp_path / "out" / "day=2" / "part-0.parquet").to_pandas()
    assert list(got.columns) == ["id", "day", "prediction"] and set(got["day"]) == {"2"}


def test_clear_errors_for_bad_jobs(env, tmp_path):
    with pytest.raises(NotFoundError, match="does not exist"):
        api.batch_score(env["uri"], tmp_path / "nope", tmp_path / "out", stack=env["stack"])
    with pytest.raises(InvalidInputError, match="overlap"):
        api.batch_score(env["uri"], env["data"], env["data"] / "out", keys="id", stack=env["stack"])
    with pytest.raises(InvalidInputError, match="unknown batch option"):
        api.batch_score(env["uri"], env["data"], tmp_path / "out", keys="id", bogus=1, stack=env["stack"])
    with pytest.raises(BackendNotFoundError) as info:
        api.batch_score(env["uri"], env["data"], tmp_path / "out", keys="id", engine="no-such-engine",
                        stack=env["stack"])
    assert "local" in info.value.hint  # the hint lists the installed batch engines


def test_batch_score_is_public_and_lazy():
    assert "batch_score" in mlops_core.__all__ and mlops_core.batch_score is api.batch_score


class _Proba:
    """predict returns two columns per row, like predict_proba."""

    def predict(self, x):
        return np.column_stack([x[:, 0], -x[:, 0]])


def test_score_table_on_arrow_record_batches_for_engines_that_read_themselves(env):
    from mlops_core.batch.worker import ModelHandle, load_model, score_table

    _version, path = api.resolve_bundle(env["uri"], stack=env["stack"])
    handle = load_model(str(path), _version.artifact.digest)  # in this process: the same verified path
    assert load_model(str(path), _version.artifact.digest) is handle  # cached by digest
    table = pq.read_table(env["data"] / "part-00001.parquet")
    options = BatchOptions(keys=("id",), batch_rows=777)  # chunks of 777 rows: same result as one call
    out = score_table(table.to_batches()[0], handle, options)
    model = api.load(env["uri"], stack=env["stack"])
    batch = table.to_batches()[0]
    x = np.column_stack([batch.column(f).to_numpy() for f in FEATURES])
    np.testing.assert_array_equal(out.column("prediction").to_numpy(), model.predict(x))
    np.testing.assert_array_equal(out.column("id").to_numpy(), batch.column("id").to_numpy())

    two = score_table(table, ModelHandle(_Proba(), "d", None, _Proba().predict), BatchOptions(keys=("id",)))
    assert two.column_names == ["id", "prediction_0", "prediction_1"]
    np.testing.assert_array_equal(two.column("prediction_1").to_numpy(), -table.column("f0").to_numpy())
