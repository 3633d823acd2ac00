"""A progress bar for batch jobs on a terminal: partitions done of all, rows scored, rows per second.

tqdm draws it when installed; otherwise one line is redrawn with ``\\r``. Nothing
is printed when the stream is not a terminal (logs and pipes stay clean), which
:func:`terminal_progress` decides.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from .types import PartitionResult

__all__ = ["BatchProgress", "terminal_progress"]


class BatchProgress:
    """Callable handed to ``batch_score(progress=...)``: one call per partition result."""

    def __init__(self, partitions: int, stream: IO[str] | None = None) -> None:
        self.partitions = partitions
        self.stream = stream or sys.stderr
        self.done = self.rows = self.failed = 0
        self._start = time.perf_counter()
        self._bar: Any = None
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            self._bar = tqdm(total=partitions, unit="part", file=self.stream, dynamic_ncols=True)

    def __call__(self, result: PartitionResult) -> None:
        if result.ok:
            self.done += 1
            self.rows += result.rows
        else:
            self.failed += 1
        rate = self.rows / max(time.perf_counter() - self._start, 1e-9)
        if self._bar is not None:
            self._bar.update(1 if result.ok else 0)
            self._bar.set_postfix(rows=f"{self.rows:,}", rows_s=f"{rate:,.0f}", failed=self.failed)
        else:
            self.stream.write(f"\rbatch: {self.done}/{self.partitions} partitions  {self.rows:,} rows  "
                              f"{rate:,.0f} rows/s" + (f"  {self.failed} failed attempt(s)" if self.failed else ""))
            self.stream.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.done or self.failed:
            self.stream.write("\n")
            self.stream.flush()


def terminal_progress(partitions: int, stream: IO[str] | None = None) -> BatchProgress | None:
    """A progress bar on ``stream`` (stderr) when it is a terminal, else None (print nothing)."""
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    return BatchProgress(partitions, stream) if isatty is not None and isatty() else None
