"""The ``mlflow-pyfunc`` model format: an MLflow model folder kept whole inside a bundle.

Used by ``mlops models import`` for MLflow models that have no native format in this
project (custom ``PythonModel``\\ s, flavors we do not read natively). The bundle holds the
MLflow model folder under ``mlflow_model/`` (every file hashed in the manifest, like any
bundle); loading verifies the hashes first (the core does), then calls
``mlflow.pyfunc.load_model`` on the folder. mlflow is imported only in ``load``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from mlops_core.interfaces import ModelFormat

__all__ = ["MlflowPyfuncFormat", "MlflowModelFolder", "PyfuncModel", "FOLDER"]

#: Where the MLflow model folder sits inside the bundle.
FOLDER = "mlflow_model"


class PyfuncModel:
    """A loaded MLflow pyfunc model behind the ``predict(X)`` the core and the V2 server call."""

    def __init__(self, pyfunc: Any) -> None:
        self.pyfunc = pyfunc

    def predict(self, X: Any) -> Any:
        return self.pyfunc.predict(X)


class MlflowModelFolder(PyfuncModel):
    """What ``save_bundle`` is handed to store an MLflow model folder with this format.

    ``predict`` goes to the loaded pyfunc, so a signature can be inferred from an example.
    """

    def __init__(self, path: Path, pyfunc: Any) -> None:
        super().__init__(pyfunc)
        self.path = Path(path)


class MlflowPyfuncFormat(ModelFormat):
    name = "mlflow-pyfunc"

    def can_save(self, model: Any) -> bool:
        return isinstance(model, MlflowModelFolder)

    def save(self, model: Any, directory: Path) -> Sequence[str]:
        dest = directory / FOLDER
        shutil.copytree(model.path, dest, symlinks=False)
        return sorted(str(Path(root, f).relative_to(directory).as_posix())
                      for root, _dirs, files in os.walk(dest) for f in files)

    def load(self, directory: Path, manifest: Mapping[str, Any]) -> Any:
        from mlops_core.errors import InvalidInputError

        folder = directory / FOLDER
        if not (folder / "MLmodel").is_file():
            raise InvalidInputError(f"{directory} holds no MLflow model ({FOLDER}/MLmodel is missing)",
                                    hint="this bundle is damaged: import the MLflow model again")
        import mlflow.pyfunc
        from mlflow.exceptions import MlflowException

        try:
            return PyfuncModel(mlflow.pyfunc.load_model(str(folder)))
        except MlflowException as exc:
            raise InvalidInputError(f"MLflow could not load the model in {folder}: {exc.message}",
                                    hint="install the model's requirements (see the bundle manifest)") from None

    def imported_modules(self, directory: Path) -> set[str]:
        return {"mlflow"}


def factory(config: Any, context: Any) -> MlflowPyfuncFormat:
    return MlflowPyfuncFormat()
