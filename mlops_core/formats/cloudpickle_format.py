"""The default model format: any Python object with a ``predict`` method, via cloudpickle.

This module is itself a plugin, registered through the ``mlops_core.plugins``
entry point of the mlops-core distribution, exactly like a third-party format.
"""

from __future__ import annotations

import pickletools
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..interfaces import ModelFormat
from ..plugins import hookimpl

PAYLOAD = "model.pkl"

# Functions that cloudpickle (and pickle) use to import a module by name at load time.
_IMPORTERS = {("cloudpickle.cloudpickle", "subimport"), ("cloudpickle.cloudpickle", "dynamic_subimport"),
              ("importlib", "import_module"), ("builtins", "__import__")}


def pickled_modules(path: Path) -> set[str]:
    """Top-level modules a pickle stream refers to, found by walking its opcodes (no unpickling).

    Collects GLOBAL / STACK_GLOBAL module names, and the module name strings passed
    to cloudpickle's ``subimport`` (how by-value functions record their imports).
    """
    modules: set[str] = set()
    recent: list[str | None] = []  # values of the latest pushes that may be strings
    memo: dict[int, str | None] = {}
    pending_import = False  # the last global was an importer: the next string is a module name
    with open(path, "rb") as f:
        for op, arg, _pos in pickletools.genops(f):
            name = op.name
            pushed: str | None = None
            if name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                pushed = arg
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                pushed = memo.get(int(arg))
            elif name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
                continue
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(arg)] = recent[-1] if recent else None
                continue
            elif name == "GLOBAL":
                module, _, qual = str(arg).partition(" ")
                modules.add(module.split(".")[0])
                pending_import = (module, qual) in _IMPORTERS
            elif name == "STACK_GLOBAL" and len(recent) >= 2 and recent[-2] and recent[-1]:
                module, qual = recent[-2], recent[-1]
                modules.add(module.split(".")[0])
                pending_import = (module, qual) in _IMPORTERS
            if pushed is not None and pending_import:
                modules.add(pushed.split(".")[0])
                pending_import = False
            recent.append(pushed)
            del recent[:-2]
    modules.discard("")
    modules.difference_update({"builtins", "__builtin__", "copyreg", "__main__"})
    return {m for m in modules if m not in sys.stdlib_module_names}


class CloudpickleFormat(ModelFormat):
    """Pickles the whole object by value where needed, so notebooks' ad-hoc classes survive."""

    name = "cloudpickle"
    #: The catch-all: asked last, after every framework's own format.
    priority = -100

    def can_save(self, model: Any) -> bool:
        return callable(getattr(model, "predict", None)) or callable(model)

    def save(self, model: Any, directory: Path) -> Sequence[str]:
        import cloudpickle

        with open(directory / PAYLOAD, "wb") as f:
            cloudpickle.dump(model, f, protocol=4)
        return [PAYLOAD]

    def load(self, directory: Path, manifest: Mapping[str, Any]) -> Any:
        import pickle

        with open(directory / PAYLOAD, "rb") as f:
            return pickle.load(f)

    def load_verified(self, files: Any) -> Any:
        import pickle

        # Unpickle the bytes that were hashed, never the file again (no check-then-reopen race).
        if files.in_memory(PAYLOAD):
            return pickle.loads(files.read_bytes(PAYLOAD))  # about 2x faster than pickle.load(BytesIO)
        with files.open(PAYLOAD) as f:
            return pickle.load(f)

    def imported_modules(self, directory: Path) -> set[str]:
        return pickled_modules(directory / PAYLOAD)


def _factory(config: Any, context: Any) -> CloudpickleFormat:
    return CloudpickleFormat()


@hookimpl
def mlops_register_backends(backends: Any) -> None:
    backends.add_format("cloudpickle", _factory, summary="any Python object with predict(), via cloudpickle")
