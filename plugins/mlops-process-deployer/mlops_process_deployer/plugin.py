"""The ``process`` deployer's plugin module (entry point ``mlops_core.plugins: process``).

Import-cheap on purpose: it registers import strings only, so discovering plugins
never imports the deployer, subprocess handling or the model server.
"""

from __future__ import annotations

from mlops_core.plugins import hookimpl

__all__ = ["mlops_register_backends"]


@hookimpl
def mlops_register_backends(backends):  # type: ignore[no-untyped-def]
    backends.add_deployer(
        "process",
        "mlops_process_deployer.deployer:ProcessDeployer.from_config",
        config="mlops_process_deployer.config:ProcessDeployerConfig",
        summary="runs each deployment as a local mlops-server process (state under <home>/deployments); "
                "rolling updates on one stable port with no failed request",
    )
