"""``mlops batch`` and what a batch job tells the rest of the stack: JSON, progress, doctor, monitors."""

from __future__ import annotations

import json
import os
import pty
import time

import numpy as np
import pytest

from mlops_core import api
from mlops_core.batch.progress import BatchProgress, terminal_progress
from mlops_core.batch.types import PartitionResult
from mlops_core.stack import ComponentConfig, Stack, load_config
from mlops_core.testing.batch import (batch_stack, expected_predictions, make_dataset, read_predictions,
                                      train_small_model)


def test_cli_json_output_and_no_progress_when_not_a_terminal(tmp_path, run_cli):
    stack = Stack(load_config())  # the stack `mlops` finds in this folder: embedded defaults under ./.mlops
    uri = train_small_model(stack=stack)
    data = make_dataset(tmp_path / "data", rows=6000, partitions=3)
    ids, expected = expected_predictions(uri, data, stack=stack)
    stack.close()
    done = run_cli("batch", uri, "--input", str(data), "--output", str(tmp_path / "out"), "--keys", "id",
                   "--workers", "1", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["rows"] == 6000 and report["partitions"] == 3 and report["engine"] == "local"
    assert report["model"] == "batch-small" and report["version"] == 1 and report["failed"] == []
    assert "partitions" not in done.stderr and "\r" not in done.stderr  # stderr is a pipe: no progress bar
    frame = read_predictions(tmp_path / "out")
    np.testing.assert_array_equal(frame["id"].to_numpy(), ids)
    np.testing.assert_array_equal(frame["prediction"].to_numpy(), expected)

    again = run_cli("batch", uri, "--input", str(data), "--output", str(tmp_path / "out"), "--keys", "id",
                    "--workers", "1")
    assert again.returncode == 0 and "0 rows of 3 partition(s) (3 already complete)" in again.stdout

    bad = run_cli("batch", uri, "--input", str(data), "--output", str(tmp_path / "out2"), "--columns", "nope")
    assert bad.returncode == 2 and "error: --columns expects COLUMN=INPUT" in bad.stderr and "hint:" in bad.stderr
    missing = run_cli("batch", uri, "--input", str(data), "--output", str(tmp_path / "out2"))
    assert missing.returncode == 2 and "takes 4 feature(s)" in missing.stderr and "--keys id" in missing.stderr


def test_doctor_checks_the_batch_engine(run_cli):
    done = run_cli("doctor", "batch", "--json")
    checks = {c["check"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["batch (local)"]["ok"] and "local process pool" in checks["batch (local)"]["detail"]


def test_progress_bar_draws_on_a_terminal_only(tmp_path):
    assert terminal_progress(3, open(os.devnull, "w")) is None
    main, secondary = pty.openpty()
    with os.fdopen(secondary, "w") as tty:
        bar = terminal_progress(3, tty)
        assert isinstance(bar, BatchProgress)
        bar(PartitionResult(0, "in/a", "out/a", rows=1500))
        bar(PartitionResult(1, "in/b", "out/b", error="boom"))
        bar.close()
    text = os.read(main, 4096).decode()
    os.close(main)
    assert "1/3 partitions" in text and "1,500 rows" in text and "1 failed" in text


def test_events_reach_the_stacks_monitors(tmp_path, mlops_hook_recorder):
    stack = batch_stack(tmp_path / ".mlops", settings={"workers": 1}, monitors=[ComponentConfig("prometheus")])
    try:
        uri = train_small_model(stack=stack)
        data = make_dataset(tmp_path / "data", rows=5000, partitions=5)
        result = api.batch_score(uri, data, tmp_path / "out", keys="id", stack=stack)
        assert result.ok
        completed = mlops_hook_recorder.getcalls("mlops_batch_completed")
        assert len(completed) == 1 and completed[0].result is result
        batches = mlops_hook_recorder.getcalls("mlops_predictions_batch")
        assert len(batches) == 5  # one per partition
        first = batches[0].batch
        assert first.model == "batch-small" and first.batch_size == [1000]
        (sample,) = first.inputs["input-0"]
        assert sample.shape == (1000, 4)  # the partition's sample rows, as a server would decode them
        deadline = time.monotonic() + 30
        while True:
            metrics = stack.events.collect_metrics()
            if 'mlops_predictions_total{model="batch-small",version="1"} 5000' in metrics or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert 'mlops_predictions_total{model="batch-small",version="1"} 5000' in metrics
        assert 'mlops_requests_total{model="batch-small",version="1"} 5' in metrics
    finally:
        stack.close()
