"""What every monitor of this distribution shares: a name, health counters, and the stack's storage.

Live monitors are kept in a weak set so the ``prometheus`` monitor can export
the health of all of them (queue drops, processing errors) under one metric
family, without two monitors ever writing the same family twice.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from mlops_core.interfaces import ArtifactStore, Monitor

__all__ = ["MonitorBase", "live_monitors"]

log = logging.getLogger("mlops_monitors")

_LIVE: "weakref.WeakSet[MonitorBase]" = weakref.WeakSet()


def live_monitors() -> list["MonitorBase"]:
    return sorted(list(_LIVE), key=lambda m: m.monitor_name)


class MonitorBase(Monitor):
    """A monitor with a background worker (``self.worker``, optional) and a storage binding."""

    kind = "monitor"

    def __init__(self, context: Any = None, storage: ArtifactStore | None = None) -> None:
        self.context = context
        self.hooks = getattr(context, "hooks", None)
        self.monitor_name = getattr(context, "name", None) or self.kind
        self._storage = storage
        self.worker: Any = None
        _LIVE.add(self)

    # storage ----------------------------------------------------------------
    def bind_storage(self, storage: ArtifactStore) -> None:
        """Use ``storage`` for profiles, logs and reports (default: the storage of the stack that built it)."""
        self._storage = storage

    @property
    def storage(self) -> ArtifactStore:
        """The storage bound with ``bind_storage``, else the building stack's; never a global stack."""
        if self._storage is None:
            stack = getattr(self.context, "stack", None)
            if stack is None:
                from mlops_core.errors import ConfigError

                raise ConfigError(
                    f"monitor {self.monitor_name!r} has no storage: it was built outside a stack",
                    hint="build it with a Stack (stack.start_monitors()), or call bind_storage(store) first",
                )
            self._storage = stack.storage
        return self._storage

    # health -------------------------------------------------------------------
    def health(self) -> dict[str, int]:
        w = self.worker
        if w is None:
            return {"processed": 0, "dropped": 0, "errors": 0, "backlog": 0}
        return {"processed": w.processed, "dropped": w.dropped, "errors": w.errors, "backlog": w.backlog}

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until queued work is processed (tests, batch jobs, shutdown)."""
        return self.worker.flush(timeout) if self.worker is not None else True

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
        _LIVE.discard(self)
