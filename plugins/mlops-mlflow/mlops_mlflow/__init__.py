"""mlops-mlflow: MLflow interoperability for mlops-core.

* an ``mlflow`` registry backend (``[registry] backend = "mlflow"``) on an MLflow
  tracking server's model registry, through ``mlflow.MlflowClient``;
* ``mlops models import mlflow:/...`` (:func:`mlops_mlflow.interop.import_model`);
* ``mlops models export NAME --format mlflow`` (:func:`mlops_mlflow.interop.export_model`).

Nothing here imports mlflow at import time: the entry-point module only registers
import strings, and mlflow is imported when a backend is built or a command runs.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
