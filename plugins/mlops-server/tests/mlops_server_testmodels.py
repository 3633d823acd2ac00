"""Models the server tests pickle into bundles (by value, so the server process needs no test code)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np


class Echo:
    """Returns its input unchanged (any datatype)."""

    def predict(self, x: Any) -> Any:
        return x


class Affine:
    """2x + 1, row by row: batching must not change a single bit."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        return x * 2.0 + 1.0


class TwoOutputs:
    """Two named outputs from one input."""

    def predict(self, x: np.ndarray) -> dict:
        return {"doubled": x * 2, "total": x.sum(axis=1)}


class Slow:
    """Sleeps, then echoes: for timeouts, load shedding and draining."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def predict(self, x: Any) -> Any:
        time.sleep(self.seconds)
        return x


class SlowAffine:
    """A slow model in a thread: requests queue while it runs, so batches form for sure."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        time.sleep(0.05)
        return x * 2.0 + 1.0


class Broken:
    """Loads fine, raises on every prediction (so also at warm-up)."""

    def predict(self, x: Any) -> Any:
        raise RuntimeError("this model is broken on purpose")


class RejectsNegative:
    """Raises ValueError on some inputs (like sklearn on NaN): a 400, not a crash."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        if (x < 0).any():
            raise ValueError("negative values are not allowed")
        return x


class FrameModel:
    """Takes a DataFrame; returns a number per row computed from both columns."""

    def predict(self, df: Any) -> np.ndarray:
        return df["x"].to_numpy() * 10 + df["word"].str.len().to_numpy()


class DictModel:
    """Takes a dict of arrays."""

    def predict(self, inputs: dict) -> np.ndarray:
        return inputs["a"] + inputs["b"]


class SlowToLoad(Echo):
    """Takes a while to unpickle, like a big model: for signals that arrive during loading."""

    def __init__(self) -> None:
        self.delay = 3.0  # a non-empty state, so unpickling calls __setstate__

    def __setstate__(self, state: dict) -> None:
        gate = os.environ.get("MLOPS_TEST_LOAD_GATE")
        if gate:  # tests synchronise on files: "<gate>.started" appears, loading ends once "<gate>.release" does
            Path(gate + ".started").touch()
            deadline = time.monotonic() + 60
            while not Path(gate + ".release").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        else:
            time.sleep(state["delay"])
        self.__dict__.update(state)


class RejectsZeros:
    """Raises on an all-zero input (as a model validating its features might); fine on real rows."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        if not np.asarray(x).any():
            raise ValueError("all-zero input: this is not a real row")
        return x * 2.0
