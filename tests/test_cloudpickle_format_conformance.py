"""The core's own model format passes the conformance kit like any format plugin."""

import numpy as np
import pytest

from mlops_core.formats.cloudpickle_format import CloudpickleFormat
from mlops_core.testing.suites import FormatSuite


class TestCloudpickleFormatConformance(FormatSuite):
    # cloudpickle saves any callable or object with predict(); a bare object() has neither.
    rejects_foreign_objects = True

    @pytest.fixture
    def backend(self):
        return CloudpickleFormat()


class TestCloudpickleFormatWithScikitLearn(TestCloudpickleFormatConformance):
    @pytest.fixture
    def model(self):
        from sklearn.datasets import load_iris
        from sklearn.ensemble import RandomForestClassifier

        X, y = load_iris(return_X_y=True)
        return RandomForestClassifier(n_estimators=5, random_state=0).fit(X, y)

    @pytest.fixture
    def example(self):
        return np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])

    def assert_same_predictions(self, expected, actual):
        assert np.array_equal(np.asarray(expected), np.asarray(actual))
