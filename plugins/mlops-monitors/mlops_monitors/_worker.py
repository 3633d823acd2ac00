"""A bounded queue drained by one daemon thread: how every monitor stays off the hot path.

``submit`` never blocks: when the queue is full the item is dropped and counted,
because a monitor that falls behind must cost the server nothing. The handler runs
on the worker thread; an exception is logged and counted, and the thread goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable

__all__ = ["BackgroundWorker"]

log = logging.getLogger("mlops_monitors")

_STOP = object()


class BackgroundWorker:
    """One thread, one bounded queue; ``handler(item)`` runs off the caller's thread.

    ``tick`` (optional) runs every ``tick_interval_s`` seconds even when idle, for
    time-based flushes.
    """

    def __init__(self, name: str, handler: Callable[[Any], None], *, maxsize: int = 1000,
                 tick: Callable[[], None] | None = None, tick_interval_s: float = 1.0) -> None:
        self.name = name
        self._handler = handler
        self._tick = tick
        self._tick_interval = tick_interval_s
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, int(maxsize)))
        self.submitted = 0
        self.processed = 0
        self.dropped = 0
        self.errors = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"mlops-monitor-{name}", daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> bool:
        """Enqueue ``item``; False (and counted as dropped) when the queue is full or closed."""
        if self._closed:
            self.dropped += 1
            return False
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1  # racy increments under free threading are acceptable for a drop counter
            return False
        self.submitted += 1
        return True

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            self.errors += 1
            log.exception("monitor %s failed while processing; it keeps running", self.name)

    def _run(self) -> None:
        next_tick = time.monotonic() + self._tick_interval
        while True:
            timeout = max(0.0, next_tick - time.monotonic()) if self._tick else None
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            else:
                if item is _STOP:
                    self._queue.task_done()
                    return
                if isinstance(item, _Barrier):
                    item.event.set()
                else:
                    self._call(self._handler, item)
                    self.processed += 1
                self._queue.task_done()
            if self._tick and time.monotonic() >= next_tick:
                self._call(self._tick)
                next_tick = time.monotonic() + self._tick_interval

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far has been processed (True) or ``timeout`` passed."""
        if not self._thread.is_alive():
            return False
        barrier = _Barrier()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._queue.put(barrier, timeout=max(0.01, deadline - time.monotonic()))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    return False
        return barrier.event.wait(max(0.0, deadline - time.monotonic()))

    def close(self, timeout: float = 10.0) -> None:
        """Process what is queued, then stop the thread."""
        if self._closed:
            return
        self._closed = True
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("monitor %s: queue still full at close; %d items lost", self.name, self._queue.qsize())
            return
        self._thread.join(timeout)

    @property
    def backlog(self) -> int:
        return self._queue.qsize()


class _Barrier:
    def __init__(self) -> None:
        self.event = threading.Event()
