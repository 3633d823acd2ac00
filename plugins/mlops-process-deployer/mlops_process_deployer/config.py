"""Settings of the ``process`` deployer (stack ``[deployer]`` table or ``MLOPS_DEPLOYER__<KEY>``).

Settings from the environment arrive as text, so every field converts its input.
Per-deployment options (``mlops deploy --option key=value``) are described in
:data:`SERVER_OPTIONS`.
"""

from __future__ import annotations

import shlex
import sys
from typing import Any, Mapping

import attrs

__all__ = ["ProcessDeployerConfig", "SERVER_OPTIONS", "MANAGED_FLAGS", "parse_port_range"]

#: Per-deployment options that become ``python -m mlops_server`` flags (``max_batch_size=8`` ->
#: ``--max-batch-size 8``). ``port`` is handled by the deployer itself; everything else is refused.
SERVER_OPTIONS: Mapping[str, str] = {
    "workers": "--workers",
    "max_batch_size": "--max-batch-size",
    "max_batch_wait_ms": "--max-batch-wait-ms",
    "timeout": "--timeout",
    "max_body_bytes": "--max-body-bytes",
    "max_queue": "--max-queue",
    "executor": "--executor",
    "threads": "--threads",
    "drain_timeout": "--drain-timeout",
    "log_level": "--log-level",
    "log_format": "--log-format",
}


def parse_port_range(value: Any) -> tuple[int, int]:
    """``0`` (any free port), ``8080``, ``"8100-8199"`` or ``[8100, 8199]`` -> ``(low, high)``."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        low, high = int(value[0]), int(value[1])
    elif isinstance(value, str) and "-" in value.strip().lstrip("-"):
        first, _, second = value.strip().partition("-")
        low, high = int(first), int(second)
    else:
        low = high = int(value)
    if low == high == 0:
        return (0, 0)
    if not (1 <= low <= high <= 65535):
        raise ValueError(f"port must be 0, a port 1-65535 or a range 'LOW-HIGH', got {value!r}")
    return (low, high)


def _args(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(shlex.split(value))
    return tuple(str(v) for v in value)


#: Flags the deployer sets itself on every server. In ``server_args`` they would be read
#: after the deployer's own (argparse keeps the last), so ``--host 0.0.0.0`` there made the
#: server listen on every interface while the deployment still reported 127.0.0.1.
MANAGED_FLAGS = ("--bundle", "--name", "--model-version", "--host", "--port", "--reuse-port",
                 "--listen-from")


def _no_managed_flags(_inst: Any, _attribute: Any, value: tuple[str, ...]) -> None:
    for arg in value:
        flag = arg.split("=", 1)[0]
        if not flag.startswith("--") or len(flag) < 3:
            continue
        # argparse accepts unambiguous prefixes (--ho for --host): refuse those too.
        managed = [m for m in MANAGED_FLAGS if m.startswith(flag)]
        if managed and flag not in SERVER_OPTIONS.values():
            setting = {"--host": "host", "--port": "port"}.get(managed[0])
            hint = (f"set `{setting} = ...` in the [deployer] table instead" if setting
                    else "the deployer sets it for every server; remove it from server_args")
            raise ValueError(f"server_args must not contain {arg!r} ({managed[0]} is set by the deployer); {hint}")


def _positive(_inst: Any, attribute: Any, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be positive, got {value}")


@attrs.frozen
class ProcessDeployerConfig:
    """How deployments are run.

    ``port`` is chosen once, at a deployment's first deploy, and kept for its whole
    life (updates and rollbacks bind the same port with SO_REUSEPORT), so its URL
    never changes. ``0`` picks a free port; ``"8100-8199"`` the first free port of
    the range; a single number that port. ``mlops deploy --option port=N`` overrides
    it for one new deployment.
    """

    #: Address every server listens on.
    host: str = "127.0.0.1"
    #: 0 (a free port), one port, or a range "LOW-HIGH" to pick a free one from.
    port: tuple[int, int] = attrs.field(default=(0, 0), converter=parse_port_range)
    #: Python interpreter that runs ``-m mlops_server`` (it must have mlops-server installed).
    python: str = sys.executable
    #: Extra ``python -m mlops_server`` arguments for every deployment (text is split like a shell does).
    server_args: tuple[str, ...] = attrs.field(default=(), converter=_args, validator=_no_managed_flags)
    #: Seconds a new version may take to become ready when the caller does not say (``wait <= 0``).
    startup_timeout: float = attrs.field(default=60.0, converter=float, validator=_positive)
    #: Seconds a stopping server may drain before it is killed (keep above the server's --drain-timeout, 30 s).
    stop_timeout: float = attrs.field(default=40.0, converter=float, validator=_positive)
    #: Seconds a status probe waits for ``/v2/health/ready`` before reporting the state as unknown.
    probe_timeout: float = attrs.field(default=2.0, converter=float, validator=_positive)
    #: "json": the servers write JSON lines (one per log message and one per request, with model,
    #: version, request id and latency), and so do this deployer's own lines in the deployment log.
    log_format: str = attrs.field(default="text", validator=attrs.validators.in_(("text", "json")))
