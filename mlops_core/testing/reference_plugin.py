"""A plugin offering the kit's reference backends, for fast, dependency-free stacks in tests.

Register it (``mlops_register_plugin(reference_plugin)``, or
``MLOPS_PLUGIN_MODULES=mlops_core.testing.reference_plugin``) and choose:

=============  ===============  =====================================
component      backend          implementation
=============  ===============  =====================================
storage        ``kit-memory``   :class:`InMemoryArtifactStore`
registry       ``kit-memory``   :class:`InMemoryRegistry`
builder        ``kit-tarball``  :class:`TarballImageBuilder` (``<home>/kit-images``)
deployer       ``kit-thread``   :class:`ThreadDeployer` (V2 servers in threads)
=============  ===============  =====================================
"""

from __future__ import annotations

from typing import Any

from ..plugins import hookimpl

_HERE = "mlops_core.testing.reference_plugin"


def storage(config: Any, context: Any) -> Any:
    from .reference_storage import InMemoryArtifactStore

    return InMemoryArtifactStore()


def registry(config: Any, context: Any) -> Any:
    from .reference_registry import InMemoryRegistry

    return InMemoryRegistry()


def builder(config: Any, context: Any) -> Any:
    from .reference_builder import TarballImageBuilder

    return TarballImageBuilder(context.home / "kit-images")


def deployer(config: Any, context: Any) -> Any:
    from .reference_deployer import ThreadDeployer

    return ThreadDeployer(hooks=context.hooks, backend_name=context.name)


@hookimpl
def mlops_register_backends(backends: Any) -> None:
    backends.add_storage("kit-memory", f"{_HERE}:storage", summary="in memory (mlops_core.testing)")
    backends.add_registry("kit-memory", f"{_HERE}:registry", summary="in memory (mlops_core.testing)")
    backends.add_builder("kit-tarball", f"{_HERE}:builder", summary="reproducible tarballs (mlops_core.testing)")
    backends.add_deployer("kit-thread", f"{_HERE}:deployer", summary="V2 servers in threads (mlops_core.testing)")
