"""Constant-memory sketches: a mergeable KLL quantile sketch and a capped frequency table.

``KllSketch`` follows Karnin, Lang and Liberty (2016): a stack of compactors whose
capacities shrink geometrically (factor ``c = 2/3``) from the top level down,
so memory stays near ``k / (1 - c) = 3k`` items however many values stream in.
Each compaction sorts a level and promotes every other item (random offset) to
the level above with twice the weight. k = 200 gives about 1.3 % rank error at
99 % confidence (the whylogs/DataSketches figure). Updates are vectorised with
numpy: level 0 is a buffer of ``k`` values compacted as a whole, so a batch never
grows memory and the result does not depend on how the stream was chunked.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

import numpy as np

__all__ = ["KllSketch", "CappedCounter", "OTHER"]

#: Bucket of a capped frequency table that collects everything past the cap.
OTHER = "__other__"


class KllSketch:
    """Mergeable streaming quantile sketch over floats (NaN values are ignored)."""

    C = 2.0 / 3.0

    def __init__(self, k: int = 200, seed: int | None = None) -> None:
        if k < 8:
            raise ValueError("k must be at least 8")
        self.k = int(k)
        self.n = 0
        self.levels: list[np.ndarray] = [np.empty(0, dtype=np.float64)]
        self.min = math.inf
        self.max = -math.inf
        self._rng = np.random.default_rng(seed)

    # --------------------------------------------------------------- updates
    def _capacity(self, level: int) -> int:
        depth = len(self.levels) - level - 1
        return max(2, int(math.ceil(self.k * self.C ** depth)))

    def update(self, values: Any) -> None:
        v = np.asarray(values, dtype=np.float64).ravel()
        v = v[~np.isnan(v)]
        if v.size == 0:
            return
        self.n += int(v.size)
        self.min = min(self.min, float(v.min()))
        self.max = max(self.max, float(v.max()))
        # Level 0 is filled to exactly k items before each compaction, so the
        # sketch (and its random offsets) are the same however the stream is chunked.
        start = 0
        while start < v.size:
            room = max(1, self.k - self.levels[0].size)
            self.levels[0] = np.concatenate((self.levels[0], v[start:start + room]))
            start += room
            if self.levels[0].size >= self.k:
                self._compress()

    def _compress(self) -> None:
        level = 0
        while level < len(self.levels):
            buf = self.levels[level]
            # level 0 doubles as the input buffer: it is compacted whenever it holds k items
            if buf.size > self._capacity(level) or (level == 0 and buf.size >= self.k):
                if level + 1 == len(self.levels):
                    self.levels.append(np.empty(0, dtype=np.float64))
                buf = np.sort(buf)
                keep = buf[-1:] if buf.size % 2 else buf[:0]  # an odd item stays behind
                pairs = buf[: buf.size - keep.size]
                promoted = pairs[int(self._rng.integers(2))::2]
                self.levels[level + 1] = np.concatenate((self.levels[level + 1], promoted))
                self.levels[level] = keep.copy()
            level += 1

    def merge(self, other: "KllSketch") -> "KllSketch":
        """Fold ``other`` into this sketch (in place) and return self."""
        while len(self.levels) < len(other.levels):
            self.levels.append(np.empty(0, dtype=np.float64))
        for i, lvl in enumerate(other.levels):
            self.levels[i] = np.concatenate((self.levels[i], lvl))
        self.n += other.n
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self._compress()
        return self

    # --------------------------------------------------------------- queries
    def _weighted(self) -> tuple[np.ndarray, np.ndarray]:
        items = np.concatenate(self.levels)
        weights = np.concatenate([np.full(lvl.size, 2.0 ** i) for i, lvl in enumerate(self.levels)])
        order = np.argsort(items, kind="stable")
        return items[order], np.cumsum(weights[order])

    def quantiles(self, qs: Iterable[float]) -> np.ndarray:
        qs = np.asarray(list(qs), dtype=np.float64)
        if self.n == 0:
            return np.full(qs.shape, np.nan)
        items, cum = self._weighted()
        idx = np.searchsorted(cum, qs * cum[-1], side="left")
        out = items[np.clip(idx, 0, items.size - 1)]
        out[qs <= 0] = self.min
        out[qs >= 1] = self.max
        return out

    def cdf(self, points: Iterable[float]) -> np.ndarray:
        """Estimated fraction of values <= each point."""
        points = np.asarray(list(points), dtype=np.float64)
        if self.n == 0:
            return np.full(points.shape, np.nan)
        items, cum = self._weighted()
        idx = np.searchsorted(items, points, side="right")
        return np.where(idx > 0, cum[np.maximum(idx - 1, 0)] / cum[-1], 0.0)

    # ---------------------------------------------------------------- memory
    @property
    def retained(self) -> int:
        """Items held in memory (bounded by about 3k plus one per level)."""
        return int(sum(lvl.size for lvl in self.levels))

    @property
    def nbytes(self) -> int:
        return int(sum(lvl.nbytes for lvl in self.levels))

    # ---------------------------------------------------------- persistence
    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "n": self.n, "min": self.min if self.n else None, "max": self.max if self.n else None,
                "levels": [lvl.tolist() for lvl in self.levels]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "KllSketch":
        sketch = cls(int(data["k"]))
        sketch.n = int(data["n"])
        sketch.levels = [np.asarray(lvl, dtype=np.float64) for lvl in data["levels"]] or [np.empty(0)]
        if sketch.n:
            sketch.min, sketch.max = float(data["min"]), float(data["max"])
        return sketch


class CappedCounter:
    """Frequencies of at most ``cap`` distinct values; the rarest ones fold into :data:`OTHER`.

    Pruning happens when the table reaches twice the cap, keeping the ``cap``
    most frequent values, so memory is bounded by ``2 * cap`` entries.
    """

    def __init__(self, cap: int = 100) -> None:
        self.cap = int(cap)
        self.counts: dict[str, int] = {}
        self.other = 0
        self.n = 0

    def update(self, values: Any) -> None:
        arr = np.asarray(values).ravel()
        if arr.size == 0:
            return
        keys, counts = np.unique(arr.astype(str), return_counts=True)
        self.n += int(arr.size)
        for key, count in zip(keys.tolist(), counts.tolist()):
            self.counts[key] = self.counts.get(key, 0) + int(count)
        if len(self.counts) >= 2 * self.cap:
            self._prune()

    def _prune(self) -> None:
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        self.counts = dict(ranked[: self.cap])
        self.other += sum(c for _, c in ranked[self.cap:])

    def finalize(self) -> tuple[list[str], list[int]]:
        """Categories (most frequent first, capped) and their counts, with OTHER last when non-empty."""
        self._prune() if len(self.counts) > self.cap else None
        ranked = sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        cats = [k for k, _ in ranked]
        counts = [c for _, c in ranked]
        cats.append(OTHER)
        counts.append(self.other)
        return cats, counts
