"""A monitor plugin that always raises: serving must not notice."""

from __future__ import annotations

from mlops_core import hookimpl


@hookimpl
def mlops_predictions_served(event):
    raise RuntimeError("a broken monitor")
