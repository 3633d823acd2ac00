"""mlops-batch-dask: the ``dask`` batch scoring engine of mlops-core (``dask.distributed``).

Chosen in the stack or per job::

    [batch]
    backend = "dask"
    address = "tcp://scheduler:8786"   # empty: a LocalCluster on this machine

    mlops batch models:/churn@prod --input s3://data/ --output s3://scores/ --engine dask --address tcp://scheduler:8786

Public names load lazily (PEP 562): importing the package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["DaskEngine", "DaskConfig", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .engine import DaskConfig, DaskEngine


def __getattr__(name: str) -> Any:
    if name in ("DaskEngine", "DaskConfig"):
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
