"""Native model formats for mlops-core.

Formats (registered through the ``mlops_core.plugins`` entry point ``formats``):
``onnx``, ``skops``, ``xgboost``, ``lightgbm``, ``torch`` and ``command``. Each
imports its framework only when it saves or loads a model; ``import mlops_formats``
is as light as the core.
"""

from ._version import __version__

__all__ = ["__version__"]
