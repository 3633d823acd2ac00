"""Handlers of ``python -m mlops_server``, ``mlops serve`` and ``mlops predict``."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Sequence

from mlops_core.errors import BackendUnavailableError, InvalidInputError, MlopsError, NotFoundError
from mlops_core.tabular import read_csv

from ._args import build_module_parser
from .config import BundleSpec, ServerConfig

__all__ = ["main", "serve_command", "predict_command", "config_from_args", "config_argv"]


def _log_format(args: argparse.Namespace) -> str:
    """``--log-format``, else ``MLOPS_LOG_FORMAT``, else text."""
    from mlops_core.jsonlog import wanted

    return "json" if wanted(getattr(args, "log_format", None)) else "text"


def config_from_args(args: argparse.Namespace, bundles: Sequence[BundleSpec]) -> ServerConfig:
    from .security import resolve_auth

    auth = resolve_auth(args.auth_token_file, args.public_health)
    return ServerConfig(
        bundles=tuple(bundles), host=args.host, port=args.port, reuse_port=args.reuse_port, workers=args.workers,
        max_batch_size=args.max_batch_size, max_batch_wait_ms=args.max_batch_wait_ms, timeout=args.timeout,
        max_body_bytes=args.max_body_bytes, max_queue=args.max_queue, executor=args.executor, threads=args.threads,
        drain_timeout=args.drain_timeout, log_level=args.log_level, log_format=_log_format(args),
        listen_from=getattr(args, "listen_from", None),
        keep_alive=args.keep_alive, max_header_bytes=args.max_header_bytes, header_timeout=args.header_timeout,
        body_timeout=args.body_timeout, max_connections=args.max_connections,
        max_inflight_body_bytes=args.max_inflight_body_bytes, auth_token=auth.token, public_health=auth.public_health,
        tls_certfile=args.tls_certfile, tls_keyfile=args.tls_keyfile, tls_client_ca=args.tls_client_ca,
    )


def config_argv(config: ServerConfig) -> list[str]:
    """The ``python -m mlops_server`` arguments that rebuild ``config`` (for worker processes)."""
    argv: list[str] = []
    if len(config.bundles) == 1 and (config.bundles[0].name or config.bundles[0].version):
        b = config.bundles[0]
        argv += ["--bundle", b.path]
        if b.name:
            argv += ["--name", b.name]
        if b.version:
            argv += ["--model-version", b.version]
    else:
        for b in config.bundles:
            argv += ["--bundle", b.path]
    argv += ["--host", config.host, "--port", str(config.port), "--workers", str(config.workers),
             "--max-batch-size", str(config.max_batch_size), "--max-batch-wait-ms", str(config.max_batch_wait_ms),
             "--max-body-bytes", str(config.max_body_bytes), "--max-queue", str(config.max_queue),
             "--executor", config.executor, "--threads", str(config.threads),
             "--drain-timeout", str(config.drain_timeout), "--log-level", config.log_level,
             "--log-format", config.log_format]
    argv += ["--keep-alive", str(config.keep_alive), "--max-header-bytes", str(config.max_header_bytes),
             "--header-timeout", str(config.header_timeout), "--body-timeout", str(config.body_timeout),
             "--max-inflight-body-bytes", str(config.max_inflight_body_bytes)]
    if config.max_connections:
        argv += ["--max-connections", str(config.max_connections)]
    # The token itself never goes on a command line (other users can read it in `ps`): workers
    # resolve it again from the same file, environment or stack file.
    if config.public_health:
        argv.append("--public-health")
    for flag, value in (("--tls-certfile", config.tls_certfile), ("--tls-keyfile", config.tls_keyfile),
                        ("--tls-client-ca", config.tls_client_ca)):
        if value:
            argv += [flag, value]
    if config.timeout:
        argv += ["--timeout", str(config.timeout)]
    if config.reuse_port:
        argv.append("--reuse-port")
    if config.listen_from:
        argv += ["--listen-from", config.listen_from]
    return argv


def _bundle_specs(paths: Sequence[str], name: str | None, version: str | None) -> list[BundleSpec]:
    if (name or version) and len(paths) != 1:
        raise InvalidInputError("--name and --model-version apply to a single bundle",
                                hint="serve several bundles under their folder names, or start one server each")
    return [BundleSpec(str(p), name, version) for p in paths]


def _run(config: ServerConfig) -> int:
    from .server import serve

    return serve(config, config_argv(config))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mlops_server``."""
    args = build_module_parser().parse_args(argv)
    try:
        specs = _bundle_specs(args.bundle, args.name, args.model_version)
        config = config_from_args(args, specs)
    except (MlopsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        hint = getattr(exc, "hint", None)
        if hint:
            print(f"hint: {hint}", file=sys.stderr)
        return 2
    return _run(config)


def serve_command(args: argparse.Namespace) -> int:
    """``mlops serve TARGET...``: bundle folders or model URIs."""
    specs = []
    if (args.name or args.model_version) and len(args.targets) != 1:
        raise InvalidInputError("--name and --model-version apply to a single target",
                                hint="serve several models under their own names, or start one server each")
    for target in args.targets:
        if target.startswith("models:/"):
            from mlops_core.api import resolve_bundle

            version, path = resolve_bundle(target)
            specs.append(BundleSpec(str(path), args.name or version.model, args.model_version or str(version.version)))
        else:
            if not Path(target).is_dir():
                raise NotFoundError(f"no bundle folder at {target}",
                                    hint="pass a bundle folder (mlops save) or a model URI like models:/name@alias")
            specs.append(BundleSpec(target, args.name, args.model_version))
    try:
        config = config_from_args(args, specs)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    return _run(config)


# ------------------------------------------------------------------- predict
def _http(method: str, url: str, body: bytes | None = None, timeout: float = 30.0) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise BackendUnavailableError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}",
                                      hint="is the server running? check `mlops deployments list` or the URL") from None


def _error_of(body: bytes) -> str:
    try:
        return str(json.loads(body).get("error", body[:300]))
    except (ValueError, AttributeError):
        return body[:300].decode("utf-8", "replace")


def _resolve_target(target: str, model: str | None) -> tuple[str, str]:
    if target.startswith(("http://", "https://")):
        if not model:
            raise InvalidInputError("--model is required with a URL", hint="pass --model NAME")
        return target.rstrip("/"), model
    from mlops_core import api

    dep = api.deployment(target)
    if not dep.url:
        raise BackendUnavailableError(f"deployment {target!r} has no URL (state {dep.state})",
                                      hint="wait until it is ready: mlops deployments status NAME")
    return dep.url.rstrip("/"), model or dep.model


def _rows_to_tensors(rows: list[Any], columns: list[str] | None, inputs: list[dict]) -> list[dict]:
    if not rows:
        raise InvalidInputError("the input file has no rows")
    if len(inputs) <= 1:
        spec = inputs[0] if inputs else {"name": "input-0", "datatype": "FP64"}
        if isinstance(rows[0], dict):
            columns = columns or list(rows[0])
            rows = [[r.get(c) for c in columns] for r in rows]
        if not isinstance(rows[0], list):
            rows = [[v] for v in rows]
        data = [_convert(v, spec["datatype"]) for row in rows for v in row]
        return [{"name": spec["name"], "datatype": spec["datatype"], "shape": [len(rows), len(rows[0])],
                 "data": data}]
    tensors = []
    for spec in inputs:
        name = spec["name"]
        if isinstance(rows[0], dict):
            values = [r.get(name) for r in rows]
        else:
            cols = columns or [s["name"] for s in inputs]
            if name not in cols:
                raise InvalidInputError(f"the input has no column {name!r}",
                                        hint=f"the model expects columns {[s['name'] for s in inputs]}")
            idx = cols.index(name)
            values = [r[idx] for r in rows]
        shape = [len(values)] + [1] * (len(spec.get("shape", [-1])) - 1)
        tensors.append({"name": name, "datatype": spec["datatype"], "shape": shape,
                        "data": [_convert(v, spec["datatype"]) for v in values]})
    return tensors


def _convert(value: Any, datatype: str) -> Any:
    if datatype == "BYTES":
        return value if isinstance(value, str) else json.dumps(value) if value is not None else ""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            if datatype == "BOOL" and value.lower() in ("true", "false"):
                return value.lower() == "true"
            raise InvalidInputError(f"{value!r} is not a number, but the model expects {datatype}") from None
        if datatype == "BOOL":
            return bool(number)
        return int(number) if datatype.startswith(("INT", "UINT")) else number
    return value


def _metadata(model_path: str, timeout: float, base: str, model: str) -> dict[str, Any]:
    status, body = _http("GET", model_path, timeout=timeout)
    if status != 200:
        raise NotFoundError(f"model {model!r} at {base}: {_error_of(body)}",
                            hint="mlops deployments list shows what is deployed; --model picks the model name")
    return json.loads(body)


def predict_command(args: argparse.Namespace) -> int:
    """``mlops predict URL_OR_DEPLOYMENT --model NAME --input FILE``."""
    base, model = _resolve_target(args.target, args.model)
    model_path = f"{base}/v2/models/{urllib.parse.quote(model, safe='')}"
    if args.model_version:
        model_path += f"/versions/{urllib.parse.quote(args.model_version, safe='')}"
    path = Path(args.input)
    if not path.is_file():
        raise NotFoundError(f"no input file {path}",
                            hint="pass --input with an existing .csv file, a .json list of rows or a V2 request body")
    request: dict[str, Any] | None = None
    rows: list[Any] = []
    columns: list[str] | None = None
    metadata: dict[str, Any] | None = None
    if path.suffix.lower() == ".csv":
        metadata = _metadata(model_path, args.timeout, base, model)
        names = [s["name"] for s in metadata.get("inputs") or []]
        table = read_csv(path, header=getattr(args, "header", None), names=names)
        columns, rows = table.columns, table.rows
    else:
        try:
            data = json.loads(path.read_text())
        except ValueError as exc:
            raise InvalidInputError(f"{path} is not valid JSON: {exc}") from None
        if isinstance(data, dict) and "inputs" in data and isinstance(data["inputs"], list) \
                and all(isinstance(t, dict) and "datatype" in t for t in data["inputs"]):
            request = data
        elif isinstance(data, list):
            rows = data
        else:
            raise InvalidInputError(f"{path} must hold a V2 request body or a list of rows",
                                    hint='e.g. [[5.1, 3.5, 1.4, 0.2]] or [{"a": 1, "b": "x"}]')
    if request is None:
        if metadata is None:
            metadata = _metadata(model_path, args.timeout, base, model)
        request = {"inputs": _rows_to_tensors(rows, columns, metadata.get("inputs") or [])}
    status, body = _http("POST", model_path + "/infer", json.dumps(request).encode(), timeout=args.timeout)
    if status != 200:
        message = _error_of(body)
        if 400 <= status < 500:
            raise InvalidInputError(f"the server refused the request ({status}): {message}")
        raise BackendUnavailableError(f"the server failed ({status}): {message}")
    response = json.loads(body)
    if args.json:
        print(json.dumps(response, indent=2))
        return 0
    for out in response.get("outputs", []):
        data = out.get("data", [])
        shape = out.get("shape", [len(data)])
        print(f"{out['name']} ({out['datatype']} {shape}):")
        width = 1
        for d in shape[1:]:
            width *= d
        width = max(width, 1)
        for i in range(0, len(data), width):
            chunk = data[i:i + width]
            print("  " + (", ".join(map(str, chunk)) if width > 1 else str(chunk[0])))
    return 0
