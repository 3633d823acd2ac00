"""Rows/s of the ``local``, ``dask`` and ``ray`` batch engines on the shared 1M-row dataset, in one run.

    .venv/bin/python benchmarks/batch/bench_dask_ray.py [--rows 1000000] [--partitions 8] [--workers 2] [--rounds 3]

Each engine gets its own stack, built once, so its workers (a process pool, a
LocalCluster, a local Ray) start in the first round ("cold": start-up, one model
load per worker and the job) and are reused afterwards ("warm": the job only).
Rounds alternate the engines' order, so a load spike on a shared machine hits all
of them; the table prints the median of the warm rounds and the load average.
``benchmarks/batch/`` of the Spark work compares all engines with MLflow's spark_udf.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import print_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="rounds after the cold one")
    parser.add_argument("--engines", default="local,dask,ray")
    args = parser.parse_args()

    from mlops_core import api
    from mlops_core.testing.batch import batch_stack, make_dataset, train_small_model

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-batch-", dir="/tmp") as tmp:
        root = Path(tmp)
        settings = {"local": {}, "dask": {}, "ray": {"temp_dir": str(root / "ray")}}
        stacks = {e: batch_stack(root / e / ".mlops", e, dict(workers=args.workers, **settings.get(e, {})))
                  for e in engines}
        uri = {e: train_small_model(stack=s) for e, s in stacks.items()}
        data = make_dataset(root / "data", rows=args.rows, partitions=args.partitions)
        cold: dict[str, float] = {}
        warm: dict[str, list[float]] = {e: [] for e in engines}
        try:
            for n in range(args.rounds + 1):
                order = engines if n % 2 == 0 else engines[::-1]
                for e in order:
                    result = api.batch_score(uri[e], data, root / e / "out", keys="id", overwrite=True,
                                             stack=stacks[e])
                    assert result.ok and result.rows == args.rows, result.failed
                    if n == 0:
                        cold[e] = result.rows_per_second
                    else:
                        warm[e].append(result.rows_per_second)
        finally:
            for s in stacks.values():
                s.close()
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    rows = [[e, f"{cold[e]:,.0f}", f"{statistics.median(warm[e]):,.0f}" if warm[e] else "-",
             " ".join(f"{r:,.0f}" for r in warm[e])] for e in engines]
    print_table(f"batch scoring, {args.rows:,} rows in {args.partitions} Parquet partitions, {args.workers} workers "
                f"(load average at the end {load}, {os.cpu_count()} CPUs)",
                ["engine", "cold rows/s", "warm rows/s (median)", "warm rounds"], rows)


if __name__ == "__main__":
    main()
