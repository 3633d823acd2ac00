"""A plugin module whose prediction hook raises on every call (loaded with MLOPS_PLUGIN_MODULES)."""

from mlops_core.plugins import hookimpl


@hookimpl
def mlops_predictions_served(event):
    raise RuntimeError("boom: this monitor is broken on purpose")
