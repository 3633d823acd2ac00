"""Batch scoring against an S3 API for real (a moto server on loopback): input, output and the staged bundle."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("s3fs")

from cloud_services import moto_s3  # noqa: E402

from mlops_core import api  # noqa: E402
from mlops_core.stack import DEFAULTS, SINGLE_COMPONENTS, ComponentConfig, Stack, StackConfig  # noqa: E402
from mlops_core.testing.batch import (expected_predictions, make_dataset, read_predictions,  # noqa: E402
                                      train_small_model)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("clouds")]


def test_s3_round_trip_with_the_bundle_staged_for_workers(tmp_path, monkeypatch):
    import fsspec

    with moto_s3(tmp_path, "lake") as options:
        # workers get no storage_options for the bundle URL: credentials come from the environment, as on a cluster
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", options["endpoint_url"])
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        components = {c: ComponentConfig(DEFAULTS[c]) for c in SINGLE_COMPONENTS}
        components["batch"] = ComponentConfig("local", {"workers": 2})
        stack = Stack(StackConfig(home=tmp_path / ".mlops", components=components, source="test"))
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
