"""The ``ray`` batch engine: partitions scored as Ray tasks.

What runs where:

* the **driver** (the process calling ``mlops batch`` / ``batch_score``) plans the
  partitions, submits one Ray task per partition and collects each small
  :class:`~mlops_core.batch.PartitionResult` with ``ray.wait`` as it completes;
* Ray **worker processes** run :func:`mlops_core.batch.run_task`: they read their
  input file, load the model (once per worker process: Ray reuses a worker for
  the next task, and ``run_task`` caches the verified model per process), predict
  and write the output file themselves. No data goes through the driver.

With ``address`` (``auto``, ``ray://head:10001`` or ``head:6379``) the engine
connects to that cluster; without it, it starts a local Ray with ``num_cpus =
workers`` on loopback (no dashboard). It shuts Ray down in :meth:`RayEngine.close`
only if it initialised Ray itself: a driver that called ``ray.init`` before keeps
its Ray. A worker process that dies mid-task is retried by Ray
(``max_retries``); a task that keeps failing comes back as a failed result, which
the core retries. ``ray`` is imported only here, when a stack builds the engine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import attrs

from mlops_core.batch import PartitionResult, PartitionTask, run_task
from mlops_core.batch.settings import address_field, at_least, optional_int, optional_text, workers_field
from mlops_core.errors import BackendUnavailableError, ConfigError
from mlops_core.interfaces import BatchEngine

__all__ = ["RayEngine", "RayConfig"]

#: ``ray.init`` gives a local raylet 30 s to register, and the raylet gives its agents
#: ``agent_register_timeout_ms``; on a loaded machine Python start-up alone can take
#: longer, so a failed local start is tried again this many times.
START_ATTEMPTS = 3


@attrs.frozen
class RayConfig:
    """``[batch] backend = "ray"`` settings (``--address`` and ``--workers`` of ``mlops batch`` set the first two)."""

    #: ``auto`` (the cluster this machine belongs to), ``ray://HEAD:10001`` (Ray Client) or ``HEAD:6379``;
    #: empty: a local Ray the engine starts and shuts down.
    address: str | None = address_field()
    #: CPUs of the local Ray (default: the machine's CPU count); each partition takes one. Ignored with ``address``.
    workers: int | None = workers_field()
    #: Times Ray runs a task again when its worker process dies (Ray's ``max_retries``).
    max_retries: int = attrs.field(default=3, converter=int, validator=attrs.validators.ge(0))
    #: The local Ray's session folder (sockets, logs, spilled objects); default: a private folder under /tmp
    #: removed when the engine closes.
    temp_dir: str | None = attrs.field(default=None, converter=optional_text)
    #: Bytes of shared memory for the local Ray's object store (default Ray's: 30% of RAM). Results are small.
    object_store_memory: int | None = attrs.field(default=None, converter=optional_int,
                                               validator=at_least(78_643_200))


class RayEngine(BatchEngine):
    """Scores partitions as Ray tasks on a cluster at ``address`` or a local Ray it starts."""

    def __init__(self, config: Any = None, context: Any = None) -> None:
        super().__init__(config or RayConfig(), context)
        self._owned = False  # True when this engine called ray.init (so close() shuts Ray down)
        self._remote: Any = None
        self._temp: str | None = None  # the private session folder of a local Ray the engine started

    # ------------------------------------------------------------ connection
    def _ray(self) -> Any:
        try:
            import ray
        except ImportError as exc:  # pragma: no cover - install_requires has it
            raise ConfigError(f"the ray batch engine needs ray: {exc}",
                              hint="pip install ray (or reinstall mlops-batch-ray)") from None
        if not ray.is_initialized():
            self._init(ray)
        if self._remote is None:
            self._remote = ray.remote(num_cpus=1, max_retries=self.config.max_retries)(run_task)
        return ray

    def _init(self, ray: Any) -> None:
        cfg = self.config
        common = dict(log_to_driver=False, namespace="mlops-batch")
        if cfg.address:
            try:
                ray.init(address=cfg.address, **common)
            except (ConnectionError, RuntimeError, TimeoutError) as exc:
                raise BackendUnavailableError(
                    f"cannot connect to the Ray cluster at {cfg.address}: {exc}",
                    hint="check the address (auto, ray://HEAD:10001 or HEAD:6379) and that the cluster is up",
                ) from None
            self._owned = True
            return
        # a raylet waits this long for its agents (Python processes) before it gives up
        os.environ.setdefault("RAY_agent_register_timeout_ms", "180000")
        if cfg.temp_dir is None and self._temp is None:
            # a private session folder: nothing shared with another Ray, removed on close; short, because
            # Ray's socket paths inside it must stay under 107 bytes
            self._temp = tempfile.mkdtemp(prefix="mlops-ray-", dir="/tmp")
        temp = cfg.temp_dir or self._temp
        last: Exception | None = None
        for _ in range(START_ATTEMPTS):
            before = _sessions(temp)
            try:
                ray.init(num_cpus=self._local_workers(), include_dashboard=False, _node_ip_address="127.0.0.1",
                         _temp_dir=temp, object_store_memory=cfg.object_store_memory, **common)
            except Exception as exc:  # Ray raises a bare Exception when its node times out during start-up
                last = exc
                ray.shutdown()
                # a failed start leaves the processes it had started (GCS, dashboard, agents) running
                _stop_processes_of(_sessions(temp) - before)
                continue
            self._owned = True
            return
        self._temp = None  # kept (not removed on close): the hint sends people to its logs
        raise BackendUnavailableError(f"a local Ray did not start ({START_ATTEMPTS} attempts): {last}",
                                      hint="the machine may be overloaded; see the logs under "
                                           f"{temp}/session_*/logs")

    def _local_workers(self) -> int:
        return self.config.workers or os.cpu_count() or 1

    # ------------------------------------------------------------ BatchEngine
    def workers(self) -> int:
        if not self.config.address:
            return self._local_workers()
        return int(self._ray().cluster_resources().get("CPU", 1)) or 1

    def run(self, tasks: Sequence[PartitionTask], *, on_result: Callable[[PartitionResult], None]) -> None:
        tasks = list(tasks)
        if not tasks:
            return
        ray = self._ray()
        by_ref = {self._remote.remote(task): task for task in tasks}
        waiting = list(by_ref)
        try:
            while waiting:
                ready, waiting = ray.wait(waiting, num_returns=1)
                for ref in ready:
                    task = by_ref.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as exc:  # WorkerCrashedError after max_retries, a lost node...
                        result = PartitionResult(task.index, task.input_url, task.output_url, attempt=task.attempt,
                                                 worker=self.config.address or "ray",
                                                 error=f"{type(exc).__name__}: {exc}")
                    on_result(result)
        finally:
            for ref in waiting:
                ray.cancel(ref)

    def check(self) -> str:
        import ray

        if not self.config.address:
            return (f"ray {ray.__version__}: a local Ray with {self._local_workers()} CPU(s) on loopback, "
                    f"started per job (temp dir {self.config.temp_dir or 'private, under /tmp'})")
        ray = self._ray()
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if not cpus:
            raise BackendUnavailableError(f"the Ray cluster at {self.config.address} has no CPUs to run tasks on",
                                          hint="start worker nodes: ray start --address HEAD:6379")
        return f"ray {ray.__version__}: cluster {self.config.address}, {len(nodes)} node(s), {cpus} CPU(s)"

    # ------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Shut Ray down if this engine initialised it; a Ray the caller started keeps running."""
        self._remote = None
        if self._owned:
            self._owned = False
            import ray

            ray.shutdown()
        temp, self._temp = self._temp, None
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def _sessions(temp: str) -> set[str]:
    """The session folders under a Ray temp folder (one per ``ray.init`` that started a local Ray)."""
    return {str(p) for p in Path(temp).glob("session_2*")}


def _stop_processes_of(sessions: set[str]) -> None:
    """Kill the processes whose command line names one of these session folders (and only those)."""
    import psutil

    if not sessions:
        return
    victims = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info.get("cmdline") or ())
        if any(session in cmdline for session in sessions):
            victims.append(proc)
    for proc in victims:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(victims, timeout=10)
