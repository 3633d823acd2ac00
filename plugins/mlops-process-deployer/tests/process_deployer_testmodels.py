"""Models for the process deployer tests, pickled by value so the server process needs no test code."""

from __future__ import annotations

from typing import Any

import numpy as np


def _refuse_to_load(message: str) -> Any:
    raise RuntimeError(message)


class BrokenOnLoad:
    """Predicts fine here, but unpickling it (what the server does to load it) raises."""

    def predict(self, x: Any) -> Any:
        return np.asarray(x, dtype=float).sum(axis=1)

    def __reduce__(self) -> Any:
        return (_refuse_to_load, ("this model is broken on purpose and refuses to load",))
