"""A plugin that listens to prediction events and does nothing: isolates the server's event-delivery cost."""

from mlops_core.plugins import hookimpl


@hookimpl
def mlops_predictions_served(event):
    return None
