"""Command-line options of the server, shared by ``python -m mlops_server`` and ``mlops serve``.

Only argparse here: ``mlops --help`` imports this module, so it must stay cheap.
"""

from __future__ import annotations

import argparse


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def add_server_options(parser: argparse.ArgumentParser) -> None:
    """Options after the model selection: network, batching, limits."""
    net = parser.add_argument_group("network")
    net.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    net.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    net.add_argument("--reuse-port", action="store_true",
                     help="set SO_REUSEPORT so a new version can bind the same port before the old one stops; "
                          "models then load before the port is bound")
    net.add_argument("--listen-from", default=None, metavar="SOCKET",
                     help="take the listening socket from a socket holder (python -m mlops_server.holder) at this "
                          "Unix socket instead of binding; models load first. Old and new servers then share one "
                          "accept queue, so a rolling update loses no connection")
    net.add_argument("--workers", type=_positive_int, default=1,
                     help="server processes sharing the port through SO_REUSEPORT (default 1)")
    batch = parser.add_argument_group("adaptive batching (off unless --max-batch-size > 1)")
    batch.add_argument("--max-batch-size", type=_positive_int, default=1,
                       help="stack concurrent requests up to this many rows per predict call")
    batch.add_argument("--max-batch-wait-ms", type=_non_negative_float, default=0.0,
                       help="under concurrency, wait up to this long for a batch to fill (default 0)")
    limits = parser.add_argument_group("limits")
    limits.add_argument("--timeout", type=_positive_float, default=None,
                        help="seconds a prediction may take before the request gets 504 (default: none)")
    limits.add_argument("--max-body-bytes", type=_positive_int, default=64 << 20,
                        help="largest request body accepted; larger ones get 413 (default 64 MiB)")
    limits.add_argument("--max-queue", type=_positive_int, default=256,
                        help="requests waiting for a model beyond which new ones get 503 + Retry-After (default 256)")
    limits.add_argument("--executor", choices=("auto", "inline", "thread"), default="auto",
                        help="where predict runs: on the event loop for fast models (auto), always inline, "
                             "or always in threads")
    limits.add_argument("--threads", type=_positive_int, default=1,
                        help="prediction threads per model when predict runs in threads (default 1)")
    limits.add_argument("--drain-timeout", type=_positive_float, default=30.0,
                        help="seconds to let in-flight requests finish on SIGTERM (default 30)")
    limits.add_argument("--keep-alive", type=_positive_float, default=5.0,
                        help="seconds an idle keep-alive connection stays open between requests (default 5)")
    limits.add_argument("--max-header-bytes", type=_positive_int, default=64 << 10,
                        help="largest request line + headers; larger gets 431 (default 64 KiB)")
    limits.add_argument("--header-timeout", type=_positive_float, default=10.0,
                        help="seconds from a connection's opening or a request's first byte to its complete "
                             "headers; slower gets 408 (default 10)")
    limits.add_argument("--body-timeout", type=_positive_float, default=60.0,
                        help="seconds from a request's headers to its complete body; slower gets 408 (default 60)")
    limits.add_argument("--max-connections", type=_positive_int, default=None,
                        help="open connections beyond which requests get 503 + Retry-After "
                             "(default: the open-file limit minus 128)")
    limits.add_argument("--max-inflight-body-bytes", type=_positive_int, default=256 << 20,
                        help="bytes of large request bodies (1 MiB or more) read or parsed at once, beyond which a "
                             "large request gets 503 + Retry-After (default 256 MiB)")
    limits.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    limits.add_argument("--log-format", default=None, choices=("text", "json"),
                        help="json: JSON lines on stdout, one per log message and one per request (model, "
                             "version, request id, latency); default: $MLOPS_LOG_FORMAT or text")
    add_security_options(parser)


def add_security_options(parser: argparse.ArgumentParser) -> None:
    """Authentication and TLS (see the plugin README, "Authentication and TLS")."""
    sec = parser.add_argument_group("authentication and TLS")
    sec.add_argument("--auth-token-file", default=None, metavar="FILE",
                     help="require 'Authorization: Bearer <token>' with the token in FILE (also: "
                          "$MLOPS_SERVER_AUTH_TOKEN, or auth_token / auth_token_file under [server] in the stack file)")
    sec.add_argument("--public-health", action="store_true", default=None,
                     help="with a token, leave /v2/health/*, /ping and /health open (for Kubernetes probes)")
    sec.add_argument("--tls-certfile", default=None, metavar="PEM", help="serve HTTPS with this certificate chain")
    sec.add_argument("--tls-keyfile", default=None, metavar="PEM", help="private key of --tls-certfile")
    sec.add_argument("--tls-client-ca", default=None, metavar="PEM",
                     help="require client certificates signed by this CA (mutual TLS)")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", default=None,
                        help="model name (default: the bundle folder name, or the registered model name)")
    parser.add_argument("--model-version", default=None,
                        help="model version reported in metadata and accepted in /versions/{v} paths")


def build_module_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mlops_server",
        description="Serve mlops bundles over the Open Inference Protocol (KServe V2).")
    parser.add_argument("--bundle", action="append", required=True, metavar="DIR",
                        help="bundle folder to serve (repeat for several models)")
    add_model_options(parser)
    add_server_options(parser)
    return parser
