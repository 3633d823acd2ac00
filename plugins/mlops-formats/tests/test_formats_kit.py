"""Every format of mlops-formats passes the kit's FormatSuite: round trips, signatures, tamper refusal."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mlops_core.testing import FormatSuite




def assert_outputs_close(expected: Any, actual: Any) -> None:
    if isinstance(expected, dict):
        assert set(actual) == set(expected)
        for k in expected:
            np.testing.assert_allclose(np.asarray(actual[k], dtype=np.float64), np.asarray(expected[k], dtype=np.float64),
                                       rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64),
                                   rtol=1e-5, atol=1e-6)


class TestOnnxFormat(FormatSuite):
    describes_signature = True

    @pytest.fixture
    def backend(self):
        pytest.importorskip("onnxruntime")
        from mlops_formats.onnx_format import OnnxFormat

        return OnnxFormat()

    @pytest.fixture
    def model(self, onnx_proto):
        return onnx_proto

    @pytest.fixture
    def example(self, iris):
        return iris[0][:20]

    def predict(self, model: Any, example: Any) -> Any:
        import onnx

        from mlops_formats.onnx_format import OnnxModel, OnnxSettings

        if isinstance(model, onnx.ModelProto):
            model = OnnxModel(model.SerializeToString(), OnnxSettings())
        return model.predict(example)

    def assert_same_predictions(self, expected: Any, actual: Any) -> None:
        assert_outputs_close(expected, actual)


class TestSkopsFormat(FormatSuite):
    @pytest.fixture
    def backend(self):
        pytest.importorskip("skops")
        from mlops_formats.skops_format import SkopsFormat

        return SkopsFormat()

    @pytest.fixture
    def model(self, sk_model):
        return sk_model

    @pytest.fixture
    def example(self, iris):
        return iris[0][:20]

    def assert_same_predictions(self, expected: Any, actual: Any) -> None:
        np.testing.assert_array_equal(actual, expected)


class TestXGBoostFormat(FormatSuite):
    @pytest.fixture
    def backend(self):
        from mlops_formats.trees_format import XGBoostFormat

        return XGBoostFormat()

    @pytest.fixture
    def model(self, xgb_model):
        return xgb_model

    @pytest.fixture
    def example(self, iris):
        return iris[0][::7]

    def assert_same_predictions(self, expected: Any, actual: Any) -> None:
        np.testing.assert_array_equal(actual, expected)


class TestLightGBMFormat(FormatSuite):
    @pytest.fixture
    def backend(self):
        from mlops_formats.trees_format import LightGBMFormat

        return LightGBMFormat()

    @pytest.fixture
    def model(self, lgb_model):
        return lgb_model

    @pytest.fixture
    def example(self, iris):
        return iris[0][::7]

    def assert_same_predictions(self, expected: Any, actual: Any) -> None:
        np.testing.assert_array_equal(actual, expected)


class TestTorchExportFormat(FormatSuite):
    describes_signature = True

    @pytest.fixture
    def backend(self):
        from mlops_formats.torch_format import TorchFormat

        return TorchFormat()

    @pytest.fixture
    def model(self, torch_program):
        return torch_program

    @pytest.fixture
    def example(self, iris):
        return iris[0][:9]

    def predict(self, model: Any, example: Any) -> Any:
        import torch

        if isinstance(model, torch.export.ExportedProgram):
            with torch.inference_mode():
                return model.module()(torch.from_numpy(np.ascontiguousarray(example))).numpy()
        return model.predict(example)

    def assert_same_predictions(self, expected: Any, actual: Any) -> None:
        assert_outputs_close(expected, actual)


class _CommandSuite(FormatSuite):
    describes_signature = True

    @pytest.fixture
    def backend(self):
        from mlops_formats.command_format import CommandFormat

        return CommandFormat()

    @pytest.fixture
    def example(self, iris):
        return iris[0][::5]

    def predict(self, model: Any, example: Any) -> Any:
        from mlops_formats.command_format import CommandModel

        if isinstance(model, CommandModel):
            import command_models as models

            scores, label = models.expected(example)
            return {"scores": scores, "label": label}
        try:
            return model.predict(example)
        finally:
            model.close()  # stop the program now rather than at garbage collection

    def assert_same_predictions(self, expected: Any, actual: Any) -> None:
        assert_outputs_close(expected, actual)


class TestCommandNodeFormat(_CommandSuite):
    @pytest.fixture
    def model(self):
        import command_models as models

        return models.node_model()


class TestCommandGoFormat(_CommandSuite):
    @pytest.fixture
    def model(self, go_program):
        return go_program
