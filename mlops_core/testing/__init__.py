"""The test kit for plugin authors: reference implementations to test a backend against.

Import the pieces you need from their modules (for example
:class:`mlops_core.testing.reference_registry.InMemoryRegistry`, the reference
model a registry backend is compared with in conformance tests). This package
imports nothing itself, so it costs nothing unless a test uses it.
"""

# --- conformance kit (issue 6): the names below are imported on first access only,
# so ``import mlops_core.testing`` still imports neither pytest nor hypothesis.
#
#   mlops_core.testing.suites          StorageSuite, RegistrySuite, BuilderSuite, DeployerSuite,
#                                      MonitorSuite, FormatSuite (subclass one, define ``backend``)
#   mlops_core.testing.strategies      Hypothesis strategies: names, tags, signatures, tensors, manifests
#   mlops_core.testing.stateful        state machines: a backend side by side with a reference
#   mlops_core.testing.reference_*     InMemoryRegistry, InMemoryArtifactStore, ThreadDeployer
#   mlops_core.testing.pytest_plugin   fixtures: mlops_plugin_manager, mlops_register_plugin,
#                                      mlops_hook_recorder, mlops_stack
#   mlops_core.testing.waiting         wait_until: poll an observable condition with a deadline
_KIT = {
    "StorageSuite": "suites", "RegistrySuite": "suites", "BuilderSuite": "suites", "DeployerSuite": "suites",
    "MonitorSuite": "suites", "FormatSuite": "suites", "ConformanceSuite": "suites",
    "InMemoryRegistry": "reference_registry", "InMemoryArtifactStore": "reference_storage",
    "ThreadDeployer": "reference_deployer", "DoublingModel": "models",
    "run_registry_state_machine": "stateful", "run_storage_state_machine": "stateful",
    "wait_until": "waiting",
}


def __getattr__(name: str):  # PEP 562: lazy, so the kit costs nothing until used
    import importlib

    module = _KIT.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
