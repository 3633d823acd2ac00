"""The ``spark`` batch engine: partitions scored by Spark's Python workers through ``mapInArrow``.

The driver (this process) builds a DataFrame of task descriptors, one row and one
Spark partition per :class:`~mlops_core.batch.PartitionTask`, and maps it with
:func:`._worker.score_partitions`, which calls ``run_task`` on the worker: the
worker reads its input file, scores it and writes its output file itself, so the
data never travels through the driver or Spark's shuffle; only the small result
of each partition comes back.

One Spark job scores every partition at the cluster's full parallelism. Results
reach ``on_result`` as each Spark task ends, through a list accumulator the
driver reads while the job runs (``toLocalIterator`` would run one job per
partition, one or two at a time); the rows the job collects are the final word
for any result the accumulator did not deliver.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import re
import shutil
import sys
import threading
import uuid
from typing import Any, Callable, Iterator, Mapping, Sequence

import attrs

from mlops_core.batch import PartitionResult, PartitionTask
from mlops_core.batch.settings import address_field, workers_field
from mlops_core.errors import BackendUnavailableError, ConfigError
from mlops_core.interfaces import BatchEngine

__all__ = ["SparkEngine", "SparkConfig"]

_LOCAL = re.compile(r"^local(\[(\*|\d+)(,\s*\d+)?\])?$")
_CLUSTER_SCHEMES = ("spark://", "k8s://", "mesos://")
#: Seconds between two reads of the result accumulator while a job runs.
_POLL = 0.1


def _conf(value: Mapping[str, Any] | str | None) -> dict[str, str]:
    """A table of Spark settings, or ``"key=value,key=value"`` (``mlops batch --engine-option conf=...``)."""
    if isinstance(value, str):
        pairs = [item.partition("=") for item in value.split(",") if item.strip()]
        bad = [k for k, eq, _ in pairs if not eq or not k.strip()]
        if bad:
            raise ValueError(f"conf {value!r}: expected key=value,key=value (e.g. spark.executor.memory=4g)")
        value = {k.strip(): v.strip() for k, _, v in pairs}
    if not isinstance(value, Mapping):
        raise TypeError(f"conf must be a table of Spark settings, got {type(value).__name__}")
    return {str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}


@attrs.frozen
class SparkConfig:
    """``[batch] backend = "spark"`` settings.

    ``address`` and ``workers`` are what ``mlops batch --address/--workers`` set:
    ``address`` is a master URL and wins over ``master``; ``workers`` makes a local
    master ``local[N]`` and caps a cluster job at N cores (``spark.cores.max``).
    """

    #: Spark master URL: ``local[*]`` (default), ``local[2]``, ``spark://host:7077``, ``yarn``, ``k8s://...``.
    master: str = "local[*]"
    #: Extra Spark settings (``spark.executor.memory = "4g"``...); they win over the engine's defaults.
    conf: Mapping[str, str] = attrs.field(factory=dict, converter=_conf)
    #: The application name shown by the cluster manager.
    app_name: str = "mlops-batch"
    #: A master URL given on the command line (``--address``); overrides ``master``.
    address: str | None = address_field()
    #: Parallelism given on the command line (``--workers``).
    workers: int | None = workers_field()


def _first_line(exc: BaseException) -> str:
    """A Spark/Py4J error's first meaningful line (the full Java trace goes to the driver's log, not here)."""
    text = str(exc).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return f"{type(exc).__name__}: {line[:500]}" if line else type(exc).__name__


@contextlib.contextmanager
def _python_for_workers(executable: str | None) -> Iterator[None]:
    """PySpark reads ``PYSPARK_PYTHON`` once, when the SparkContext starts: set it for that moment only."""
    if executable is None or "PYSPARK_PYTHON" in os.environ:
        yield
        return
    os.environ["PYSPARK_PYTHON"] = executable
    try:
        yield
    finally:
        os.environ.pop("PYSPARK_PYTHON", None)


class SparkEngine(BatchEngine):
    """Scores partitions with Spark: ``mapInArrow`` over a DataFrame of task descriptors.

    The SparkSession is started on first use and kept for the engine's lifetime
    (the stack's), so a second job starts warm: JVM, executors and Python workers
    (each with its model) already up. A session that already existed in this
    process (a notebook's, an application's) is used as it is and never stopped.
    """

    def __init__(self, config: Any = None, context: Any = None) -> None:
        super().__init__(config or SparkConfig(), context)
        self._spark: Any = None
        self._owned = False
        self._lock = threading.Lock()

    # ----------------------------------------------------------------- settings
    @property
    def master(self) -> str:
        """The master URL the session is started with (``address`` wins; ``workers`` sizes ``local``)."""
        master = (self.config.address or self.config.master or "local[*]").strip()
        match = _LOCAL.match(master)
        if match and self.config.workers:
            retries = match.group(3) or ""
            return f"local[{self.config.workers}{retries}]"
        return master

    def _is_local(self) -> bool:
        return bool(_LOCAL.match(self.master))

    def _validate_master(self) -> None:
        master = self.master
        if master.startswith("sc://"):
            raise ConfigError(f"Spark Connect ({master}) is not supported by the spark batch engine",
                              hint="give the cluster's master URL (spark://host:7077, yarn, k8s://...): "
                                   "the engine needs a classic SparkContext")
        if not (self._is_local() or master == "yarn" or master.startswith(_CLUSTER_SCHEMES)):
            raise ConfigError(f"{master!r} is not a Spark master URL",
                              hint="use local[*], local[N], spark://HOST:7077, yarn or k8s://https://HOST:PORT "
                                   "(a standalone master at host:7077 is spark://host:7077)")

    def spark_conf(self) -> dict[str, str]:
        """The settings the session is started with: the engine's defaults, then the stack's ``conf``."""
        conf = {
            # the model is loaded once per Python worker: workers must outlive a task
            "spark.python.worker.reuse": "true",
            # the CLI draws its own progress bar; Spark's would interleave with it
            "spark.ui.showConsoleProgress": "false",
        }
        if self._is_local():
            conf.update({"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
                         "spark.ui.enabled": "false"})
        elif self.config.workers:
            conf["spark.cores.max"] = str(self.config.workers)
        conf.update(self.config.conf)
        return conf

    # ------------------------------------------------------------------ session
    def session(self) -> Any:
        """The SparkSession jobs run in: started on first use with :attr:`master` and :meth:`spark_conf`."""
        with self._lock:
            if self._spark is None:
                self._validate_master()
                try:
                    from pyspark import SparkContext
                    from pyspark.sql import SparkSession
                except ImportError as exc:
                    raise BackendUnavailableError(f"pyspark is not importable: {exc}",
                                                  hint="pip install mlops-batch-spark (it requires pyspark)") from None
                owned = SparkContext._active_spark_context is None
                if owned:
                    self._java()
                builder = SparkSession.builder.master(self.master).appName(self.config.app_name)
                conf = self.spark_conf()
                for key, value in conf.items():
                    builder = builder.config(key, value)
                python = conf.get("spark.pyspark.python") or (sys.executable if self._is_local() else None)
                try:
                    with _python_for_workers(python):
                        self._spark = builder.getOrCreate()
                except Exception as exc:
                    raise BackendUnavailableError(f"could not start Spark with master {self.master}: "
                                                  f"{_first_line(exc)}",
                                                  hint="check the master URL, that the cluster is up and "
                                                       "reachable, and the driver's log") from None
                self._owned = owned
            return self._spark

    def _java(self) -> str:
        """The java launcher Spark will start (JAVA_HOME, else PATH); a clear error when there is none."""
        home = os.environ.get("JAVA_HOME")
        java = os.path.join(home, "bin", "java") if home else shutil.which("java")
        if not java or not os.access(java, os.X_OK):
            raise BackendUnavailableError("Spark needs Java (17 or newer) and none was found"
                                          + (f" in JAVA_HOME={home}" if home else " on PATH"),
                                          hint="install a JRE (Debian: apt-get install default-jre-headless) "
                                               "or set JAVA_HOME")
        return java

    def workers(self) -> int:
        match = _LOCAL.match(self.master)
        if self._spark is None and match:
            count = match.group(2)
            return os.cpu_count() or 1 if count in (None, "*") else int(count)
        return int(self.session().sparkContext.defaultParallelism)

    def check(self) -> str:
        self._validate_master()
        try:
            import pyspark
        except ImportError as exc:
            raise BackendUnavailableError(f"pyspark is not importable: {exc}",
                                          hint="pip install mlops-batch-spark (it requires pyspark)") from None
        where = f"pyspark {pyspark.__version__}, master {self.master}"
        if self._spark is not None:
            sc = self._spark.sparkContext
            return f"{where}, session running (Spark {sc.version}, {sc.defaultParallelism} cores)"
        return f"{where}, java {self._java()}; the session starts with the first job"

    def close(self) -> None:
        with self._lock:
            spark, self._spark = self._spark, None
            if spark is not None and self._owned:
                spark.stop()
            self._owned = False

    # ---------------------------------------------------------------------- run
    def run(self, tasks: Sequence[PartitionTask], *, on_result: Callable[[PartitionResult], None]) -> None:
        from ._worker import RESULT_SCHEMA, TASK_SCHEMA, ResultList, score_partitions

        if not tasks:
            return
        spark = self.session()
        sc = spark.sparkContext
        collector = sc.accumulator([], ResultList())
        rows = [(task.index, pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)) for task in tasks]
        # parallelize with one slice per row: exactly one task descriptor per Spark partition
        descriptors = spark.createDataFrame(sc.parallelize(rows, len(rows)), TASK_SCHEMA)
        scored = descriptors.mapInArrow(functools.partial(score_partitions, results=collector), RESULT_SCHEMA)

        job = _Job(sc, scored)
        delivery = _Delivery(tasks, on_result)
        job.start()
        try:
            seen = 0
            while True:
                finished = job.wait(_POLL)
                value = collector.value
                delivery.add(value[seen:])
                seen = len(value)
                if finished:
                    break
        except BaseException:
            job.cancel()
            raise
        delivery.add([(row["index"], row["result"], row["error"]) for row in job.rows])
        delivery.finish(f"the Spark job failed: {_first_line(job.error)}" if job.error is not None
                        else "the Spark job returned no result for this partition")


class _Job:
    """One Spark job collecting the result rows in a thread, so the driver can report progress meanwhile."""

    def __init__(self, sc: Any, frame: Any) -> None:
        self._sc, self._frame = sc, frame
        self.group = f"mlops-batch-{uuid.uuid4().hex}"
        self.rows: list[Any] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._collect, name="mlops-spark-job", daemon=True)

    def _collect(self) -> None:
        try:
            self._sc.setJobGroup(self.group, "mlops batch scoring", interruptOnCancel=True)
            self.rows = self._frame.collect()
        except BaseException as exc:  # reported per partition by the driver
            self.error = exc

    def start(self) -> None:
        self._thread.start()

    def wait(self, timeout: float) -> bool:
        """True once the job ended (the thread has returned)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def cancel(self) -> None:
        with contextlib.suppress(Exception):
            self._sc.cancelJobGroup(self.group)
        self._thread.join()


class _Delivery:
    """Hands each task's result to ``on_result`` exactly once, whichever way it arrives first."""

    def __init__(self, tasks: Sequence[PartitionTask], on_result: Callable[[PartitionResult], None]) -> None:
        self._tasks = {task.index: task for task in tasks}
        self._on_result = on_result
        self._done: set[int] = set()

    def _failed(self, task: PartitionTask, error: str) -> PartitionResult:
        return PartitionResult(task.index, task.input_url, task.output_url, attempt=task.attempt, error=error)

    def add(self, items: Sequence[tuple[int, bytes | None, str | None]]) -> None:
        for index, payload, error in items:
            task = self._tasks.get(index)
            if task is None or index in self._done:  # a re-executed Spark task reports twice; the first counts
                continue
            self._done.add(index)
            self._on_result(pickle.loads(payload) if payload is not None else self._failed(task, error or "no result"))

    def finish(self, error: str) -> None:
        """Every task without a result fails with ``error`` (the core retries it)."""
        for index, task in self._tasks.items():
            if index not in self._done:
                self._done.add(index)
                self._on_result(self._failed(task, error))
