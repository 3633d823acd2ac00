"""mlops-process-deployer: the embedded default deployer of mlops-core.

Each deployment is one detached ``python -m mlops_server`` process listening on a
port that never changes for the deployment's life; its state lives in
``<home>/deployments/<name>/state.json`` so any shell sees it. Use it from a stack
(``[deployer] backend = "process"``, the default) or directly::

    from mlops_process_deployer import ProcessDeployer, ProcessDeployerConfig
    deployer = ProcessDeployer(ProcessDeployerConfig(), home=Path(".mlops"))

The classes load lazily (PEP 562), so importing the package (which the plugin
entry point does) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["ProcessDeployer", "ProcessDeployerConfig", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .config import ProcessDeployerConfig
    from .deployer import ProcessDeployer


def __getattr__(name: str) -> Any:
    if name == "ProcessDeployer":
        from .deployer import ProcessDeployer

        return ProcessDeployer
    if name == "ProcessDeployerConfig":
        from .config import ProcessDeployerConfig

        return ProcessDeployerConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
