"""mlops-batch-ray: the ``ray`` batch scoring engine of mlops-core (Ray tasks).

Chosen in the stack or per job::

    [batch]
    backend = "ray"
    address = "ray://head:10001"   # or "auto"; empty: a local Ray on this machine

    mlops batch models:/churn@prod --input s3://data/ --output s3://scores/ --engine ray --address auto

Public names load lazily (PEP 562): importing the package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["RayEngine", "RayConfig", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .engine import RayConfig, RayEngine


def __getattr__(name: str) -> Any:
    if name in ("RayEngine", "RayConfig"):
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
