"""Tiny models and bundles the conformance suites deploy, build and round-trip.

They live in an importable module (not in a test file) so that a bundle pickled
here loads in any process that has mlops-core installed: a deployer's server
process, a container, a worker. Nothing here needs numpy; it is used when the
input already is a numpy array.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["DoublingModel", "double", "flatten", "reshape", "save_kit_bundle", "EXAMPLE_INPUT", "EXPECTED_OUTPUT"]

#: The example input the kit saves bundles with, and what DoublingModel answers.
EXAMPLE_INPUT = [[1.0, 2.0], [3.0, 4.0]]
EXPECTED_OUTPUT = [[2.0, 4.0], [6.0, 8.0]]


def double(value: Any) -> Any:
    """Multiply every number by 2, keeping the nesting (lists) or the array type (numpy)."""
    if isinstance(value, (list, tuple)):
        return [double(v) for v in value]
    return value * 2


class DoublingModel:
    """``predict(x) == 2 * x`` for nested lists and numpy arrays. ``factor`` makes distinct bundles."""

    def __init__(self, tag: str = "kit") -> None:
        self.tag = tag

    def predict(self, x: Any) -> Any:
        return double(x)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DoublingModel) and other.tag == self.tag

    def __hash__(self) -> int:
        return hash(("DoublingModel", self.tag))

    def __repr__(self) -> str:
        return f"DoublingModel(tag={self.tag!r})"


def flatten(value: Any) -> list[Any]:
    """Row-major flattening of nested lists (or anything with ``tolist``)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        return [value]
    out: list[Any] = []
    for v in value:
        out.extend(flatten(v))
    return out


def reshape(flat: list[Any], shape: list[int]) -> Any:
    """Nested lists of ``shape`` from a flat row-major list (the inverse of :func:`flatten`)."""
    if not shape:
        return flat[0]
    if len(shape) == 1:
        return list(flat)
    step = len(flat) // shape[0] if shape[0] else 0
    return [reshape(flat[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]


def save_kit_bundle(path: str | Path, *, tag: str = "kit") -> Any:
    """Save a DoublingModel bundle at ``path`` with the core's cloudpickle format; return its BundleInfo."""
    from ..bundle import save_bundle
    from ..plugins import get_plugin_manager

    pm = get_plugin_manager()
    borrowed = None
    if "cloudpickle" not in pm.catalog.names("format"):
        # An isolated plugin manager (mlops_plugin_manager) has no formats: lend the core's one.
        from ..formats import cloudpickle_format

        borrowed = pm.register(cloudpickle_format, name="mlops-testing-cloudpickle")
    try:
        return save_bundle(DoublingModel(tag), path, example=EXAMPLE_INPUT, format="cloudpickle", overwrite=True)
    finally:
        if borrowed:
            pm.unregister(borrowed)
