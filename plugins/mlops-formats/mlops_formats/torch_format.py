"""``torch``: PyTorch programs on the CPU, as ``torch.export`` archives or TorchScript.

Saves a ``torch.export.ExportedProgram`` (``model.pt2``, preferred) or a
``torch.jit.ScriptModule`` (``model.torchscript``). Neither load runs arbitrary
pickled code: ``torch.export.load`` rebuilds the graph from its own serialized
form and reads weights with the weights-only unpickler, and ``torch.jit.load``
rebuilds TorchScript code, not Python objects. A plain ``nn.Module`` is refused
with a hint to export it first (export needs example inputs that ``save`` does
not have). The signature of an exported program comes from its graph: user
input and output names, dtypes and shapes, dynamic dimensions as -1.
Threads: ``MLOPS_TORCH_THREADS`` (default 1) sets ``torch.set_num_threads`` on load.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from mlops_core.entities import Signature, TensorSpec
from mlops_core.errors import InvalidInputError
from mlops_core.interfaces import ModelFormat

from ._common import as_numpy_inputs, env_int, read_json, read_payload, require, write_json

INFO = "model-info.json"
EXPORTED = "model.pt2"
SCRIPTED = "model.torchscript"

_DTYPE_TO_V2 = {"torch.float32": "FP32", "torch.float64": "FP64", "torch.float16": "FP16", "torch.int8": "INT8",
                "torch.int16": "INT16", "torch.int32": "INT32", "torch.int64": "INT64", "torch.uint8": "UINT8",
                "torch.bool": "BOOL"}


def _kind(model: Any) -> str | None:
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    export = getattr(torch, "export", None)
    if export is not None and isinstance(model, getattr(export, "ExportedProgram", ())):
        return "export"
    if isinstance(model, torch.jit.ScriptModule):
        return "torchscript"
    return None


def _spec(name: str, value: Any) -> TensorSpec:
    dtype = _DTYPE_TO_V2.get(str(getattr(value, "dtype", "")))
    if dtype is None:
        raise InvalidInputError(f"tensor {name!r} has dtype {getattr(value, 'dtype', type(value).__name__)}, "
                                "which has no Open Inference Protocol datatype", hint="cast it in the model")
    shape = tuple(int(d) if isinstance(d, int) or type(d).__name__ == "int" else -1 for d in value.shape)
    return TensorSpec(name, dtype, shape)


def exported_signature(ep: Any) -> Signature:
    """A V2 signature from an ExportedProgram's graph (dynamic dimensions are SymInts: -1)."""
    user_inputs = list(ep.graph_signature.user_inputs)
    nodes = {n.name: n for n in ep.graph.nodes}
    inputs = [_spec(name, nodes[name].meta["val"]) for name in user_inputs]
    outs = list(ep.graph_signature.user_outputs)
    output_node = next(n for n in ep.graph.nodes if n.op == "output")
    values = [a.meta.get("val") for a in output_node.args[0] if hasattr(a, "meta")]
    outputs = [_spec(f"output-{i}" if len(values) > 1 else "output-0", v) for i, v in enumerate(values[: len(outs)])]
    return Signature(inputs=inputs, outputs=outputs, input_kind="ndarray" if len(inputs) == 1 else "dict")


class TorchModel:
    """A loaded program: numpy in (one array or a dict by input name), numpy out, no autograd."""

    def __init__(self, module: Any, input_names: list[str]) -> None:
        self.module = module
        self.input_names = input_names

    def predict(self, x: Any) -> Any:
        import torch

        names = self.input_names or ["input-0"]
        feeds = as_numpy_inputs(x, names)
        with torch.inference_mode():
            out = self.module(*[torch.from_numpy(feeds[n].copy()) for n in names])
        if isinstance(out, (tuple, list)):
            return tuple(o.numpy() for o in out) if len(out) > 1 else out[0].numpy()
        return out.numpy()

    __call__ = predict


class TorchFormat(ModelFormat):
    name = "torch"
    priority = 100

    def can_save(self, model: Any) -> bool:
        return _kind(model) is not None

    def save(self, model: Any, directory: Path) -> Sequence[str]:
        torch = require("torch", "torch")
        kind = _kind(model)
        if kind is None:
            hint = ("export it first: torch.export.export(model.eval(), (example_tensor,)), or torch.jit.script(model)"
                    if isinstance(model, torch.nn.Module) else "pass a torch.export.ExportedProgram or a ScriptModule")
            raise InvalidInputError(f"the torch format cannot save a {type(model).__name__}", hint=hint)
        if kind == "export":
            torch.export.save(model, str(Path(directory) / EXPORTED))
            return [EXPORTED, write_json(directory, INFO, {"library": "torch", "kind": "export", "file": EXPORTED})]
        torch.jit.save(model, str(Path(directory) / SCRIPTED))
        return [SCRIPTED, write_json(directory, INFO, {"library": "torch", "kind": "torchscript", "file": SCRIPTED})]

    def _program(self, directory: Path) -> tuple[str, Any]:
        torch = require("torch", "torch")
        info = read_json(directory, INFO)
        kind = info.get("kind")
        if kind == "export":
            return kind, torch.export.load(io.BytesIO(read_payload(directory, EXPORTED)))
        if kind == "torchscript":
            return kind, torch.jit.load(io.BytesIO(read_payload(directory, SCRIPTED)), map_location="cpu")
        raise InvalidInputError(f"{INFO} in {directory} names kind {kind!r}", hint="expected export or torchscript")

    def signature(self, directory: Path) -> Signature | None:
        kind, program = self._program(directory)
        return exported_signature(program) if kind == "export" else None

    def load(self, directory: Path, manifest: Mapping[str, Any]) -> TorchModel:
        torch = require("torch", "torch")
        threads = env_int("MLOPS_TORCH_THREADS", 1)
        if threads:
            torch.set_num_threads(threads)
        kind, program = self._program(directory)
        if kind == "export":
            return TorchModel(program.module(), list(program.graph_signature.user_inputs))
        program.eval()
        sig = (manifest.get("signature") or {}).get("inputs") or []
        return TorchModel(program, [t["name"] for t in sig])

    def imported_modules(self, directory: Path) -> set[str]:
        return {"torch", "numpy"}


def factory(config: Any, context: Any) -> TorchFormat:
    return TorchFormat()
