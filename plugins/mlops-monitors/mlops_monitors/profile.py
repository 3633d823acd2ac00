"""Reference profiles: per-feature sketches of training data, stored with a model version.

A *feature* is one column the model sees. Inputs are named tensors (as the V2
protocol and :class:`~mlops_core.entities.PredictionEvent` carry them); a 1-D
tensor is one feature named like the tensor, a 2-D tensor ``x`` of shape
(rows, k) gives features ``x[0]`` ... ``x[k-1]``. Profiles built from training
data use the same naming as events seen while serving, so they line up.

Numeric features keep a KLL sketch, summary statistics and *fixed bins* cut at
the reference quantiles (20 bins by default), moved into the gaps between tied
values (:func:`tie_aware_edges`), with the reference counts in each;
serving windows count into the same bins, which makes them exactly mergeable and
constant in memory. Categorical features keep a capped frequency table.

Stored as JSON at ``profiles/<model>/<version>.json`` in the stack's storage.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import attrs
import numpy as np

from mlops_core.entities import utcnow
from mlops_core.errors import InvalidInputError, NotFoundError

from .sketches import OTHER, CappedCounter, KllSketch

__all__ = [
    "FeatureProfile", "ReferenceProfile", "build_profile", "profile_key", "load_profile", "save_profile",
    "extract_features", "tensors_from_example", "read_data", "MAX_COLUMNS", "tie_aware_edges",
]

#: Columns taken from one multi-column tensor at most (wider tensors are images or embeddings).
MAX_COLUMNS = 256


def profile_key(model: str, version: int | str) -> str:
    return f"profiles/{model}/{version}.json"


# ------------------------------------------------------------- feature naming
def tensors_from_example(value: Any) -> dict[str, Any]:
    """Name an example input the way a server decodes it (mirrors ``infer_tensor_specs``)."""
    if hasattr(value, "columns") and hasattr(value, "dtypes"):  # a pandas DataFrame
        return {str(c): np.asarray(value[c]) for c in value.columns}
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, tuple) and value and not isinstance(value[0], (int, float)):
        return {f"input-{i}": v for i, v in enumerate(value)}
    return {"input-0": value}


def extract_features(tensors: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """Split named tensors into 1-D per-feature arrays (one value per row)."""
    out: dict[str, np.ndarray] = {}
    for name, value in tensors.items():
        arr = np.asarray(value)
        if arr.ndim == 0:
            arr = arr.reshape(1)
        if arr.ndim == 1:
            out[prefix + name] = arr
            continue
        arr = arr.reshape(arr.shape[0], -1)
        for j in range(min(arr.shape[1], MAX_COLUMNS)):
            out[f"{prefix}{name}[{j}]"] = arr[:, j]
    return out


def is_numeric(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "iuf"


# ----------------------------------------------------------------- profiles
@attrs.frozen
class FeatureProfile:
    """Reference distribution of one feature. ``edges`` are interior bin edges (numeric)."""

    name: str
    kind: str  # "numeric" | "categorical"
    count: int
    missing: int = 0
    edges: tuple[float, ...] = attrs.field(default=(), converter=tuple)
    counts: tuple[int, ...] = attrs.field(default=(), converter=tuple)  # per bin, or per category
    categories: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    quantiles: tuple[float, ...] = attrs.field(default=(), converter=tuple)  # at 0, 0.01, ... 1
    sketch: Mapping[str, Any] | None = None

    @property
    def n_bins(self) -> int:
        return len(self.counts)

    def probabilities(self) -> np.ndarray:
        c = np.asarray(self.counts, dtype=np.float64)
        return c / c.sum() if c.sum() else c

    def bin_index(self, values: np.ndarray) -> np.ndarray:
        """Bin of each value: numeric by the edges, categorical by category (unknown -> OTHER)."""
        if self.kind == "numeric":
            return np.searchsorted(np.asarray(self.edges), values, side="right")
        lookup = {c: i for i, c in enumerate(self.categories)}
        other = lookup[OTHER]
        return np.fromiter((lookup.get(v, other) for v in values.astype(str).tolist()), dtype=np.int64,
                           count=values.size)

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self, recurse=False) | {"edges": list(self.edges), "counts": list(self.counts),
                                                    "categories": list(self.categories),
                                                    "quantiles": list(self.quantiles)}


@attrs.frozen
class ReferenceProfile:
    """Every feature's reference distribution for one model version."""

    model: str
    version: int | None
    rows: int
    features: Mapping[str, FeatureProfile]
    created_at: str = attrs.field(factory=lambda: utcnow().isoformat())
    source: str = ""

    def to_json(self) -> bytes:
        data = {"schema": "mlops-monitors/profile/v1", "model": self.model, "version": self.version,
                "rows": self.rows, "created_at": self.created_at, "source": self.source,
                "features": [f.to_dict() for f in self.features.values()]}
        return json.dumps(data, allow_nan=False, default=_no_nan).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes | str) -> "ReferenceProfile":
        data = json.loads(raw)
        if data.get("schema") != "mlops-monitors/profile/v1":
            raise InvalidInputError("not an mlops-monitors reference profile",
                                    hint="create one with `mlops monitor profile MODEL_URI --data FILE`")
        feats = {f["name"]: FeatureProfile(**f) for f in data["features"]}
        return cls(model=data["model"], version=data["version"], rows=data["rows"], features=feats,
                   created_at=data["created_at"], source=data.get("source", ""))


def _no_nan(obj: Any) -> Any:
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def build_profile(chunks: Callable[[], Iterable[Mapping[str, Any]]], *, model: str = "", version: int | None = None,
                  n_bins: int = 20, max_categories: int = 100, categorical: Iterable[str] = (),
                  k: int = 1000, source: str = "") -> ReferenceProfile:
    """Profile the features of ``chunks()`` (an iterable of tensor dicts), in two streaming passes.

    Pass one feeds KLL sketches and frequency tables; bin edges are cut at the
    sketch's quantiles; pass two counts rows into those bins exactly. Memory is
    constant in the number of rows: call it on a 100 GB CSV reader if you like.
    """
    forced = set(categorical)
    kinds: dict[str, str] = {}
    klls: dict[str, KllSketch] = {}
    cats: dict[str, CappedCounter] = {}
    stats: dict[str, list[float]] = {}  # count, missing, mean, M2 (Chan et al.'s merge: no cancellation)
    for chunk in chunks():
        for name, col in extract_features(chunk).items():
            kind = kinds.setdefault(name, "numeric" if is_numeric(col) and name not in forced else "categorical")
            st = stats.setdefault(name, [0, 0, 0.0, 0.0])
            st[0] += col.size
            if kind == "numeric":
                v = col.astype(np.float64)
                nan = np.isnan(v)
                st[1] += int(nan.sum())
                v = v[~nan]
                if v.size:
                    n_a, n_b = st[0] - st[1] - v.size, v.size
                    mean_b = float(v.mean())
                    m2_b = float(np.square(v - mean_b).sum())
                    delta = mean_b - st[2]
                    total = n_a + n_b
                    st[2] += delta * n_b / total
                    st[3] += m2_b + delta * delta * n_a * n_b / total
                klls.setdefault(name, KllSketch(k, seed=len(klls))).update(v)
            else:
                cats.setdefault(name, CappedCounter(max_categories)).update(col)
    if not kinds:
        raise InvalidInputError("no data to profile", hint="pass at least one row of training data")
    edges = {name: tie_aware_edges(sketch, n_bins) for name, sketch in klls.items()}
    bins: dict[str, np.ndarray] = {n: np.zeros(e.size + 1, dtype=np.int64) for n, e in edges.items()}
    for chunk in chunks():
        for name, col in extract_features(chunk).items():
            if name in bins:
                v = col.astype(np.float64)
                v = v[~np.isnan(v)]
                bins[name] += np.bincount(np.searchsorted(edges[name], v, side="right"),
                                          minlength=bins[name].size)
    features: dict[str, FeatureProfile] = {}
    rows = 0
    for name, kind in kinds.items():
        count, missing, mean, m2 = stats[name]
        rows = max(rows, int(count))
        if kind == "numeric":
            sketch = klls[name]
            n = count - missing
            mean = mean if n else math.nan
            var = max(m2 / n, 0.0) if n else math.nan
            features[name] = FeatureProfile(
                name=name, kind=kind, count=int(count), missing=int(missing), edges=edges[name].tolist(),
                counts=bins[name].tolist(), min=_finite(sketch.min), max=_finite(sketch.max), mean=_finite(mean),
                std=_finite(math.sqrt(var)) if n else None,
                quantiles=[float(q) for q in sketch.quantiles(np.linspace(0, 1, 101))] if n else [],
                sketch=sketch.to_dict() if n else None)
        else:
            categories, counts = cats[name].finalize()
            features[name] = FeatureProfile(name=name, kind=kind, count=int(count), counts=counts,
                                            categories=categories)
    return ReferenceProfile(model=model, version=version, rows=rows, features=features, source=source)


def tie_aware_edges(sketch: KllSketch, n_bins: int) -> np.ndarray:
    """Interior bin edges that never cut through a tied value.

    Real features are rounded (iris is measured to 0.1 cm), so quantiles land on
    atoms; an edge *at* an atom lets jitter smaller than the rounding step move
    half of it into the next bin, and bin-based scores (PSI) then see drift that
    is not there. Edges are put halfway between consecutive distinct values
    instead: a feature with at most ``n_bins`` distinct values gets one bin per
    value (each atom its own category), a wider one gets quantile edges moved to
    the gap just above the atom they fall on.
    """
    if not sketch.n:
        return np.empty(0)
    distinct = np.unique(np.concatenate(sketch.levels))
    if distinct.size <= 1:
        return np.empty(0)
    mids = (distinct[:-1] + distinct[1:]) / 2.0
    if distinct.size <= n_bins:
        return mids
    qs = sketch.quantiles(np.linspace(0, 1, n_bins + 1)[1:-1])
    idx = np.clip(np.searchsorted(distinct, qs, side="left"), 0, mids.size - 1)
    return np.unique(mids[idx])


def save_profile(storage: Any, profile: ReferenceProfile) -> str:
    key = profile_key(profile.model, profile.version if profile.version is not None else "unversioned")
    storage.write_bytes(key, profile.to_json())
    return key


def load_profile(storage: Any, model: str, version: int | str) -> ReferenceProfile:
    key = profile_key(model, version)
    try:
        raw = storage.read_bytes(key)
    except (NotFoundError, FileNotFoundError):
        raise NotFoundError(f"no reference profile for models:/{model}/{version} (looked for {key})",
                            hint=f"capture one: mlops monitor profile models:/{model}/{version} --data train.csv") from None
    return ReferenceProfile.from_json(raw)


# ---------------------------------------------------------------- data files
def read_data(path: str | os.PathLike[str], *, layout: str = "auto", input_name: str = "input-0",
              chunk_rows: int = 65_536) -> Callable[[], Iterator[dict[str, Any]]]:
    """A re-iterable chunk reader for ``.npy``, ``.npz`` or ``.csv`` training data.

    ``layout="matrix"`` presents every column as one 2-D tensor ``input_name``
    (a model saved from an ndarray example); ``"columns"`` gives one tensor per
    CSV column or npz array (a DataFrame or dict model). ``auto``: ``.npy`` is
    a matrix, ``.csv`` and ``.npz`` are columns.
    """
    p = Path(path)
    if not p.is_file():
        raise NotFoundError(f"data file {p} does not exist", hint="pass --data with a .csv, .npy or .npz file")
    suffix = p.suffix.lower()
    if layout not in ("auto", "matrix", "columns"):
        raise InvalidInputError(f"unknown layout {layout!r}", hint="use auto, matrix or columns")
    if suffix == ".npy":
        def npy() -> Iterator[dict[str, Any]]:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
            for start in range(0, max(arr.shape[0], 1), chunk_rows):
                part = np.asarray(arr[start:start + chunk_rows])
                if layout == "columns" and part.ndim == 2:
                    yield {f"{input_name}[{j}]": part[:, j] for j in range(part.shape[1])}
                else:
                    yield {input_name: part}
        return npy
    if suffix == ".npz":
        def npz() -> Iterator[dict[str, Any]]:
            with np.load(p, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            rows = max(a.shape[0] for a in arrays.values())
            for start in range(0, rows, chunk_rows):
                yield {k: a[start:start + chunk_rows] for k, a in arrays.items()}
        return npz
    if suffix in (".csv", ".tsv", ".txt"):
        delimiter = "\t" if suffix == ".tsv" else ","
        with open(p, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f, delimiter=delimiter), None)
        if not header:
            raise InvalidInputError(f"{p} has no header row", hint="the first CSV line must name the columns")

        def csv_chunks() -> Iterator[dict[str, Any]]:
            with open(p, newline="", encoding="utf-8") as f:
                reader = csv.reader(f, delimiter=delimiter)
                next(reader)
                while True:
                    rows = [r for _, r in zip(range(chunk_rows), reader)]
                    if not rows:
                        return
                    cols = {h: _column([r[i] if i < len(r) else "" for r in rows]) for i, h in enumerate(header)}
                    if layout == "matrix":
                        yield {input_name: np.column_stack([cols[h].astype(np.float64) for h in header])}
                    else:
                        yield cols
        return csv_chunks
    raise InvalidInputError(f"unsupported data file {p.name}", hint="use .csv, .tsv, .npy or .npz")


def _column(values: list[str]) -> np.ndarray:
    try:
        return np.array([float(v) if v.strip() else math.nan for v in values], dtype=np.float64)
    except ValueError:
        return np.array(values, dtype=object)


def profile_bytes(profile: ReferenceProfile) -> io.BytesIO:
    return io.BytesIO(profile.to_json())
