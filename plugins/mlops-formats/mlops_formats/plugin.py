"""Registers the formats of mlops-formats. Factories are import strings: nothing heavy loads at discovery."""

from __future__ import annotations

from typing import Any

from mlops_core.plugins import hookimpl


@hookimpl
def mlops_register_backends(backends: Any) -> None:
    backends.add_format("onnx", "mlops_formats.onnx_format:factory",
                        summary="ONNX graphs run by onnxruntime on V2 tensors (scikit-learn via skl2onnx on request)")
    backends.add_format("skops", "mlops_formats.skops_format:factory",
                        summary="scikit-learn without pickle: skops files, trusted types only")
    backends.add_format("xgboost", "mlops_formats.trees_format:xgboost_factory",
                        summary="XGBoost boosters and scikit-learn wrappers in UBJSON/JSON model files")
    backends.add_format("lightgbm", "mlops_formats.trees_format:lightgbm_factory",
                        summary="LightGBM boosters and scikit-learn wrappers in LightGBM's text format")
    backends.add_format("torch", "mlops_formats.torch_format:factory",
                        summary="PyTorch on the CPU: torch.export archives or TorchScript, no arbitrary unpickling")
    backends.add_format("command", "mlops_formats.command_format:factory",
                        summary="any executable speaking V2 JSON over a local HTTP port (Node.js, Go, R, ...)")
