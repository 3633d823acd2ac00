"""A bounded buffer drained by one daemon thread: how every monitor stays off the hot path.

``submit`` is one length check, one ``deque.append`` (atomic under the GIL) and
a wake-up of the thread when it sleeps. Servers submit once per *batch* of
calls (``mlops_predictions_batch``, a few per second), so an idle worker sleeps
until there is work or its tick is due instead of polling: on a lightly loaded
server, polling threads were a visible share of the per-request cost. The
worker drains everything queued in one go, handing batches to the handler. When the buffer is
full the item is dropped and counted, because a monitor that falls behind must
cost the server nothing. Handler exceptions are logged and counted; the thread
goes on.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable, Sequence

__all__ = ["BackgroundWorker"]

log = logging.getLogger("mlops_monitors")


class _Barrier:
    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = threading.Event()


class BackgroundWorker:
    """One thread, one bounded buffer; ``handler(items)`` gets batches of at most ``batch_max`` items.

    ``tick`` (optional) runs about every ``tick_interval_s`` seconds even when idle,
    for time-based flushes. It rides along with work: after a batch, a tick due
    within half an interval runs at once, and an idle wait may end half an interval
    late, so under steady traffic (a batch a second from the server) the thread
    wakes once per batch instead of once per batch plus once per tick. Each wake-up
    is a GIL hand-over the serving thread pays for.
    """

    def __init__(self, name: str, handler: Callable[[Sequence[Any]], None], *, maxsize: int = 1000,
                 batch_max: int = 4096, poll_interval_s: float = 5.0,
                 tick: Callable[[], None] | None = None, tick_interval_s: float = 1.0) -> None:
        self.name = name
        self._handler = handler
        self._tick = tick
        self._tick_interval = tick_interval_s
        self._maxsize = max(1, int(maxsize))
        self._batch_max = max(1, int(batch_max))
        self._poll = poll_interval_s  # a safety net only: submit() never loses a wake-up
        self._items: collections.deque[Any] = collections.deque()
        self._wake = threading.Event()
        self.submitted = 0
        self.processed = 0
        self.dropped = 0
        self.errors = 0
        self.cpu_seconds = 0.0  # CPU time of this thread spent in the handler and tick
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"mlops-monitor-{name}", daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> bool:
        """Enqueue ``item``; False (and counted as dropped) when the buffer is full or closed."""
        if self._closed or len(self._items) >= self._maxsize:
            self.dropped += 1  # plain int increments: a rare lost count under races is acceptable here
            return False
        self._items.append(item)
        self.submitted += 1
        if not self._wake.is_set():  # the server submits once per batch of calls: a wake-up per item is cheap
            self._wake.set()
        return True

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        start = time.thread_time()
        try:
            fn(*args)
        except Exception:
            self.errors += 1
            log.exception("monitor %s failed while processing; it keeps running", self.name)
        finally:
            self.cpu_seconds += time.thread_time() - start

    def _run(self) -> None:
        next_tick = time.monotonic() + self._tick_interval
        slack = self._tick_interval / 2
        items = self._items
        while True:
            if items:
                batch: list[Any] = []
                barriers: list[_Barrier] = []
                while items and len(batch) < self._batch_max:
                    item = items.popleft()
                    if isinstance(item, _Barrier):
                        barriers.append(item)
                        break  # everything before the barrier is in this batch
                    batch.append(item)
                if batch:
                    self._call(self._handler, batch)
                    self.processed += len(batch)
                for b in barriers:
                    b.event.set()
                due = next_tick - slack  # a tick due soon rides along with this batch
            elif self._closed:
                return
            else:
                self._wake.clear()
                if not items:
                    timeout = self._poll
                    if self._tick:
                        timeout = min(timeout, max(0.0, next_tick + slack - time.monotonic()))
                    self._wake.wait(timeout)
                due = next_tick
            if self._tick and time.monotonic() >= due:
                self._call(self._tick)
                next_tick = time.monotonic() + self._tick_interval

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far has been processed (True) or ``timeout`` passed."""
        if not self._thread.is_alive():
            return not self._items
        barrier = _Barrier()
        self._items.append(barrier)  # a barrier is never refused, even when the buffer is full
        self._wake.set()
        return barrier.event.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Process what is queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join(timeout)
        if self._items:
            log.warning("monitor %s: %d queued items not processed at close", self.name, len(self._items))

    @property
    def backlog(self) -> int:
        return len(self._items)
