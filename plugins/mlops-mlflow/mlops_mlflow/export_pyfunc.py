"""The pyfunc model that MLflow model folders written by ``mlops models export --format mlflow`` load.

MLflow pickles an instance of :class:`BundlePythonModel` *by reference* to this module,
so the serving environment needs mlops-mlflow installed; the model itself is the
bundle (every hash verified when MLflow loads it).
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc

__all__ = ["BundlePythonModel"]


class BundlePythonModel(mlflow.pyfunc.PythonModel):
    """Loads the bundle in ``load_context`` and hands MLflow's input to its ``predict``."""

    def load_context(self, context: Any) -> None:
        from mlops_core.bundle import load_bundle

        loaded = load_bundle(context.artifacts["bundle"])
        self._model = loaded.model
        sig = loaded.signature
        self._kind = sig.input_kind if sig is not None else "ndarray"

    # no type hints on predict: MLflow would read them as an input schema
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        X = model_input
        # A bundle that took arrays gets one; dataframe bundles get MLflow's DataFrame as is.
        if self._kind == "ndarray" and hasattr(X, "to_numpy"):
            X = X.to_numpy()
        predict = getattr(self._model, "predict", None) or self._model
        return predict(X)
