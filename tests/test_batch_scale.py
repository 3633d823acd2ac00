"""One million rows through the local engine: the same predictions as the model's own predict on all rows."""

from __future__ import annotations

import numpy as np
import pytest

from mlops_core import api
from mlops_core.testing.batch import batch_stack, expected_predictions, make_dataset, read_predictions, train_small_model


@pytest.mark.slow
def test_one_million_rows_match_predict_on_the_concatenated_data(tmp_path):
    stack = batch_stack(tmp_path / ".mlops", settings={"workers": 2})
    try:
        uri = train_small_model(stack=stack)
        data = make_dataset(tmp_path / "data", rows=1_000_000, partitions=8)
        result = api.batch_score(uri, data, tmp_path / "out", keys="id", stack=stack)
        assert result.ok and (result.rows, result.partitions) == (1_000_000, 8)
        ids, expected = expected_predictions(uri, data, stack=stack)
        frame = read_predictions(tmp_path / "out")
        assert len(frame) == 1_000_000 and frame["id"].is_unique
        np.testing.assert_array_equal(frame["id"].to_numpy(), ids)
        np.testing.assert_array_equal(frame["prediction"].to_numpy(), expected)
    finally:
        stack.close()
