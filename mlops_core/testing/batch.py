"""Shared data for batch scoring tests and benchmarks: a partitioned dataset, a small model, the outputs.

Every engine's tests (local, Dask, Ray, Spark) and ``benchmarks/batch/`` score the
same deterministic dataset with the same model, so their predictions can be
compared row by row. Needs numpy, pandas, pyarrow and scikit-learn (test extras).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["FEATURES", "make_dataset", "make_frame", "small_model", "train_small_model", "read_predictions",
           "expected_predictions", "FaultyModel", "CountingModel", "batch_stack"]

#: The feature columns of :func:`make_dataset`, in the order the small model takes them.
FEATURES = ("f0", "f1", "f2", "f3")


def make_frame(rows: int, seed: int = 0, start: int = 0) -> Any:
    """A pyarrow Table: ``id`` (int64, ``start``...) and 4 float64 features, deterministic in ``seed``."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    data = rng.standard_normal((rows, len(FEATURES)))
    columns = {"id": pa.array(np.arange(start, start + rows, dtype=np.int64))}
    columns.update({name: pa.array(data[:, j]) for j, name in enumerate(FEATURES)})
    return pa.table(columns)


def make_dataset(folder: str | Path, rows: int = 1_000_000, partitions: int = 8, seed: int = 0,
                 fmt: str = "parquet", header: bool = True) -> Path:
    """Write ``rows`` rows split into ``partitions`` files ``part-00000.<fmt>``... under ``folder``.

    Partition ``i`` is generated from seed ``seed + i`` with ids continuing the
    previous partition's, so the whole dataset is deterministic and ids are unique.
    CSV files get a header row unless ``header=False``.
    """
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    start = 0
    for i in range(partitions):
        n = rows // partitions + (1 if i < rows % partitions else 0)
        table = make_frame(n, seed + i, start)
        start += n
        path = folder / f"part-{i:05d}.{fmt}"
        if fmt == "parquet":
            pq.write_table(table, path)
        elif fmt == "csv":
            pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(include_header=header))
        else:
            raise ValueError(f"unknown format {fmt!r}: parquet or csv")
    return folder


def _training_data(seed: int = 42, rows: int = 2000) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, len(FEATURES)))
    y = (x @ np.array([1.5, -2.0, 0.5, 1.0]) + 0.3 * rng.standard_normal(rows) > 0).astype(np.int64)
    return x, y


def train_small_model(name: str = "batch-small", *, stack: Any = None, alias: str | None = "prod",
                      dataframe: bool = False) -> str:
    """Train a LogisticRegression on the 4 features, register it in ``stack``; return its model URI.

    ``dataframe=True`` trains on a pandas DataFrame, so the model's signature names
    its inputs ``f0``..``f3`` (input kind ``dataframe``); otherwise it takes one
    ``(n, 4)`` float64 array (input kind ``ndarray``).
    """
    from .. import api

    x, _ = _training_data()
    model = small_model(dataframe)
    example: Any = x[:200]
    if dataframe:
        import pandas as pd

        example = pd.DataFrame(example, columns=list(FEATURES))
    version = api.register(name, model, example=example, alias=alias, stack=stack)
    return f"models:/{name}@{alias}" if alias else f"models:/{name}/{version.version}"


def read_predictions(output_url: str | Path, storage_options: Any = None) -> Any:
    """Every output file under ``output_url`` (Parquet or CSV) as one pandas DataFrame sorted by ``id``."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from ..batch.worker import open_fs

    fs, root = open_fs(str(output_url), storage_options)
    tables = []
    for path in sorted(fs.find(root)):
        name = path.rsplit("/", 1)[-1]
        if name.startswith((".", "_")):
            continue
        with fs.open(path, "rb") as f:
            if name.endswith(".parquet"):
                tables.append(pq.read_table(f))
            elif name.endswith(".csv"):
                tables.append(pacsv.read_csv(f))
    if not tables:
        return pd.DataFrame()
    frame = pa.concat_tables(tables, promote_options="default").to_pandas()
    return frame.sort_values("id", kind="stable").reset_index(drop=True) if "id" in frame else frame


def expected_predictions(model_uri: str, dataset: str | Path, *, stack: Any = None) -> Any:
    """``(ids, model.predict(all features))`` of a local Parquet dataset, ids sorted: the reference output."""
    import numpy as np
    import pyarrow.parquet as pq

    from .. import api

    table = pq.read_table(str(dataset))
    order = np.argsort(table.column("id").to_numpy(), kind="stable")
    x = np.column_stack([table.column(f).to_numpy() for f in FEATURES])[order]
    model = api.load(model_uri, stack=stack)
    return table.column("id").to_numpy()[order], model.predict(x)


class FaultyModel:
    """Wraps a model; the first ``predict`` call after ``trigger`` (a file) appears fails, once per trigger.

    The trigger is consumed by an atomic rename, so across any number of worker
    processes exactly one call fails. ``mode="raise"`` raises RuntimeError (a failed
    partition); ``mode="exit"`` ends the worker process at once (a lost worker).
    Picklable by reference (this module is importable by every worker).
    """

    def __init__(self, inner: Any, trigger: str | Path, mode: str = "raise") -> None:
        if mode not in ("raise", "exit"):
            raise ValueError("mode is 'raise' or 'exit'")
        self.inner = inner
        self.trigger = str(trigger)
        self.mode = mode

    def _fire(self) -> bool:
        import os

        try:
            os.rename(self.trigger, self.trigger + ".fired")
        except OSError:
            return False
        return True

    def predict(self, x: Any) -> Any:
        if self._fire():
            if self.mode == "exit":
                import os

                os._exit(3)
            raise RuntimeError("FaultyModel: the injected failure")
        return self.inner.predict(x)


def small_model(dataframe: bool = False) -> Any:
    """The fitted LogisticRegression of :func:`train_small_model`, unregistered."""
    from sklearn.linear_model import LogisticRegression

    x, y = _training_data()
    if dataframe:
        import pandas as pd

        return LogisticRegression().fit(pd.DataFrame(x, columns=list(FEATURES)), y)
    return LogisticRegression().fit(x, y)


class CountingModel:
    """Wraps a model and appends this process's pid to ``log`` each time it is unpickled (loaded).

    Batch tests read the file to check the model is loaded once per worker
    process, never once per partition or batch.
    """

    def __init__(self, inner: Any, log: str | Path) -> None:
        self.inner = inner
        self.log = str(log)

    def __setstate__(self, state: dict[str, Any]) -> None:
        import os

        self.__dict__.update(state)
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")

    def predict(self, x: Any) -> Any:
        return self.inner.predict(x)


def batch_stack(home: str | Path, engine: str = "local", settings: Any = None, monitors: Any = ()) -> Any:
    """A Stack with the embedded defaults under ``home`` and ``[batch] backend = engine`` with ``settings``.

    Built directly, not from a stack file, so no developer configuration leaks in;
    ``monitors`` are ComponentConfig entries (``ComponentConfig("prometheus")``).
    """
    from ..stack import DEFAULTS, SINGLE_COMPONENTS, ComponentConfig, Stack, StackConfig

    components = {c: ComponentConfig(DEFAULTS[c]) for c in SINGLE_COMPONENTS}
    components["batch"] = ComponentConfig(engine, dict(settings or {}))
    return Stack(StackConfig(home=Path(home), components=components, monitors=tuple(monitors),
                             source=f"batch_stack({home})"))
