"""Progress display for long build steps (resolve, layer, push), on stderr when it is a terminal.

When stderr is not a TTY (CI, pipes, ``--json``) nothing is drawn; each finished
step is logged at INFO on the ``mlops_oci`` logger instead.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import IO

__all__ = ["Progress", "human_bytes"]

log = logging.getLogger("mlops_oci")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover


class Progress:
    """One step at a time: ``start(label, total)``, ``advance(n)``, ``done(summary)``."""

    def __init__(self, enabled: bool | None = None, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self._label = ""
        self._total = 0
        self._done = 0
        self._start = 0.0
        self._last_draw = 0.0
        self.steps: list[tuple[str, float, str]] = []  # (label, seconds, summary)

    def start(self, label: str, total: int = 0) -> None:
        self._label, self._total, self._done = label, total, 0
        self._start = self._last_draw = time.perf_counter()
        self._draw(force=True)

    def advance(self, n: int) -> None:
        self._done += n
        self._draw()

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        if self._total:
            pct = min(100.0, 100.0 * self._done / self._total)
            text = f"{self._label}: {human_bytes(self._done)} / {human_bytes(self._total)} ({pct:.0f}%)"
        else:
            text = f"{self._label}..."
        self.stream.write("\r\x1b[2K" + text)
        self.stream.flush()

    def note(self, text: str) -> None:
        """One line the user must see even without a terminal (a choice made on their behalf)."""
        self.stream.write(("\r\x1b[2K" if self.enabled else "") + f"note: {text}\n")
        self.stream.flush()
        log.warning("%s", text)

    def done(self, summary: str = "") -> None:
        seconds = time.perf_counter() - self._start
        self.steps.append((self._label, seconds, summary))
        line = f"{self._label}: {summary} ({seconds:.1f} s)" if summary else f"{self._label} ({seconds:.1f} s)"
        if self.enabled:
            self.stream.write("\r\x1b[2K" + line + "\n")
            self.stream.flush()
        log.info("%s", line)
