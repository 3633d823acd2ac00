"""A plugin module the hook tests load into the server with MLOPS_PLUGIN_MODULES."""

from __future__ import annotations

import json
import os

from mlops_core import hookimpl


@hookimpl
def mlops_predictions_served(event):
    with open(os.environ["MLOPS_SERVER_TEST_EVENTS"], "a") as f:
        f.write(json.dumps({"model": event.model, "version": event.version, "batch_size": event.batch_size,
                            "inputs": {k: v.tolist() for k, v in event.inputs.items()},
                            "outputs": {k: v.tolist() for k, v in event.outputs.items()},
                            "latency_s": event.latency_s, "error": event.error}) + "\n")


@hookimpl
def mlops_collect_metrics():
    return "# TYPE test_listener_up gauge\ntest_listener_up 1"
