"""``mlops batch MODEL_URI --input URL --output URL``: the command line of batch scoring."""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_parser", "cmd_batch"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``mlops batch`` to the ``mlops`` sub-parsers."""
    from ..cli import add_header_flags

    p = sub.add_parser("batch", parents=[common],
                       help="score a Parquet/CSV dataset (file or folder, any fsspec URL) with a model, "
                            "on the local, dask, ray or spark engine",
                       description="Score every row of a dataset with a model. One output file per input file, "
                                   "written atomically; a re-run skips complete partitions. See docs/batch.md.")
    p.add_argument("uri", metavar="MODEL_URI", help="models:/NAME@ALIAS, models:/NAME/VERSION or a bundle folder")
    p.add_argument("--input", required=True, metavar="URL", help="input file or folder (path, s3://, az://...)")
    p.add_argument("--output", required=True, metavar="URL", help="output folder (one file per input file)")
    p.add_argument("--engine", default=None, help="batch engine: local, dask, ray, spark (default: the stack's [batch])")
    p.add_argument("--address", default=None, help="the engine's cluster address (Dask scheduler, Ray cluster)")
    p.add_argument("--workers", type=int, default=None, help="worker processes of a local pool or cluster")
    p.add_argument("--engine-option", action="append", metavar="KEY=VALUE", default=None,
                   help="another engine setting (repeatable), e.g. --engine-option master=spark://host:7077")
    p.add_argument("--columns", default=None, metavar="COL=INPUT,...",
                   help="map input columns onto model inputs (a single-tensor model: the feature columns in order)")
    p.add_argument("--keys", default="", metavar="COL,...", help="columns copied next to the predictions, e.g. id")
    p.add_argument("--input-format", choices=("parquet", "csv"), default=None, help="default: from the extension")
    p.add_argument("--output-format", choices=("parquet", "csv"), default="parquet")
    p.add_argument("--batch-rows", type=int, default=None, help="rows per predict call (default 262144)")
    p.add_argument("--overwrite", action="store_true", help="score every partition again, replacing its output")
    p.add_argument("--max-retries", type=int, default=2, help="runs of a failed partition after the first (default 2)")
    p.add_argument("--bundle-url", default=None, metavar="URL",
                   help="a folder every worker can read (s3://bucket/bundles) to copy the verified bundle to; "
                        "needed when workers run on other machines")
    add_header_flags(p)
    p.set_defaults(func=cmd_batch)


def _columns(text: str | None) -> dict[str, str]:
    from ..errors import InvalidInputError

    out: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in (text or "").split(","))):
        column, sep, name = pair.partition("=")
        if not sep or not column or not name:
            raise InvalidInputError(f"--columns expects COLUMN=INPUT pairs, got {pair!r}",
                                    hint="for example --columns sepal_len=sepal_length,petal_len=petal_length")
        out[column] = name
    return out


def cmd_batch(args: argparse.Namespace) -> int:
    from .. import api
    from ..cli import _kv, _print_json

    engine_config: dict[str, Any] = dict(_kv(args.engine_option))
    if args.address is not None:
        engine_config["address"] = args.address
    if args.workers is not None:
        engine_config["workers"] = args.workers
    options: dict[str, Any] = {"input_format": args.input_format, "output_format": args.output_format,
                               "header": args.header}
    if args.batch_rows is not None:
        options["batch_rows"] = args.batch_rows
    result = api.batch_score(args.uri, args.input, args.output, engine=args.engine, engine_config=engine_config,
                             columns=_columns(args.columns), keys=args.keys, overwrite=args.overwrite,
                             max_retries=args.max_retries, progress=True, bundle_url=args.bundle_url, **options)
    if args.json:
        _print_json(result.to_dict())
    else:
        rate = result.to_dict()["rows_per_second"]
        print(f"scored {result.rows:,} rows of {result.partitions} partition(s) ({result.skipped} already complete) "
              f"with {result.engine} in {result.seconds:.2f} s"
              + (f" ({rate:,.0f} rows/s)" if rate else "") + f" -> {result.output_url}")
    if result.failed:
        for f in result.failed:
            print(f"error: partition {f.index} ({f.input_url}) failed after {f.attempt} attempt(s): {f.error}",
                  file=sys.stderr)
        print(f"hint: {len(result.failed)} partition(s) have no output; fix the cause and run the same command "
              "again: complete partitions are skipped", file=sys.stderr)
        return 1
    return 0
