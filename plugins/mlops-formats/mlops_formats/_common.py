"""Helpers shared by the formats: reading a verified bundle file once, small sidecar JSON files,
numpy conversions, and the install hint when a framework is missing."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

from mlops_core.bundle import canonical_json
from mlops_core.errors import InvalidInputError, MlopsError, PluginError

__all__ = ["read_payload", "write_json", "read_json", "require", "env_int", "env_list", "as_numpy_inputs",
           "MlopsError"]


def read_payload(directory: Path, name: str) -> bytes:
    """The bytes of one bundle file, read once.

    Every format reads its files only through this function, so the loader can
    hand it verified bytes (or an already-open, already-hashed file) instead of a
    path to re-open: the hash check and the parse then see the same bytes.
    """
    path = Path(directory) / name
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise InvalidInputError(f"the bundle at {directory} has no {name!r}",
                                hint="the bundle is incomplete or of another format; save the model again") from None


def write_json(directory: Path, name: str, data: Mapping[str, Any]) -> str:
    (Path(directory) / name).write_bytes(canonical_json(dict(data)))
    return name


def read_json(directory: Path, name: str) -> dict[str, Any]:
    raw = read_payload(directory, name)
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"{name} in {directory} is not valid JSON: {exc}", hint="save the model again") from None
    if not isinstance(data, dict):
        raise InvalidInputError(f"{name} in {directory} is not a JSON object", hint="save the model again")
    return data


def require(module: str, extra: str) -> Any:
    """Import a framework module, or fail with the pip command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PluginError(f"this model format needs the Python module {module!r}, which cannot be imported ({exc})",
                          hint=f"pip install 'mlops-formats[{extra}]'") from None
    except OSError as exc:  # the module is there but a system library it loads is not (LightGBM: libgomp.so.1)
        raise PluginError(f"the Python module {module!r} cannot load a system library it needs: {exc}",
                          hint="install that library where the model runs; in an image, use a base that has it "
                               "(libgomp.so.1 is Debian's libgomp1; `mlops image base` includes it)") from None


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidInputError(f"{name}={raw!r} is not an integer", hint=f"set {name} to a whole number, or unset it") from None
    if value < 0:
        raise InvalidInputError(f"{name}={raw!r} is negative", hint="use 0 for the library's default")
    return value


def env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def as_numpy_inputs(x: Any, names: list[str]) -> dict[str, Any]:
    """A predict() argument (one array, a list, or a dict of arrays) as {input name: numpy array}."""
    import numpy as np

    if isinstance(x, Mapping):
        unknown = [k for k in x if k not in names]
        if unknown:
            raise InvalidInputError(f"unknown input(s) {unknown}; the model takes {names}", hint="name the inputs as in the signature")
        return {k: np.asarray(v) for k, v in x.items()}
    if len(names) != 1:
        raise InvalidInputError(f"the model takes {len(names)} inputs {names}; pass a dict of arrays",
                                hint="call predict({name: array, ...})")
    return {names[0]: np.asarray(x)}
