"""``onnx``: ONNX graphs run by onnxruntime, straight on V2 tensors (no pandas, no pickle).

Saves an ``onnx.ModelProto``, the bytes of an ``.onnx`` file, or a path to one. With
``format="onnx"`` named explicitly (``mlops models save --format onnx``) a fitted
scikit-learn estimator or pipeline is converted with skl2onnx first: its input is
``X``, FP32, shape ``[-1, n_features_in_]``, and classifiers give ``label`` and
``probabilities`` tensors (no ZipMap). The automatic choice never converts:
scikit-learn objects go to skops unless ONNX is asked for.

The signature comes from the graph: input and output names, element types and
shapes, with symbolic or unknown dimensions as -1. Session options come from
the environment of the process that loads the model (the server's):
``MLOPS_ONNX_INTRA_OP_THREADS`` (default 1: one request per thread scales best
on a shared machine), ``MLOPS_ONNX_INTER_OP_THREADS`` (default 1) and
``MLOPS_ONNX_PROVIDERS`` (comma-separated, default ``CPUExecutionProvider``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import attrs

from mlops_core.entities import Signature, TensorSpec
from mlops_core.errors import InvalidInputError
from mlops_core.interfaces import ModelFormat

from ._common import as_numpy_inputs, env_int, env_list, read_payload, require

PAYLOAD = "model.onnx"

# onnx.TensorProto element types -> V2 datatypes (onnx.TensorProto.FLOAT == 1, ...).
_ELEM_TO_V2 = {1: "FP32", 2: "UINT8", 3: "INT8", 4: "UINT16", 5: "INT16", 6: "INT32", 7: "INT64", 8: "BYTES",
               9: "BOOL", 10: "FP16", 11: "FP64", 12: "UINT32", 13: "UINT64"}
# onnxruntime's type strings -> numpy dtype names, for casting requests to what the graph takes.
_ORT_TO_NUMPY = {"tensor(float)": "float32", "tensor(double)": "float64", "tensor(float16)": "float16",
                 "tensor(int8)": "int8", "tensor(int16)": "int16", "tensor(int32)": "int32", "tensor(int64)": "int64",
                 "tensor(uint8)": "uint8", "tensor(uint16)": "uint16", "tensor(uint32)": "uint32",
                 "tensor(uint64)": "uint64", "tensor(bool)": "bool", "tensor(string)": "object"}


@attrs.frozen
class OnnxSettings:
    """onnxruntime session options; 0 lets onnxruntime choose."""

    intra_op_threads: int = attrs.field(default=1, validator=attrs.validators.ge(0))
    inter_op_threads: int = attrs.field(default=1, validator=attrs.validators.ge(0))
    providers: tuple[str, ...] = ("CPUExecutionProvider",)

    @classmethod
    def from_env(cls) -> "OnnxSettings":
        return cls(intra_op_threads=env_int("MLOPS_ONNX_INTRA_OP_THREADS", 1),
                   inter_op_threads=env_int("MLOPS_ONNX_INTER_OP_THREADS", 1),
                   providers=tuple(env_list("MLOPS_ONNX_PROVIDERS")) or ("CPUExecutionProvider",))


def _is_sklearn(model: Any) -> bool:
    base = sys.modules.get("sklearn.base")
    return base is not None and isinstance(model, base.BaseEstimator)


def _is_model_proto(model: Any) -> bool:
    onnx = sys.modules.get("onnx")
    return onnx is not None and isinstance(model, onnx.ModelProto)


def _onnx_bytes(model: Any) -> bytes:
    if _is_model_proto(model):
        return model.SerializeToString()
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)) and str(model).endswith(".onnx") and Path(model).is_file():
        return Path(model).read_bytes()
    if _is_sklearn(model):
        return _convert_sklearn(model).SerializeToString()
    raise InvalidInputError(f"the onnx format cannot save a {type(model).__name__}",
                            hint="pass an onnx.ModelProto, the path of a .onnx file, or a fitted scikit-learn model")


def _convert_sklearn(model: Any) -> Any:
    skl2onnx = require("skl2onnx", "sklearn-onnx")
    from skl2onnx.common.data_types import FloatTensorType

    n = getattr(model, "n_features_in_", None)
    if n is None:
        raise InvalidInputError(f"cannot convert this {type(model).__name__} to ONNX: it is not fitted (no n_features_in_)",
                                hint="fit the model before saving it")
    options = {id(model): {"zipmap": False}} if hasattr(model, "predict_proba") else None
    try:
        return skl2onnx.convert_sklearn(model, initial_types=[("X", FloatTensorType([None, int(n)]))],
                                        options=options, target_opset=None)
    except Exception as exc:  # skl2onnx raises many types for unsupported estimators
        raise InvalidInputError(f"skl2onnx cannot convert this {type(model).__name__}: {type(exc).__name__}: {exc}",
                                hint="save it with the skops format instead (the default for scikit-learn models)") from exc


def _dims(type_proto: Any) -> tuple[int, ...]:
    shape = type_proto.tensor_type.shape
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in shape.dim)


def graph_signature(model_bytes: bytes) -> Signature:
    """Inputs and outputs of an ONNX graph as a V2 signature (initializers are not inputs)."""
    onnx = require("onnx", "onnx")
    proto = onnx.load_model_from_string(model_bytes)
    initializers = {i.name for i in proto.graph.initializer}

    def spec(value: Any) -> TensorSpec:
        tensor = value.type.tensor_type
        if not value.type.HasField("tensor_type"):
            raise InvalidInputError(f"ONNX value {value.name!r} is not a tensor (sequence or map)",
                                    hint="convert without ZipMap (skl2onnx option zipmap=False) so outputs are tensors")
        datatype = _ELEM_TO_V2.get(tensor.elem_type)
        if datatype is None:
            raise InvalidInputError(f"ONNX value {value.name!r} has element type {tensor.elem_type}, "
                                    "which has no Open Inference Protocol datatype", hint="cast it in the graph")
        return TensorSpec(value.name, datatype, _dims(value.type))

    inputs = [spec(v) for v in proto.graph.input if v.name not in initializers]
    outputs = [spec(v) for v in proto.graph.output]
    return Signature(inputs=inputs, outputs=outputs, input_kind="ndarray" if len(inputs) == 1 else "dict")


class OnnxModel:
    """A loaded ONNX graph: ``predict`` takes one array or a dict of arrays, returns a dict of outputs."""

    def __init__(self, model_bytes: bytes, settings: OnnxSettings) -> None:
        ort = require("onnxruntime", "onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.intra_op_threads
        options.inter_op_num_threads = settings.inter_op_threads
        self.session = ort.InferenceSession(model_bytes, sess_options=options, providers=list(settings.providers))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.input_dtypes = {i.name: _ORT_TO_NUMPY.get(i.type) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.settings = settings

    def predict(self, x: Any) -> dict[str, Any]:
        feeds = as_numpy_inputs(x, self.input_names)
        for name, arr in feeds.items():
            want = self.input_dtypes.get(name)
            if want and arr.dtype.name != want:
                feeds[name] = arr.astype(want)
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))

    __call__ = predict


class OnnxFormat(ModelFormat):
    name = "onnx"
    priority = 100  # an ONNX graph is never anything else

    def __init__(self, settings: OnnxSettings | None = None) -> None:
        self.settings = settings

    def can_save(self, model: Any) -> bool:
        # scikit-learn objects are converted only on request (format="onnx"); see the module docstring.
        if _is_model_proto(model):
            return True
        return isinstance(model, (str, os.PathLike)) and str(model).endswith(".onnx") and Path(model).is_file()

    def save(self, model: Any, directory: Path) -> Sequence[str]:
        data = _onnx_bytes(model)
        graph_signature(data)  # refuse a graph whose inputs or outputs V2 cannot carry, at save time
        (Path(directory) / PAYLOAD).write_bytes(data)
        return [PAYLOAD]

    def signature(self, directory: Path) -> Signature:
        return graph_signature(read_payload(directory, PAYLOAD))

    def load(self, directory: Path, manifest: Mapping[str, Any]) -> OnnxModel:
        return OnnxModel(read_payload(directory, PAYLOAD), self.settings or OnnxSettings.from_env())

    def imported_modules(self, directory: Path) -> set[str]:
        return {"onnxruntime", "numpy"}


def factory(config: Any, context: Any) -> OnnxFormat:
    return OnnxFormat()
