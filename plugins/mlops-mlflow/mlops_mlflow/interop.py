"""Moving models between MLflow and mlops-core bundles.

* :func:`import_model`: an MLflow model (``runs:/``, ``models:/`` on a tracking server,
  or a local MLflow model folder) -> a verified bundle registered in the current stack.
  An ``sklearn`` flavor is loaded with ``mlflow.sklearn`` and saved in the core's
  ``cloudpickle`` format (the native format this project has for scikit-learn);
  anything else is kept whole as an ``mlflow-pyfunc`` bundle (loaded with
  ``mlflow.pyfunc.load_model``).
* :func:`export_model`: a registered version -> an MLflow model folder (a pyfunc model
  whose artifact is the verified bundle) that ``mlflow models serve`` accepts.

mlflow is imported inside the functions only.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import attrs

from mlops_core.entities import Lineage, ModelVersion
from mlops_core.errors import AlreadyExistsError, BackendUnavailableError, InvalidInputError, NotFoundError

__all__ = ["import_model", "export_model", "parse_source", "MlflowSource", "NATIVE_FLAVORS"]

#: MLflow flavors imported into a native format of this project (flavor -> bundle format).
NATIVE_FLAVORS = {"sklearn": "cloudpickle"}


@attrs.frozen
class MlflowSource:
    """Where an MLflow model comes from: a ``runs:/`` or ``models:/`` URI, or a local folder."""

    kind: str  # "runs", "models" or "folder"
    uri: str  # the MLflow URI, or the folder path


def parse_source(source: str) -> MlflowSource:
    """``mlflow:/runs:/RUN/PATH``, ``mlflow:/models:/NAME/V``, ``mlflow:/models:/NAME@A``, ``mlflow:PATH``.

    The ``mlflow:`` prefix is optional for the MLflow URIs and for an existing folder.
    """
    if not isinstance(source, str) or not source:
        raise InvalidInputError("empty MLflow model source", hint="pass mlflow:/runs:/RUN/PATH, "
                                "mlflow:/models:/NAME/VERSION or an MLflow model folder")
    rest = source[len("mlflow:"):] if source.startswith("mlflow:") else source
    for kind in ("runs", "models"):
        for prefix in (f"/{kind}:/", f"{kind}:/"):
            if rest.startswith(prefix):
                uri = rest[len(prefix) - len(f"{kind}:/"):] if prefix.startswith("/") else rest
                body = uri[len(f"{kind}:/"):]
                if not body.strip("/"):
                    raise InvalidInputError(f"incomplete MLflow URI {source!r}",
                                            hint=f"use {kind}:/RUN_ID/PATH" if kind == "runs"
                                            else "use models:/NAME/VERSION or models:/NAME@ALIAS")
                return MlflowSource(kind, uri)
    path = Path(rest).expanduser()
    if not (path / "MLmodel").is_file():
        raise InvalidInputError(f"{source!r} is neither an MLflow URI nor an MLflow model folder (no MLmodel file)",
                                hint="pass mlflow:/runs:/RUN/PATH, mlflow:/models:/NAME/VERSION, "
                                     "or a folder written by mlflow.<flavor>.save_model")
    return MlflowSource("folder", str(path.resolve()))


def _download(src: MlflowSource, dest: Path, tracking_uri: str | None) -> Path:
    if src.kind == "folder":
        return Path(src.uri)
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=src.uri, dst_path=str(dest),
                                                    tracking_uri=tracking_uri)
    except MlflowException as exc:
        code = getattr(exc, "error_code", "")
        if code == "RESOURCE_DOES_NOT_EXIST":
            raise NotFoundError(f"MLflow has no model at {src.uri}: {exc.message}",
                                hint="check the run id / model name and version (and --tracking-uri)") from None
        raise BackendUnavailableError(f"could not download {src.uri}: {exc.message}",
                                      hint="check --tracking-uri / MLFLOW_TRACKING_URI") from None
    except OSError as exc:
        raise BackendUnavailableError(f"could not download {src.uri}: {exc}",
                                      hint="check that the MLflow tracking server is running") from None
    path = Path(local)
    if not (path / "MLmodel").is_file():
        raise InvalidInputError(f"{src.uri} is not an MLflow model (no MLmodel file in {path.name})",
                                hint="point at the model's folder inside the run, e.g. runs:/RUN/model")
    return path


def _input_example(folder: Path) -> Any:
    """The model's saved input example as a numpy array or DataFrame, or None."""
    from mlflow.models import Model

    try:
        example = Model.load(str(folder)).load_input_example(str(folder))
    except Exception:  # an unreadable example is no reason to refuse the import
        return None
    if example is None:
        return None
    if isinstance(example, dict):  # {"inputs": ...} or column dicts
        import pandas as pd

        try:
            return pd.DataFrame(example)
        except ValueError:
            return None
    return example


def import_model(source: str, name: str, *, alias: str | None = None, description: str = "",
                 tracking_uri: str | None = None, stack: Any = None) -> ModelVersion:
    """Import an MLflow model as a verified bundle and register it as a new version of ``name``.

    Returns the registered version; the bundle's format is in its manifest
    (``cloudpickle`` for sklearn, ``mlflow-pyfunc`` otherwise), and the MLflow origin is
    recorded in the version's lineage (``source_run``) and tags (``mlflow.source``,
    ``mlflow.flavor``).
    """
    from mlops_core import api
    from mlops_core.entities import validate_alias, validate_model_name

    validate_model_name(name)
    if alias is not None:
        validate_alias(alias)
    src = parse_source(source)
    s = api._stack(stack)
    with tempfile.TemporaryDirectory(prefix="mlops-mlflow-import-") as tmp:
        folder = _download(src, Path(tmp) / "download", tracking_uri)
        from mlflow.models import Model

        mlmodel = Model.load(str(folder))
        flavors = dict(mlmodel.flavors)
        example = _input_example(folder)
        if "sklearn" in flavors:
            import mlflow.sklearn

            model: Any = mlflow.sklearn.load_model(str(folder))
            flavor, fmt = "sklearn", NATIVE_FLAVORS["sklearn"]
            if example is not None and hasattr(example, "to_numpy") and not hasattr(model, "feature_names_in_"):
                example = example.to_numpy()
        elif "python_function" in flavors:
            import mlflow.pyfunc

            from .pyfunc_format import MlflowModelFolder

            model = MlflowModelFolder(folder, mlflow.pyfunc.load_model(str(folder)))
            flavor, fmt = "python_function", "mlflow-pyfunc"
        else:
            raise InvalidInputError(f"the MLflow model at {source!r} has no python_function flavor "
                                    f"(flavors: {', '.join(sorted(flavors))})",
                                    hint="only models MLflow can load as pyfunc, or sklearn models, can be imported")
        bundle_path = s.home / "bundles" / f"mlflow-{uuid.uuid4().hex[:12]}"
        info = api.save(model, bundle_path, example=example, format=fmt,
                        metadata={"mlflow": {"source": src.uri, "flavor": flavor,
                                             "run_id": mlmodel.run_id or None}},
                        stack=s)
    tags = {"mlflow.source": src.uri, "mlflow.flavor": flavor}
    lineage = Lineage(source_run=mlmodel.run_id or None)
    try:
        return api.register(name, info, alias=alias, description=description, tags=tags, lineage=lineage, stack=s)
    finally:
        shutil.rmtree(bundle_path, ignore_errors=True)  # pushed to the stack's storage by now


# ------------------------------------------------------------------ export
def export_model(uri: str, dest: str | Path, *, stack: Any = None) -> Path:
    """Write version ``uri`` (``NAME`` or ``models:/NAME[/V|@ALIAS]``) as an MLflow pyfunc model folder.

    The folder holds the verified bundle as the pyfunc's artifact and loads it with
    :class:`mlops_mlflow.export_pyfunc.BundlePythonModel`, so the environment that serves
    it needs mlops-core, mlops-mlflow and the bundle's own requirements
    (``mlflow models serve --env-manager local`` in this environment has them all).
    """
    from mlops_core import api
    from mlops_core.bundle import read_manifest

    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise AlreadyExistsError(f"{dest} already exists and is not empty", hint="choose another --dest")
    if not uri.startswith("models:/"):
        uri = f"models:/{uri}"
    s = api._stack(stack)
    version, bundle = api.resolve_bundle(uri, stack=s)
    manifest, _ = read_manifest(bundle)
    import mlflow.pyfunc

    from .export_pyfunc import BundlePythonModel

    requirements = [f"{r['name']}=={r['version']}" for r in manifest.get("requirements") or []
                    if r.get("name") and r.get("version")]
    requirements = sorted(set(requirements) | {"mlops-core", "mlops-mlflow"})
    example = _example_for_mlflow(bundle, manifest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex}"
    try:
        mlflow.pyfunc.save_model(
            str(tmp), python_model=BundlePythonModel(), artifacts={"bundle": str(bundle)},
            pip_requirements=requirements, input_example=example,
            metadata={"mlops": {"model": version.model, "version": version.version,
                                "digest": version.artifact.digest}},
        )
        if dest.exists():
            dest.rmdir()
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def _example_for_mlflow(bundle: Path, manifest: dict[str, Any]) -> Any:
    """The bundle's example rows as a DataFrame MLflow can store, or None."""
    from mlops_core.bundle import read_example, verify_bundle

    body = read_example(verify_bundle(bundle))
    if not body or not body.get("inputs"):
        return None
    import numpy as np
    import pandas as pd

    inputs = body["inputs"]
    if len(inputs) == 1:
        arr = np.asarray(inputs[0]["data"]).reshape(inputs[0]["shape"])
        if arr.ndim == 2:
            return pd.DataFrame(arr)
        if arr.ndim == 1:
            return pd.DataFrame({inputs[0]["name"]: arr})
        return None
    try:
        return pd.DataFrame({i["name"]: np.asarray(i["data"]).reshape(-1) for i in inputs})
    except ValueError:
        return None
