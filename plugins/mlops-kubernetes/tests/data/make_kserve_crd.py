"""Regenerate ``kserve-inferenceservice-crd.json``: KServe's InferenceService CRD schema, from published packages.

Why generated and not copied: KServe's own CRD file
(``config/crd/full/serving.kserve.io_inferenceservices.yaml`` in github.com/kserve/kserve)
is about 1 MB and no PyPI or npm package ships it, while this machine reaches only
the package registries. The KServe Python SDK on PyPI ships the same API as
generated model classes (``kserve.models.V1beta1*``, generated from KServe's Go
types, the same source controller-gen builds the CRD from), and those refer to the
``kubernetes`` client's models for the core types (``V1Container``...). This script
walks both, from ``V1beta1InferenceServiceSpec`` down, and writes an
``apiextensions.k8s.io/v1`` CRD with a structural ``openAPIV3Schema``:

* field names (JSON names from ``attribute_map``), types, nesting, lists and maps as
  the SDK declares them; ``required`` where the SDK's setter refuses ``None``;
* int-or-string (``port``, quantities in ``resources``...) as
  ``x-kubernetes-int-or-string`` with ``anyOf: [integer, string]``, as controller-gen writes it;
* no descriptions, defaults, enums or list-map keys (the SDK does not carry them),
  and ``status`` kept open (``x-kubernetes-preserve-unknown-fields``): we never write it.

Usage (records the versions it used in the output):

    pip download kserve==0.21.0 --no-deps -d /tmp/kserve && unzip -q /tmp/kserve/kserve-0.21.0-*.whl -d /tmp/kserve/x
    python make_kserve_crd.py /tmp/kserve/x > kserve-inferenceservice-crd.json
"""

from __future__ import annotations

import ast
import importlib.metadata
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any

INT_OR_STRING_FIELDS = {"port", "targetPort", "maxSurge", "maxUnavailable"}
INT_OR_STRING = {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
_REQUIRED = re.compile(r"Invalid value for `(\w+)`, must not be `None`")


class Models:
    def __init__(self, kserve_root: Path) -> None:
        self.root = kserve_root / "kserve" / "models"
        self.cache: dict[str, tuple[dict[str, str], dict[str, str], set[str]]] = {}

    def describe(self, cls: str) -> tuple[dict[str, str], dict[str, str], set[str]]:
        """(python attr -> type string, python attr -> JSON name, required python attrs)."""
        if cls in self.cache:
            return self.cache[cls]
        # The SDK names some core types by package (K8sIoApiAppsV1DeploymentStrategy): the client's V1DeploymentStrategy.
        m = re.match(r"^K8sIoApi[A-Z][a-z]+(V\d+(?:(?:alpha|beta)\d+)?)([A-Z]\w*)$", cls)
        if m:
            self.cache[cls] = self.describe(m.group(1) + m.group(2))
            return self.cache[cls]
        source = self._kserve_source(cls)
        if source is not None:
            tree = ast.parse(source)
            types = names = None
            for node in ast.walk(tree):
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                    if node.targets[0].id == "openapi_types":
                        types = ast.literal_eval(node.value)
                    elif node.targets[0].id == "attribute_map":
                        names = ast.literal_eval(node.value)
            assert types is not None and names is not None, cls
        else:
            import kubernetes.client.models as km

            model = getattr(km, cls)
            types, names = dict(model.openapi_types), dict(model.attribute_map)
            fields = getattr(model, "model_fields", None)  # pydantic models (client >= 35): required is declared
            if fields is not None:
                required = {k for k, f in fields.items() if f.is_required() and k in types}
                self.cache[cls] = (types, names, required)
                return self.cache[cls]
            source = inspect.getsource(model)
        required = set(_REQUIRED.findall(source))
        self.cache[cls] = (types, names, required)
        return self.cache[cls]

    def _kserve_source(self, cls: str) -> str | None:
        if not cls.startswith("V1beta1") and not cls.startswith("V1alpha1"):
            return None
        snake = re.sub(r"(?<!^)(?=[A-Z])", "_", cls).lower()
        for candidate in self.root.glob("*.py"):
            if candidate.stem.replace("_", "") == snake.replace("_", ""):
                return candidate.read_text()
        raise SystemExit(f"no kserve model file for {cls}")

    def schema(self, type_str: str, field: str = "", stack: tuple[str, ...] = ()) -> dict[str, Any]:
        t = type_str.strip()
        if t.startswith(("list[", "List[")):
            return {"type": "array", "items": self.schema(t[5:-1], field, stack)}
        if t.startswith(("dict(", "Dict[")):
            inner = t[5:-1].split(",", 1)[1]
            value = self.schema(inner, field, stack)
            if field in ("limits", "requests", "overhead", "capacity") or inner.strip() == "ResourceQuantity":
                value = dict(INT_OR_STRING)
            return {"type": "object", "additionalProperties": value}
        if t == "str":
            return {"type": "string"}
        if t == "int":
            return {"type": "integer", "format": "int64"}
        if t == "float":
            return {"type": "number"}
        if t == "bool":
            return {"type": "boolean"}
        if t == "datetime":
            return {"type": "string", "format": "date-time"}
        if t.endswith("Quantity"):  # ResourceQuantity, V1beta1MetricQuantity (no SDK model): Go resource.Quantity
            return dict(INT_OR_STRING)
        if t in ("object", "Any", "IntOrString"):
            if field in INT_OR_STRING_FIELDS:
                return dict(INT_OR_STRING)
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        if t in stack:  # recursive type: keep open rather than infinite
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        types, names, required = self.describe(t)
        props = {names[attr]: self.schema(types[attr], names[attr], stack + (t,)) for attr in sorted(types)}
        out: dict[str, Any] = {"type": "object", "properties": dict(sorted(props.items()))}
        req = sorted(names[a] for a in required if a in names)
        if req:
            out["required"] = req
        return out


def main(kserve_root: str) -> None:
    models = Models(Path(kserve_root))
    spec = models.schema("V1beta1InferenceServiceSpec")
    versions = {"kserve": _wheel_version(Path(kserve_root)), "kubernetes": importlib.metadata.version("kubernetes")}
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": "inferenceservices.serving.kserve.io",
            "annotations": {
                "mlops.dev/source": "generated by make_kserve_crd.py from the PyPI packages "
                                    f"kserve=={versions['kserve']} (kserve.models) and "
                                    f"kubernetes=={versions['kubernetes']} (kubernetes.client.models)",
                "mlops.dev/upstream": "https://github.com/kserve/kserve/blob/master/config/crd/full/"
                                      "serving.kserve.io_inferenceservices.yaml (same API; not a byte copy)",
            },
        },
        "spec": {
            "group": "serving.kserve.io",
            "names": {"kind": "InferenceService", "listKind": "InferenceServiceList", "plural": "inferenceservices",
                      "singular": "inferenceservice", "shortNames": ["isvc"]},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1beta1", "served": True, "storage": True, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
                    "spec": spec,
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                }}},
            }],
        },
    }
    json.dump(crd, sys.stdout, sort_keys=True, separators=(",", ":"))
    sys.stdout.write("\n")


def _wheel_version(root: Path) -> str:
    for info in root.glob("kserve-*.dist-info"):
        return info.name[len("kserve-"):-len(".dist-info")]
    return "unknown"


if __name__ == "__main__":
    main(sys.argv[1])
