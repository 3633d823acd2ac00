"""Median time of ``load_bundle`` on a 100 MiB cloudpickle bundle (verify + load).

    .venv/bin/python benchmarks/security/load_cost.py

Run it with ``PYTHONPATH`` pointing at a checkout of an older commit to compare
(see swap_race.py); alternate the two runs on a busy machine.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import mlops_core.bundle as bundle
from mlops_core.bundle import load_bundle, save_bundle


class Weights:
    def __init__(self) -> None:
        self.w = np.random.default_rng(0).random(100 * 2**20 // 8)

    def predict(self, x):
        return x


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        save_bundle(Weights(), Path(tmp) / "b")
        times = []
        for _ in range(7):
            t = time.perf_counter()
            load_bundle(Path(tmp) / "b")
            times.append(time.perf_counter() - t)
    print(f"{Path(bundle.__file__).parent}: load 100 MiB, median of 7: {statistics.median(times):.3f} s")


if __name__ == "__main__":
    main()
