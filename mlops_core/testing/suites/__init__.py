"""The conformance suites, one per component: subclass one and define the ``backend`` fixture.

::

    from mlops_core.testing.suites import StorageSuite, RegistrySuite, BuilderSuite, \
        DeployerSuite, MonitorSuite, FormatSuite

Importing this package imports pytest and registers the suite modules for
pytest's assertion rewriting, so a failing check shows the values it compared.
Each suite class is imported on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

# Before any suite module is imported: their asserts then explain themselves.
pytest.register_assert_rewrite(
    *(f"{__name__}.{m}" for m in ("_base", "storage", "registry", "builder", "deployer", "monitor", "formats")),
    "mlops_core.testing.stateful",
)

__all__ = ["ConformanceSuite", "StorageSuite", "RegistrySuite", "BuilderSuite", "DeployerSuite", "MonitorSuite",
           "FormatSuite"]

_WHERE = {"ConformanceSuite": "_base", "StorageSuite": "storage", "RegistrySuite": "registry",
          "BuilderSuite": "builder", "DeployerSuite": "deployer", "MonitorSuite": "monitor", "FormatSuite": "formats"}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
