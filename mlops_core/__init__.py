"""mlops-core: a small plugin-based MLOps SDK.

The public API is what ``__all__`` lists. Attributes are loaded lazily (PEP 562)
so ``import mlops_core`` costs a few milliseconds and imports nothing heavy;
the workflow functions import their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

__all__ = [
    "__version__",
    # workflow API (mlops_core.api)
    "save",
    "load",
    "register",
    "get_stack",
    "resolve",
    "list_models",
    "list_versions",
    "set_alias",
    "delete_alias",
    "set_tag",
    "delete_model",
    "delete_version",
    "build",
    "deploy",
    "deployed",
    "copy_version",
    "gc",
    "sign",
    "batch_score",
    "rollback",
    "undeploy",
    "get_model",
    "set_description",
    "deployments",
    "deployment",
    "deployment_logs",
    "resolve_bundle",
    "set_stack",
    "use_stack",
    # plugin authoring
    "hookimpl",
    "backend",
    "get_plugin_manager",
    # bundles
    "save_bundle",
    "load_bundle",
    "verify_bundle",
    # stack
    "Stack",
    # errors
    "MlopsError",
]

_LAZY = {
    "save": "api", "load": "api", "register": "api", "get_stack": "api", "resolve": "api",
    "list_models": "api", "list_versions": "api", "set_alias": "api", "delete_alias": "api",
    "set_tag": "api", "delete_model": "api", "delete_version": "api", "build": "api",
    "deploy": "api", "deployed": "api", "rollback": "api", "undeploy": "api", "get_model": "api",
    "set_description": "api", "deployments": "api", "deployment": "api", "deployment_logs": "api",
    "resolve_bundle": "api", "set_stack": "api", "use_stack": "api", "copy_version": "api", "gc": "api",
    "sign": "api", "batch_score": "api",
    "hookimpl": "plugins", "backend": "catalog", "get_plugin_manager": "plugins",
    "save_bundle": "bundle", "load_bundle": "bundle", "verify_bundle": "bundle",
    "Stack": "stack",
    "MlopsError": "errors",
}

if TYPE_CHECKING:  # pragma: no cover
    from .api import (build, copy_version, delete_alias, delete_model, delete_version, deploy, deployed, deployment,
                      deployment_logs, deployments, get_model, get_stack, list_models, list_versions, load, register,
                      resolve, resolve_bundle, rollback, save, set_alias, set_description, set_stack, set_tag,
                      undeploy, use_stack, gc, sign, batch_score)
    from .catalog import backend
    from .bundle import load_bundle, save_bundle, verify_bundle
    from .errors import MlopsError
    from .plugins import get_plugin_manager, hookimpl
    from .stack import Stack


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlops_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
