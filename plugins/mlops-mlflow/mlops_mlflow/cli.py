"""Handlers of ``mlops models import`` and ``mlops models export`` (imported only when they run)."""

from __future__ import annotations

import argparse
import json

__all__ = ["cmd_import", "cmd_export"]


def cmd_import(args: argparse.Namespace) -> int:
    from mlops_core.entities import to_json

    from .interop import import_model

    version = import_model(args.source, args.name, alias=args.alias, description=args.description,
                           tracking_uri=args.tracking_uri)
    if args.json:
        print(json.dumps(to_json(version), indent=2, sort_keys=True))
    else:
        aliases = f" ({', '.join(version.aliases)})" if version.aliases else ""
        print(f"imported {args.source} as {version.uri}{aliases}  artifact {version.artifact.digest[:19]}...")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .interop import export_model

    dest = export_model(args.uri, args.dest)
    if args.json:
        print(json.dumps({"uri": args.uri, "format": args.format, "path": str(dest)}))
    else:
        print(f"exported {args.uri} as an MLflow model folder: {dest}\n"
              f"serve it: mlflow models serve -m {dest} --env-manager local")
    return 0
