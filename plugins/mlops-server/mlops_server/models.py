"""One served model: load and warm it up, check requests against its signature, predict.

A :class:`ServedModel` is created for every ``--bundle``. It loads in
:meth:`load` (verifying hashes first, through ``mlops_core.bundle.load_bundle``),
answers a warm-up prediction, and only then reports itself ready. The warm-up
uses the bundle's stored example request (``example.json``, decoded and checked
like a real request) when there is one, and zeros (empty strings for BYTES)
shaped by the signature otherwise. A model that fails either step keeps ``state == "failed"`` and the
reason in ``error``: it is listed, never served.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .codec import DTYPES, TensorError, decode_tensor, to_output_arrays

log = logging.getLogger("mlops_server")

__all__ = ["ServedModel", "RequestError"]

#: A model whose warm-up call takes less than this runs on the event loop (no thread hop).
INLINE_THRESHOLD_S = 0.002
#: ... and only for requests of at most this many rows.
INLINE_MAX_ROWS = 512


class RequestError(ValueError):
    """A request that does not match the model (400), with what was expected."""


def _spec_dtype(datatype: str) -> np.dtype:
    return DTYPES[datatype]


class ServedModel:
    """A bundle loaded for serving, with its signature-driven request checks."""

    def __init__(self, path: str | os.PathLike[str], *, name: str | None = None, version: str | None = None,
                 threads: int = 1, executor: str = "auto") -> None:
        self.path = Path(path)
        self.name = name or self.path.resolve().name
        self.version = version
        self.state = "loading"  # loading -> ready | failed
        self.error: str | None = None
        self.model: Any = None
        self.predict_fn: Any = None
        self.signature: Any = None
        self.manifest: Mapping[str, Any] = {}
        self.digest: str | None = None
        self.input_kind = "ndarray"
        self.inputs: dict[str, Any] = {}  # name -> TensorSpec, in signature order
        self.output_names: list[str] = []
        self.warmup_s: float | None = None
        self.warmup_input = "none"  # "example" (the bundle's stored request), "zeros", or "none" (no signature)
        self.inline = False
        self.executor_mode = executor  # auto | inline | thread
        self.threads = max(1, threads)
        self._executor: ThreadPoolExecutor | None = None
        self.batcher: Any = None  # set by the app when batching is on

    # ----------------------------------------------------------- lifecycle
    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def load(self) -> None:
        """Load, verify and warm up; never raises (the failure is kept in ``error``)."""
        start = time.perf_counter()
        try:
            from mlops_core.bundle import load_bundle

            bundle = load_bundle(self.path)
            self.model = bundle.model
            self.manifest = bundle.manifest
            self.digest = bundle.digest
            self.signature = bundle.signature
            self.predict_fn = getattr(self.model, "predict", None) or self.model
            if not callable(self.predict_fn):
                raise TypeError(f"the loaded {type(self.model).__name__} has no predict() and is not callable")
            if self.signature is not None:
                self.input_kind = self.signature.input_kind
                self.inputs = {t.name: t for t in self.signature.inputs}
                self.output_names = [t.name for t in self.signature.outputs]
            self._warm_up(self._example_arrays(bundle))
        except BaseException as exc:  # a bad pickle can raise anything; keep serving the others
            self.state = "failed"
            self.error = f"{type(exc).__name__}: {exc}".strip()
            log.error("model %r from %s failed to load and will not be served: %s", self.name, self.path, self.error)
            if not isinstance(exc, Exception):
                raise
            return
        self.state = "ready"
        log.info("model %r loaded from %s in %.2f s (warm-up on %s: predict %.3f ms, %s)", self.name, self.path,
                 time.perf_counter() - start, self.warmup_input, (self.warmup_s or 0) * 1000,
                 "inline on the event loop" if self.inline else f"{self.threads} thread(s)")

    def _example_arrays(self, bundle: Any) -> dict[str, np.ndarray] | None:
        """The bundle's stored example request, decoded and checked like a request; None if absent or unusable."""
        if not self.inputs:
            return None
        try:
            from mlops_core.bundle import read_example

            body = read_example(bundle)
            if body is None:
                return None
            tensors = body.get("inputs") if isinstance(body, dict) else None
            if not isinstance(tensors, list) or not tensors:
                raise TensorError("it has no 'inputs' list")
            return self.check_inputs([decode_tensor(t) for t in tensors])
        except (OSError, ValueError, TypeError, AttributeError) as exc:  # TensorError, RequestError, bad JSON
            log.warning("model %r: the bundle's example request cannot be used for the warm-up (%s: %s); "
                        "warming up with zeros", self.name, type(exc).__name__, exc)
            return None

    def _zeros(self) -> dict[str, np.ndarray]:
        arrays = {}
        for spec in self.inputs.values():
            shape = tuple(1 if d < 0 else d for d in spec.shape)
            if spec.datatype == "BYTES":
                arr = np.empty(shape, dtype=object)
                arr.fill("")
            else:
                arr = np.zeros(shape, dtype=_spec_dtype(spec.datatype))
            arrays[spec.name] = arr
        return arrays

    def _warm_up(self, example: Mapping[str, np.ndarray] | None = None) -> None:
        """Predict once on ``example`` (real rows) or zeros, then time one-row calls to choose the executor."""
        if not self.inputs:
            # No signature: nothing to build a request from; the first real request is the test.
            self.inline = self.executor_mode == "inline"
            return
        if example is None:
            self.warmup_input = "zeros"
            arrays = self._zeros()
        else:
            self.warmup_input = "example"
            # Every example row once (the real code path), then one-row calls for the timing below.
            to_output_arrays(self.predict_fn(self.model_input(example)), self.output_names)
            batched = all(len(t.shape) >= 1 and t.shape[0] == -1 for t in self.inputs.values())
            arrays = {k: v[:1] for k, v in example.items()} if batched else dict(example)
        timings = []
        for _ in range(3):
            t0 = time.perf_counter()
            result = self.predict_fn(self.model_input(arrays))
            to_output_arrays(result, self.output_names)
            timings.append(time.perf_counter() - t0)
        self.warmup_s = min(timings)
        if self.executor_mode == "inline":
            self.inline = True
        elif self.executor_mode == "thread":
            self.inline = False
        else:
            self.inline = self.warmup_s < INLINE_THRESHOLD_S

    @property
    def executor(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads, thread_name_prefix=f"predict-{self.name}")
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)

    def runs_inline(self, rows: int) -> bool:
        return self.inline and rows <= INLINE_MAX_ROWS

    # ------------------------------------------------------------ requests
    def check_inputs(self, decoded: list[tuple[str, str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Match decoded request tensors against the signature; returns name -> array (cast if safe)."""
        if not self.inputs:
            return {name: arr for name, _dt, arr in decoded}
        out: dict[str, np.ndarray] = {}
        for name, datatype, arr in decoded:
            spec = self.inputs.get(name)
            if spec is None:
                raise RequestError(f"model {self.name!r} has no input {name!r}; expected {self._expected_inputs()}")
            if name in out:
                raise RequestError(f"input {name!r} given twice")
            if datatype != spec.datatype:
                target = _spec_dtype(spec.datatype)
                if spec.datatype == "BYTES" or datatype == "BYTES" or not np.can_cast(arr.dtype, target, "safe"):
                    raise RequestError(f"input {name!r} has datatype {datatype}; model {self.name!r} expects "
                                       f"{spec.datatype} (shape {list(spec.shape)})")
                arr = arr.astype(target)
            if len(arr.shape) != len(spec.shape) or any(d != -1 and d != a for d, a in zip(spec.shape, arr.shape)):
                raise RequestError(f"input {name!r} has shape {list(arr.shape)}; model {self.name!r} expects "
                                   f"{list(spec.shape)} (-1 = any size)")
            out[name] = arr
        if len(out) != len(self.inputs):
            missing = [n for n in self.inputs if n not in out]
            raise RequestError(f"missing input(s) {', '.join(map(repr, missing))}; model {self.name!r} expects "
                               f"{self._expected_inputs()}")
        if self.input_kind == "dataframe":
            lengths = {arr.shape[0] if arr.ndim else 1 for arr in out.values()}
            if len(lengths) > 1:
                raise RequestError(f"the columns of model {self.name!r} must all have the same number of rows, "
                                   f"got {sorted(lengths)}")
        return out

    def _expected_inputs(self) -> str:
        return "; ".join(f"{t.name} {t.datatype} {list(t.shape)}" for t in self.inputs.values())

    def rows(self, arrays: Mapping[str, np.ndarray]) -> int:
        for arr in arrays.values():
            return int(arr.shape[0]) if arr.ndim else 1
        return 0

    def model_input(self, arrays: Mapping[str, np.ndarray]) -> Any:
        """What ``predict`` receives: one array, a DataFrame, or a dict (per the signature's input_kind)."""
        kind = self.input_kind
        if kind == "ndarray" and len(arrays) == 1:
            return next(iter(arrays.values()))
        if kind == "dataframe":
            import pandas as pd

            return pd.DataFrame({name: (arr.reshape(-1) if arr.ndim > 1 and arr.shape[1:] == (1,) else arr)
                                 for name, arr in arrays.items()})
        return dict(arrays)

    def predict(self, arrays: Mapping[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
        """Run the model; returns named output arrays."""
        return to_output_arrays(self.predict_fn(self.model_input(arrays)), self.output_names)

    # ------------------------------------------------------------ metadata
    def metadata(self) -> dict[str, Any]:
        md: dict[str, Any] = {
            "name": self.name,
            "versions": [self.version] if self.version else [],
            "platform": "mlops-core",
            "inputs": [t.to_dict() for t in self.inputs.values()],
            "outputs": [t.to_dict() for t in self.signature.outputs] if self.signature is not None else [],
        }
        params: dict[str, Any] = {"state": self.state, "input_kind": self.input_kind}
        if self.digest:
            params["digest"] = self.digest
        if self.manifest.get("format"):
            params["format"] = self.manifest["format"]
        if self.error:
            params["error"] = self.error
        md["parameters"] = params
        return md
