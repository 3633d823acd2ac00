"""Batch scoring against object stores for real: S3 (a moto server) and Azure Blob (Azurite), on loopback."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("s3fs")

from cloud_services import azurite, moto_s3  # noqa: E402

from mlops_core import api  # noqa: E402
from mlops_core.testing.batch import (batch_stack, expected_predictions, make_dataset,  # noqa: E402
                                      read_predictions, train_small_model)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("clouds")]


def test_s3_round_trip_with_the_bundle_staged_for_workers(tmp_path, monkeypatch):
    import fsspec

    with moto_s3(tmp_path, "lake") as options:
        # workers get no storage_options for the bundle URL: credentials come from the environment, as on a cluster
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", options["endpoint_url"])
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        stack = batch_stack(tmp_path / ".mlops", settings={"workers": 2})
        try:
            uri = train_small_model(stack=stack)
            data = make_dataset(tmp_path / "data", rows=8000, partitions=4)
            ids, expected = expected_predictions(uri, data, stack=stack)
            fs = fsspec.filesystem("s3", **options)
            fs.put(str(data) + "/", "lake/in/", recursive=True)
            result = api.batch_score(uri, "s3://lake/in", "s3://lake/out", keys="id", storage_options=options,
                                     bundle_url="s3://lake/bundles", stack=stack)
            assert result.ok and result.rows == 8000 and result.partitions == 4
            assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls("lake/out")) == \
                [f"part-{i:05d}.parquet" for i in range(4)]
            assert fs.exists("lake/bundles/" + api.resolve(uri, stack=stack).artifact.digest.split(":")[1]
                             + "/manifest.json")
            frame = read_predictions("s3://lake/out", storage_options=options)
            np.testing.assert_array_equal(frame["id"].to_numpy(), ids)
            np.testing.assert_array_equal(frame["prediction"].to_numpy(), expected)
            again = api.batch_score(uri, "s3://lake/in", "s3://lake/out", keys="id", storage_options=options,
                                    bundle_url="s3://lake/bundles", stack=stack)
            assert (again.rows, again.skipped) == (0, 4)
        finally:
            stack.close()


def test_azure_blob_round_trip(tmp_path):
    pytest.importorskip("adlfs")
    import fsspec

    with azurite(tmp_path, "lake") as options:
        stack = batch_stack(tmp_path / ".mlops", settings={"workers": 1})
        try:
            uri = train_small_model(stack=stack)
            data = make_dataset(tmp_path / "data", rows=3000, partitions=3, fmt="csv")
            ids, expected = expected_predictions(uri, make_dataset(tmp_path / "pq", rows=3000, partitions=3),
                                                 stack=stack)
            fs = fsspec.filesystem("abfs", **options)
            for path in sorted(data.iterdir()):
                fs.put_file(str(path), f"lake/in/{path.name}")
            result = api.batch_score(uri, "abfs://lake/in", "abfs://lake/out", keys="id", output_format="csv",
                                     storage_options=options, stack=stack)
            assert result.ok and result.rows == 3000 and result.partitions == 3
            frame = read_predictions("abfs://lake/out", storage_options=options)
            np.testing.assert_array_equal(frame["id"].to_numpy(), ids)
            np.testing.assert_array_equal(frame["prediction"].to_numpy(), expected)
        finally:
            stack.close()
