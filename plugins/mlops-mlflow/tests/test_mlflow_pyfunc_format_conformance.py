"""The ``mlflow-pyfunc`` model format passes the kit's FormatSuite with a real MLflow model folder."""

from __future__ import annotations

import numpy as np
import pytest

from mlops_core.testing.suites import FormatSuite
from mlops_mlflow.pyfunc_format import MlflowModelFolder, MlflowPyfuncFormat

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mlflow")]


class TestMlflowPyfuncFormatConformance(FormatSuite):
    # can_save is True only for an MlflowModelFolder (what `mlops models import` hands it)
    rejects_foreign_objects = True

    @pytest.fixture
    def backend(self):
        return MlflowPyfuncFormat()

    @pytest.fixture
    def model(self, tmp_path_factory):
        import mlflow.pyfunc
        import mlflow.sklearn
        from sklearn.datasets import load_iris
        from sklearn.linear_model import LogisticRegression

        X, y = load_iris(return_X_y=True)
        folder = tmp_path_factory.mktemp("mlflow-model") / "logreg"
        mlflow.sklearn.save_model(LogisticRegression(max_iter=1000).fit(X, y), str(folder))
        return MlflowModelFolder(folder, mlflow.pyfunc.load_model(str(folder)))

    @pytest.fixture
    def example(self):
        return np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])

    def assert_same_predictions(self, expected, actual):
        assert np.array_equal(np.asarray(expected), np.asarray(actual))
