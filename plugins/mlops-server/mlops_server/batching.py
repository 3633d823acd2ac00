"""Adaptive batching: concurrent requests to one model are stacked along axis 0 and predicted once.

How a batch forms (Triton's idea, with MLServer's knobs):

* A request arriving at an idle batcher is flushed on the *next* event-loop
  turn, so every request the loop read in the same turn joins it at no extra
  latency. A lone client (concurrency 1) therefore never waits.
* While the batcher sees concurrency (its last batch held more than one
  request), a new batch also waits up to ``max_wait_s`` for more requests,
  stopping early as soon as ``max_batch_size`` rows are queued.
* When the model runs in a thread, requests that arrive meanwhile queue up and
  form the next batch the moment the running one finishes.

Outputs are split back by each request's row count. If a model's outputs do not
have one row per input row, or a batch raises, the requests are predicted one
by one instead, so batching never changes a result or spreads one client's bad
input to others.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Mapping

import numpy as np

log = logging.getLogger("mlops_server")

__all__ = ["AdaptiveBatcher"]


class _Item:
    __slots__ = ("arrays", "rows", "future")

    def __init__(self, arrays: Mapping[str, np.ndarray], rows: int, future: asyncio.Future) -> None:
        self.arrays = arrays
        self.rows = rows
        self.future = future


class AdaptiveBatcher:
    """Per-model request batcher; ``await submit(arrays, rows)`` returns that request's outputs."""

    def __init__(self, model: Any, max_batch_size: int, max_wait_s: float) -> None:
        self.model = model
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_wait_s = max(0.0, float(max_wait_s))
        self._queue: deque[_Item] = deque()
        self._queued_rows = 0
        self._scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._running = False
        self._last_batch_requests = 1
        self._loop: asyncio.AbstractEventLoop | None = None
        # Statistics for /metrics.
        self.batches = 0
        self.batched_requests = 0
        self.fallbacks = 0

    def submit(self, arrays: Mapping[str, np.ndarray], rows: int) -> asyncio.Future:
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        fut = loop.create_future()
        self._queue.append(_Item(arrays, rows, fut))
        self._queued_rows += rows
        if self._running:
            return fut  # the running batch flushes the queue when it finishes
        if self._queued_rows >= self.max_batch_size:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
                self._scheduled = False
            if not self._scheduled:
                self._scheduled = True
                loop.call_soon(self._flush)
        elif not self._scheduled:
            self._scheduled = True
            if self.max_wait_s > 0 and self._last_batch_requests > 1:
                self._timer = loop.call_later(self.max_wait_s, self._flush)
            else:
                loop.call_soon(self._flush)
        return fut

    # ------------------------------------------------------------ internals
    def _take(self) -> list[_Item]:
        items: list[_Item] = []
        rows = 0
        queue = self._queue
        while queue:
            item = queue[0]
            if item.future.done():  # timed out or cancelled while queued: skip its work
                queue.popleft()
                self._queued_rows -= item.rows
                continue
            if items and rows + item.rows > self.max_batch_size:
                break
            queue.popleft()
            self._queued_rows -= item.rows
            items.append(item)
            rows += item.rows
        return items

    def _flush(self) -> None:
        self._scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._running:
            return
        items = self._take()
        if not items:
            return
        self._last_batch_requests = len(items)
        self.batches += 1
        self.batched_requests += len(items)
        model = self.model
        total = sum(i.rows for i in items)
        if model.runs_inline(total):
            try:
                results = self._run(items)
            except BaseException as exc:  # pragma: no cover - _run catches model errors itself
                results = [exc] * len(items)
            self._deliver(items, results)
            self._after()
        else:
            self._running = True
            assert self._loop is not None
            cf = model.executor.submit(self._run, items)
            cf.add_done_callback(lambda f: self._loop.call_soon_threadsafe(self._thread_done, items, f))

    def _thread_done(self, items: list[_Item], cf: Any) -> None:
        self._running = False
        try:
            results = cf.result()
        except BaseException as exc:
            results = [exc] * len(items)
        self._deliver(items, results)
        self._after()

    def _after(self) -> None:
        if self._queue and not self._scheduled:
            self._scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._flush)

    @staticmethod
    def _deliver(items: list[_Item], results: list[Any]) -> None:
        for item, result in zip(items, results):
            if item.future.done():
                continue
            if isinstance(result, BaseException):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)

    def _run(self, items: list[_Item]) -> list[Any]:
        """Predict a batch; per-request results (output lists or exceptions). Runs inline or in a thread."""
        model = self.model
        if len(items) == 1:
            return [self._one(items[0])]
        names = list(items[0].arrays)
        try:
            merged = {n: np.concatenate([i.arrays[n] for i in items], axis=0) for n in names}
            outputs = model.predict(merged)
        except Exception:
            # One request's input may be what the model rejects: answer each on its own.
            self.fallbacks += 1
            return [self._one(i) for i in items]
        total = sum(i.rows for i in items)
        if any(arr.ndim == 0 or arr.shape[0] != total for _n, arr in outputs):
            self.fallbacks += 1
            log.warning("model %r returned outputs without one row per input row; batching falls back to "
                        "one call per request", model.name)
            return [self._one(i) for i in items]
        results = []
        start = 0
        for item in items:
            end = start + item.rows
            results.append([(n, arr[start:end]) for n, arr in outputs])
            start = end
        return results

    def _one(self, item: _Item) -> Any:
        try:
            return self.model.predict(item.arrays)
        except Exception as exc:
            return exc
