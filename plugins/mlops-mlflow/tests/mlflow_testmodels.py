"""A custom MLflow pyfunc model for the import tests (shipped with the model through ``code_paths``)."""

from __future__ import annotations

import mlflow.pyfunc


class AffineModel(mlflow.pyfunc.PythonModel):
    """predict = 2 * a + b + offset, row by row, with the offset read from an artifact."""

    def load_context(self, context):
        with open(context.artifacts["offset"]) as f:
            self.offset = float(f.read())

    def predict(self, context, model_input, params=None):
        return (2.0 * model_input["a"] + model_input["b"] + self.offset).to_numpy()


class Affine:
    """A plain dataframe model (no MLflow), saved as a bundle and exported to MLflow in the export tests."""

    def predict(self, frame):
        return (2.0 * frame["a"] + frame["b"]).to_numpy()
