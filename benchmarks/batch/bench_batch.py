"""Batch scoring throughput: every installed engine and MLflow's ``spark_udf``, same model, same data, one run.

The model is the small scikit-learn LogisticRegression on 4 float features of
``mlops_core.testing.batch``; the data a partitioned Parquet dataset (default 2M
rows in 8 files). Every measurement is end to end: read the Parquet files, score,
write Parquet files.

- ``local``, ``dask``, ``ray``, ``spark``: ``mlops_core.batch_score(engine=...)``
  with 2 workers (``local[2]`` for Spark). An engine whose plugin is not installed
  is skipped with a note.
- ``mlflow spark_udf``: the same fitted model logged with ``mlflow.sklearn.log_model``
  to a local file store; Spark reads the Parquet folder, ``withColumn`` applies
  ``mlflow.pyfunc.spark_udf(..., env_manager="local")``, Spark writes Parquet.

Two phases. *Cold* (``--cold-rounds``): each run starts its engine (processes,
cluster, JVM) and stops it, as a one-off job does. *Warm* (``--rounds``): engines
already started; only the job is timed, as in a long-lived driver. Candidates
alternate within a round (the order rotates each round) and medians are
reported, with the load average, because this machine is shared.

    .venv/bin/python benchmarks/batch/bench_batch.py [--rows 2000000] [--partitions 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import print_table  # noqa: E402

ENGINES = ("local", "dask", "ray", "spark")
UDF = "mlflow spark_udf"
TARGET_RATIO, TARGET_RPS = 3.0, 1_000_000


def _engine_config(name: str, workers: int) -> dict[str, Any]:
    return {"master": f"local[{workers}]"} if name == "spark" else {"workers": workers}


def _spark_conf(workers: int) -> dict[str, str]:
    """The spark engine's own session settings, so spark_udf runs on an identical local[N] session."""
    from mlops_batch_spark.engine import SparkConfig, SparkEngine

    engine = SparkEngine(SparkConfig(master=f"local[{workers}]"))
    return {"master": engine.master, **engine.spark_conf()}


class Bench:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        from mlops_core import api
        from mlops_core.testing.batch import make_dataset, train_small_model

        self.args, self.root = args, root
        self.api = api
        self.stack = self._stack()
        self.uri = train_small_model("bench-batch", stack=self.stack)
        self.data = make_dataset(root / "data", rows=args.rows, partitions=args.partitions)
        self.notes: list[str] = []
        self.warm_stacks: dict[str, Any] = {}
        self.udf_model_uri: str | None = None
        self.session: Any = None

    def _stack(self, engine: str = "local") -> Any:
        """A stack on the benchmark's home (one registry); its ``[batch]`` engine lives as long as it does."""
        from mlops_core.stack import DEFAULTS, SINGLE_COMPONENTS, ComponentConfig, Stack, StackConfig

        components = {c: ComponentConfig(DEFAULTS[c]) for c in SINGLE_COMPONENTS}
        components["batch"] = ComponentConfig(engine, _engine_config(engine, self.args.workers))
        return Stack(StackConfig(home=self.root / ".mlops", components=components, source=f"bench_batch {engine}"))

    # ----------------------------------------------------------- candidates
    def available(self) -> list[str]:
        names = []
        for name in [e.strip() for e in self.args.engines.split(",") if e.strip()]:
            if name == "udf":
                continue
            try:
                engine, _ = self._build(name)
                engine.check()
                engine.close()
                names.append(name)
            except Exception as exc:  # not installed, or cannot run here: skipped, said so
                self.notes.append(f"{name}: skipped ({type(exc).__name__}: {str(exc).splitlines()[0]})")
        if "udf" in self.args.engines.split(","):
            try:
                import mlflow  # noqa: F401
                import pyspark  # noqa: F401

                names.append(UDF)
            except ImportError as exc:
                self.notes.append(f"{UDF}: skipped ({exc})")
        return names

    def _build(self, name: str) -> tuple[Any, bool]:
        from mlops_core.batch.job import build_engine

        return build_engine(self.stack, name, _engine_config(name, self.args.workers))

    def _out(self, label: str) -> Path:
        out = self.root / "out" / label.replace(" ", "_")
        shutil.rmtree(out, ignore_errors=True)
        return out

    def _score(self, name: str, cold: bool) -> int:
        kwargs: dict[str, Any] = {"keys": "id", "overwrite": True, "max_retries": 0}
        if cold:  # an engine built for this job and closed after it
            kwargs.update(engine=name, engine_config=_engine_config(name, self.args.workers), stack=self.stack)
        else:  # the warm stack's engine, started by the warm-up job and kept
            kwargs.update(stack=self.warm_stacks[name])
        result = self.api.batch_score(self.uri, self.data, self._out(name), **kwargs)
        if not result.ok:
            raise RuntimeError(f"{name}: {result.failed[0].error}")
        return result.rows

    # ------------------------------------------------------------ spark_udf
    def _udf_model(self) -> str:
        if self.udf_model_uri is None:
            import mlflow
            import mlflow.sklearn

            # a local file store, as the issue asks; MLflow 3 wants this opt-in for file stores
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri((self.root / "mlruns").as_uri())
            model = self.api.load(self.uri, stack=self.stack)  # the very model the engines score with
            with mlflow.start_run():
                info = mlflow.sklearn.log_model(model, name="model")
            self.udf_model_uri = info.model_uri
        return self.udf_model_uri

    def _spark(self) -> Any:
        from pyspark.sql import SparkSession

        conf = _spark_conf(self.args.workers)
        builder = SparkSession.builder.master(conf.pop("master")).appName("bench-spark-udf")
        for key, value in conf.items():
            builder = builder.config(key, value)
        return builder.getOrCreate()

    def _udf(self, cold: bool) -> int:
        import mlflow.pyfunc
        from pyspark.sql import functions as F

        from mlops_core.testing.batch import FEATURES

        model_uri = self._udf_model()
        spark = self._spark() if cold or self.session is None else self.session
        try:
            predict = mlflow.pyfunc.spark_udf(spark, model_uri, result_type="long", env_manager="local")
            frame = spark.read.parquet(str(self.data))
            scored = frame.withColumn("prediction", predict(*[F.col(f) for f in FEATURES])).select("id", "prediction")
            scored.write.mode("overwrite").parquet(str(self._out(UDF)))
        finally:
            if cold:
                spark.stop()
        return self.args.rows

    # -------------------------------------------------------------- phases
    def measure(self, name: str, cold: bool) -> tuple[float, float]:
        """(seconds, 1-minute load average at the end) of one end-to-end job."""
        start = time.perf_counter()
        rows = self._udf(cold) if name == UDF else self._score(name, cold)
        seconds = time.perf_counter() - start
        assert rows == self.args.rows, f"{name} scored {rows} rows, expected {self.args.rows}"
        return seconds, os.getloadavg()[0]

    def start_warm(self, names: list[str]) -> None:
        for name in names:
            if name == UDF:
                self.session = self._spark()
                self._udf(cold=False)  # warm-up: JVM, Python workers, model logged
            else:
                self.warm_stacks[name] = self._stack(name)
                self._score(name, cold=False)  # warm-up: workers started, model loaded once per worker

    def stop_warm(self) -> None:
        for stack in self.warm_stacks.values():
            stack.close()
        if self.session is not None:
            self.session.stop()

    def rounds(self, names: list[str], rounds: int, cold: bool) -> dict[str, list[tuple[float, float]]]:
        samples: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
        for r in range(rounds):
            order = names[r % len(names):] + names[:r % len(names)]  # alternate who goes first
            for name in order:
                samples[name].append(self.measure(name, cold))
                print(f"  {'cold' if cold else 'warm'} round {r + 1}/{rounds} {name}: "
                      f"{samples[name][-1][0]:.2f}s (load {samples[name][-1][1]:.1f})", file=sys.stderr)
        return samples


def _summary(phase: str, samples: dict[str, list[tuple[float, float]]], rows: int) -> list[dict[str, Any]]:
    out = []
    for name, runs in samples.items():
        seconds = statistics.median(s for s, _ in runs)
        out.append({"phase": phase, "candidate": name, "runs": len(runs), "median_s": seconds,
                    "rows_per_s": rows / seconds, "load": statistics.median(lo for _, lo in runs),
                    "all_s": [round(s, 3) for s, _ in runs]})
    return out


def _verdict(rows: list[dict[str, Any]], phase: str) -> list[str]:
    mine = [r for r in rows if r["phase"] == phase and r["candidate"] != UDF]
    udf = next((r for r in rows if r["phase"] == phase and r["candidate"] == UDF), None)
    if not mine:
        return [f"{phase}: no engine measured"]
    best = max(mine, key=lambda r: r["rows_per_s"])
    lines = [f"{phase}: best engine {best['candidate']} {best['rows_per_s']:,.0f} rows/s "
             f"(target >= {TARGET_RPS:,} rows/s: {'met' if best['rows_per_s'] >= TARGET_RPS else 'NOT met'})"]
    if udf:
        for r in sorted(mine, key=lambda r: -r["rows_per_s"]):
            lines.append(f"{phase}: {r['candidate']} / {UDF} = {r['rows_per_s'] / udf['rows_per_s']:.2f}x")
        ratio = best["rows_per_s"] / udf["rows_per_s"]
        lines.append(f"{phase}: best / {UDF} = {ratio:.2f}x (target >= {TARGET_RATIO}x: "
                     f"{'met' if ratio >= TARGET_RATIO else 'NOT met'})")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--partitions", type=int, default=8)
    p.add_argument("--workers", type=int, default=2, help="workers per engine (Spark: local[N])")
    p.add_argument("--rounds", type=int, default=5, help="warm rounds (engines already started)")
    p.add_argument("--cold-rounds", type=int, default=1, help="cold rounds (each run starts its engine; 0: skip)")
    p.add_argument("--engines", default="local,dask,ray,spark,udf", help="candidates; udf = MLflow spark_udf")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # Spark's Python workers run this interpreter

    root = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        bench = Bench(args, root)
        names = bench.available()
        print(f"{args.rows:,} rows in {args.partitions} Parquet files, {args.workers} workers, "
              f"{os.cpu_count()} CPUs; candidates: {', '.join(names)}", file=sys.stderr)
        rows: list[dict[str, Any]] = []
        if args.cold_rounds:
            rows += _summary("cold", bench.rounds(names, args.cold_rounds, cold=True), args.rows)
        bench.start_warm(names)
        try:
            rows += _summary("warm", bench.rounds(names, args.rounds, cold=False), args.rows)
        finally:
            bench.stop_warm()
            bench.stack.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print_table(f"Batch scoring, {args.rows:,} rows x 4 features, LogisticRegression, {args.partitions} Parquet "
                f"files, {args.workers} workers, end to end (read + score + write), medians",
                ["phase", "candidate", "runs", "median s", "rows/s", "load avg", "all runs (s)"],
                [[r["phase"], r["candidate"], r["runs"], r["median_s"], f"{r['rows_per_s']:,.0f}",
                  f"{r['load']:.1f}", " ".join(map(str, r["all_s"]))] for r in rows])
    print()
    for phase in ("warm", "cold"):
        if any(r["phase"] == phase for r in rows):
            print("\n".join(_verdict(rows, phase)))
    for note in bench.notes:
        print(f"note: {note}")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": rows,
                                         "notes": bench.notes}, indent=2))
    return 0


if __name__ == "__main__":  # spawn-based engines re-import this module in their workers
    sys.exit(main())
