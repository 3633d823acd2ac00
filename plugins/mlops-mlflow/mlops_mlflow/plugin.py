"""The mlops-mlflow plugin module (entry point ``mlops_core.plugins: mlflow``).

Kept import-cheap on purpose: it registers import strings and argparse parsers only,
so discovering plugins (and ``mlops --help``) never imports mlflow.
"""

from __future__ import annotations

from mlops_core.plugins import hookimpl

__all__ = ["mlops_register_backends", "mlops_add_cli_commands"]


@hookimpl
def mlops_register_backends(backends):  # type: ignore[no-untyped-def]
    backends.add_registry(
        "mlflow",
        "mlops_mlflow.registry:MlflowRegistry.from_config",
        config="mlops_mlflow.registry:MlflowRegistryConfig",
        summary="model registry of an MLflow tracking server (tracking_uri = \"http://host:port\")",
    )
    backends.add_format(
        "mlflow-pyfunc",
        "mlops_mlflow.pyfunc_format:factory",
        summary="an MLflow model folder kept whole in the bundle, loaded with mlflow.pyfunc (from `mlops models import`)",
    )


@hookimpl
def mlops_add_cli_commands(commands):  # type: ignore[no-untyped-def]
    models = commands.extend("models")
    p = models.add(
        "import", handler="mlops_mlflow.cli:cmd_import",
        help="import an MLflow model (mlflow:/runs:/RUN/PATH, mlflow:/models:/NAME/VERSION, or an MLflow model "
             "folder) as a verified bundle and register it")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("source", help="mlflow:/runs:/RUN/PATH, mlflow:/models:/NAME/VERSION|@ALIAS, or mlflow:PATH")
    p.add_argument("--name", required=True, help="model name to register the bundle under in the current stack")
    p.add_argument("--alias", help="point this alias at the new version")
    p.add_argument("--tracking-uri", help="MLflow tracking server of runs:/ and models:/ URIs "
                                          "(default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--description", default="")
    p = models.add(
        "export", handler="mlops_mlflow.cli:cmd_export",
        help="write a registered version as a model folder of another tool (--format mlflow: a pyfunc model "
             "that `mlflow models serve` serves)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("uri", help="NAME or models:/NAME[/VERSION|@ALIAS]")
    p.add_argument("--format", required=True, choices=["mlflow"], help="the folder's format")
    p.add_argument("--dest", required=True, help="folder to create (must not exist or be empty)")
