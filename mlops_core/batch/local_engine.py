"""The ``local`` batch engine: a pool of worker processes on this machine (the embedded default).

This module is a plugin, registered through the ``mlops_core.plugins`` entry point
of mlops-core like any third-party engine; it imports nothing heavy.

Workers are spawned once and kept for the engine's lifetime (the stack's), so
each loads the model once (``worker.load_model`` caches it per process) and a
second job in the same process starts warm. A worker process that dies (killed,
out of memory) breaks the pool: the tasks it had lost come back as failed
results, the pool is rebuilt, and the core's retry runs them again.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import attrs

from ..interfaces import BatchEngine
from ..plugins import hookimpl
from .settings import address_field, workers_field

__all__ = ["LocalEngine", "LocalConfig"]


@attrs.frozen
class LocalConfig:
    """``[batch] backend = "local"`` settings."""

    #: Worker processes (default: the machine's CPU count).
    workers: int | None = workers_field()
    #: multiprocessing start method: ``spawn`` (default, safe with threads) or ``forkserver``.
    start_method: str = attrs.field(default="spawn", validator=attrs.validators.in_(("spawn", "forkserver")))
    #: Unused by this engine; accepted so ``--address`` gives a clear message instead of a settings error.
    address: str | None = address_field()


class LocalEngine(BatchEngine):
    """Scores partitions in a pool of local worker processes (one model load per worker)."""

    def __init__(self, config: Any = None, context: Any = None) -> None:
        super().__init__(config or LocalConfig(), context)
        self._pool: Any = None

    def workers(self) -> int:
        return self.config.workers or os.cpu_count() or 1

    def check(self) -> str:
        if self.config.address:
            from ..errors import ConfigError

            raise ConfigError("the local batch engine runs on this machine and takes no address",
                              hint="use --engine dask, ray or spark to reach a cluster")
        return f"local process pool, {self.workers()} worker(s), start method {self.config.start_method}"

    def _executor(self) -> Any:
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            self._pool = ProcessPoolExecutor(self.workers(),
                                             mp_context=multiprocessing.get_context(self.config.start_method))
        return self._pool

    def run(self, tasks: Sequence[Any], *, on_result: Callable[[Any], None]) -> None:
        from concurrent.futures import as_completed
        from concurrent.futures.process import BrokenProcessPool

        from .types import PartitionResult
        from .worker import run_task

        self.check()
        pool = self._executor()
        futures = {pool.submit(run_task, task): task for task in tasks}
        broken = False
        for future in as_completed(futures):
            task = futures[future]
            try:
                result = future.result()
            except BrokenProcessPool as exc:  # a worker died: its tasks come back failed, the core retries them
                broken = True
                result = PartitionResult(task.index, task.input_url, task.output_url, attempt=task.attempt,
                                         error=f"worker process lost: {exc} (a script that starts a batch job "
                                               "must do it under `if __name__ == '__main__':`, see docs/batch.md)")
            except Exception as exc:  # the task or its result could not be pickled
                result = PartitionResult(task.index, task.input_url, task.output_url, attempt=task.attempt,
                                         error=f"{type(exc).__name__}: {exc}")
            on_result(result)
        if broken:
            self._shutdown()

    def _shutdown(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def close(self) -> None:
        self._shutdown()


@hookimpl
def mlops_register_backends(backends: Any) -> None:
    backends.add_batch_engine("local", "mlops_core.batch.local_engine:LocalEngine",
                              config="mlops_core.batch.local_engine:LocalConfig",
                              summary="processes on this machine (the embedded default)")
