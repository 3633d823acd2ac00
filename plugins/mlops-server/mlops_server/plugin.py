"""The mlops-server plugin: adds ``mlops serve`` and ``mlops predict``.

Import-cheap on purpose (argparse only): the ``mlops`` CLI imports it on every
run, ``--help`` included. The handlers, numpy and uvicorn load only when a
command actually runs.
"""

from __future__ import annotations

from typing import Any

from mlops_core import hookimpl
from mlops_core.cli import add_header_flags

from ._args import add_model_options, add_server_options


@hookimpl
def mlops_add_cli_commands(commands: Any) -> None:
    serve = commands.add(
        "serve", handler="mlops_server.cli:serve_command",
        help="serve bundles or registered models over the V2 inference protocol",
        description="Serve one or more models over the Open Inference Protocol (KServe V2), "
                    "plus MLflow's /invocations and Prometheus /metrics.")
    serve.add_argument("targets", nargs="+", metavar="TARGET",
                       help="a bundle folder or a model URI (models:/name, models:/name/3, models:/name@alias)")
    add_model_options(serve)
    add_server_options(serve)

    predict = commands.add(
        "predict", handler="mlops_server.cli:predict_command",
        help="send a V2 inference request to a server or deployment",
        description="Send rows from a JSON or CSV file to a V2 model server and print the outputs.")
    predict.add_argument("target", metavar="URL_OR_DEPLOYMENT",
                         help="server URL (http://host:port) or the name of a deployment")
    predict.add_argument("--model", default=None,
                         help="model name (default: the deployment's model)")
    predict.add_argument("--model-version", default=None, help="ask for this model version")
    predict.add_argument("--input", "-i", required=True, metavar="FILE",
                         help="FILE.json (a V2 request body, or a list of rows or records) or FILE.csv (header detected, see --header)")
    predict.add_argument("--json", action="store_true", help="print the raw V2 response")
    predict.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the answer")
    add_header_flags(predict)
