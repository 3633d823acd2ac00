"""The ``dask`` batch engine: partitions scored as ``dask.distributed`` tasks.

What runs where:

* the **driver** (the process calling ``mlops batch`` / ``batch_score``) plans the
  partitions, submits one task per partition with ``client.map`` and receives the
  small :class:`~mlops_core.batch.PartitionResult` of each one as it completes;
* the **workers** run :func:`mlops_core.batch.run_task`: they read their input file,
  load the model (once per worker process, verified against the bundle digest),
  predict and write the output file themselves. No data goes through the driver or
  the scheduler; only task descriptors and results do.

With ``address`` set the engine connects to that scheduler and leaves the cluster
alone when it closes. Without it, the engine starts a ``LocalCluster`` of
``workers`` single-threaded worker *processes* on loopback (no dashboard) the first
time it runs, keeps it for the following runs (the core's retries, a second job)
and closes it in :meth:`DaskEngine.close`.

A worker process that dies mid-task is Dask's business: the scheduler moves its
tasks to the surviving (or restarted) workers. Only a task that keeps killing
workers (``distributed.scheduler.allowed-failures``) comes back as a failed
result, which the core then retries. ``distributed`` is imported only here, when a
stack builds the engine.
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Callable, Sequence

import attrs

from mlops_core.batch import PartitionResult, PartitionTask, run_task
from mlops_core.batch.settings import address_field, workers_field
from mlops_core.errors import BackendUnavailableError, ConfigError
from mlops_core.interfaces import BatchEngine

__all__ = ["DaskEngine", "DaskConfig"]


@attrs.frozen
class DaskConfig:
    """``[batch] backend = "dask"`` settings (``--address`` and ``--workers`` of ``mlops batch`` set the first two)."""

    #: Scheduler to use, e.g. ``tcp://scheduler:8786``; empty: a LocalCluster the engine starts and stops.
    address: str | None = address_field()
    #: Worker processes of the LocalCluster (default: the machine's CPU count). Ignored with ``address``.
    workers: int | None = workers_field()
    #: Threads per LocalCluster worker. 1 keeps one partition per process at a time (the model is shared
    #: by a process's threads; numpy releases the GIL, so 2+ can help on big machines).
    threads_per_worker: int = attrs.field(default=1, converter=int, validator=attrs.validators.ge(1))
    #: Dask-level retries of a task that raised (``run_task`` reports errors instead, so this covers
    #: what happens around it, such as a result that cannot be sent back).
    retries: int = attrs.field(default=2, converter=int, validator=attrs.validators.ge(0))
    #: Seconds to wait for the scheduler (and the LocalCluster's workers) to answer.
    timeout: float = attrs.field(default=60.0, converter=float)


class DaskEngine(BatchEngine):
    """Scores partitions on a Dask cluster: a scheduler at ``address`` or a LocalCluster it owns."""

    def __init__(self, config: Any = None, context: Any = None) -> None:
        super().__init__(config or DaskConfig(), context)
        self._client: Any = None
        self._cluster: Any = None  # set only when the engine started the cluster (it closes it)

    # ------------------------------------------------------------ connection
    def _connect(self) -> Any:
        if self._client is not None:
            return self._client
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover - install_requires has it
            raise ConfigError(f"the dask batch engine needs dask.distributed: {exc}",
                              hint="pip install 'dask[distributed]' (or reinstall mlops-batch-dask)") from None
        cfg = self.config
        try:
            if cfg.address:
                self._client = Client(cfg.address, timeout=cfg.timeout, set_as_default=False)
            else:
                self._cluster = LocalCluster(n_workers=self._local_workers(), threads_per_worker=cfg.threads_per_worker,
                                             processes=True, host="127.0.0.1", dashboard_address=None,
                                             timeout=cfg.timeout)
                self._client = Client(self._cluster, timeout=cfg.timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            self._shutdown()
            where = f"the Dask scheduler at {cfg.address}" if cfg.address else "a local Dask cluster"
            raise BackendUnavailableError(
                f"cannot reach {where}: {type(exc).__name__}: {exc}",
                hint="check the address (tcp://HOST:8786) and that the scheduler is running"
                     if cfg.address else "the machine may be overloaded; raise [batch] timeout or lower workers",
            ) from None
        return self._client

    def _local_workers(self) -> int:
        return self.config.workers or os.cpu_count() or 1

    # ------------------------------------------------------------ BatchEngine
    def workers(self) -> int:
        if not self.config.address:
            return self._local_workers() * self.config.threads_per_worker
        info = self._connect().scheduler_info()
        return sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()) or 1

    def run(self, tasks: Sequence[PartitionTask], *, on_result: Callable[[PartitionResult], None]) -> None:
        from distributed import as_completed

        tasks = list(tasks)
        if not tasks:
            return
        client = self._connect()
        job = uuid.uuid4().hex[:8]
        # readable keys in the scheduler's task stream; pure=False: a retried partition is a new task
        keys = [f"mlops-batch-{job}-{t.index}-{t.attempt}" for t in tasks]
        futures = client.map(run_task, tasks, key=keys, retries=self.config.retries, pure=False)
        by_key = dict(zip(keys, tasks))
        try:
            for future in as_completed(futures, loop=client.loop):
                task = by_key[future.key]
                try:
                    result = future.result()
                except Exception as exc:  # KilledWorker, a lost connection, an unpicklable result...
                    result = PartitionResult(task.index, task.input_url, task.output_url, attempt=task.attempt,
                                             worker=self.config.address or "dask",
                                             error=f"{type(exc).__name__}: {exc}")
                future.release()
                on_result(result)
        finally:
            client.cancel([f for f in futures if not f.done()])

    def check(self) -> str:
        import distributed

        if not self.config.address:
            return (f"dask {distributed.__version__}: a LocalCluster of {self._local_workers()} worker process(es) x "
                    f"{self.config.threads_per_worker} thread(s) on this machine, started per job")
        client = self._connect()
        workers = client.scheduler_info().get("workers", {})
        if not workers:
            raise BackendUnavailableError(f"the Dask scheduler at {self.config.address} has no workers",
                                          hint="start workers: dask worker " + self.config.address)
        from importlib.metadata import version

        found = client.run(version, "mlops-core", on_error="return")
        missing = sorted(addr for addr, v in found.items() if isinstance(v, BaseException))
        if missing:
            raise ConfigError(f"{len(missing)} Dask worker(s) cannot import mlops-core: {', '.join(missing)}",
                              hint="install mlops-core (and the model's requirements) in the workers' environment")
        versions = sorted(set(found.values()))
        threads = sum(w.get("nthreads", 1) for w in workers.values())
        return (f"dask {distributed.__version__}: scheduler {self.config.address}, {len(workers)} worker(s), "
                f"{threads} thread(s), mlops-core {', '.join(versions)} on the workers")

    # ------------------------------------------------------------ lifecycle
    def _shutdown(self) -> None:
        client, self._client = self._client, None
        cluster, self._cluster = self._cluster, None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    def close(self) -> None:
        """Disconnect; stop the LocalCluster if this engine started it (a cluster at ``address`` keeps running)."""
        self._shutdown()
