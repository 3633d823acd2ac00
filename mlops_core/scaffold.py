"""Generate a ready-to-install plugin package: ``mlops plugin new NAME --component KIND``.

:func:`create_plugin` renders the templates in ``mlops_core/templates/plugin``
(``string.Template``, no extra dependency) into a new folder:

* ``setup.cfg`` (the ``mlops_core.plugins`` entry point) and ``pyproject.toml``;
* ``<package>/plugin.py``: the ``mlops_register_backends`` hook, import-cheap;
* ``<package>/backend.py``: a config class, a *working minimal example* of the
  component (so the fresh package passes the conformance kit), and a skeleton
  generated from the component's abstract base class: every abstract method
  with its signature and contract, raising ``NotImplementedError``;
* ``tests/test_<package>.py``: "the plugin is installed and discovered", then
  the kit's suite for the component against the registered backend;
* ``README.md``.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import attrs

from ._version import __version__
from .errors import AlreadyExistsError, InvalidInputError

__all__ = ["COMPONENTS", "create_plugin", "plugin_names"]

_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")  # fullmatch: no trailing newline


@attrs.frozen
class _Component:
    abc: str
    suite: str
    suffix: str
    summary: str
    imports: str
    config_fields: str
    factory: str
    test_body: str
    test_imports: str = ""
    stack_extra: str = ""


_FIXTURE = '''    @pytest.fixture
    def backend(self, tmp_path):
        backend = build_backend(tmp_path)
        yield backend
        backend.close()'''

COMPONENTS: dict[str, _Component] = {
    "storage": _Component(
        abc="ArtifactStore", suite="StorageSuite", suffix="Store", summary="files in a local folder",
        imports="import os\nimport re\nimport shutil\nimport uuid\nfrom pathlib import Path\n"
                "from typing import IO, Any, Iterator\n\nimport attrs\n\n"
                "from mlops_core.errors import NotFoundError\nfrom mlops_core.interfaces import ArtifactStore",
        config_fields='    #: Folder of the artifacts; default: <stack home>/${backend}-artifacts.\n    path: str | None = None',
        factory='    return ${class_name}(Path(config.path) if config.path else context.home / "${backend}-artifacts")',
        test_body=_FIXTURE, stack_extra='path = "/srv/artifacts"'),
    "registry": _Component(
        abc="ModelRegistry", suite="RegistrySuite", suffix="Registry", summary="in memory, the kit's reference",
        imports="from typing import Any, Mapping, Sequence\n\nimport attrs\n\n"
                "from mlops_core.entities import AliasChange, ArtifactRef, Lineage, ModelVersion, RegisteredModel\n"
                "from mlops_core.interfaces import ModelRegistry\n"
                "from mlops_core.testing.reference_registry import InMemoryRegistry",
        config_fields='    #: Where your registry lives (a database URL...); the in-memory example ignores it.\n    url: str = ""',
        factory="    return ${class_name}(config)", test_body=_FIXTURE, stack_extra='url = "..."'),
    "builder": _Component(
        abc="ImageBuilder", suite="BuilderSuite", suffix="Builder", summary="a reproducible tar of the bundle",
        imports="import hashlib\nimport io\nimport tarfile\nfrom pathlib import Path\nfrom typing import Any\n\n"
                "import attrs\n\nfrom mlops_core.bundle import verify_bundle\n"
                "from mlops_core.entities import ImageRef, ModelVersion\nfrom mlops_core.interfaces import ImageBuilder",
        config_fields='    #: Folder of the built images; default: <stack home>/${backend}-images.\n    path: str | None = None',
        factory='    return ${class_name}(Path(config.path) if config.path else context.home / "${backend}-images")',
        test_body=_FIXTURE),
    "deployer": _Component(
        abc="Deployer", suite="DeployerSuite", suffix="Deployer", summary="V2 servers in threads of this process",
        imports="from typing import Any, Sequence\n\nimport attrs\n\n"
                "from mlops_core.entities import Deployment, DeploymentSpec\nfrom mlops_core.interfaces import Deployer\n"
                "from mlops_core.testing.reference_deployer import ThreadDeployer",
        config_fields='    #: Address the example servers listen on.\n    host: str = "127.0.0.1"',
        factory="    return ${class_name}(config, context)", test_body=_FIXTURE),
    "monitor": _Component(
        abc="Monitor", suite="MonitorSuite", suffix="Monitor", summary="prediction counters and a JSON-lines event log",
        imports="import json\nimport threading\nimport time\nfrom pathlib import Path\nfrom typing import Any\n\n"
                "import attrs\n\nfrom mlops_core.entities import to_json\nfrom mlops_core.interfaces import Monitor\n"
                "from mlops_core.plugins import hookimpl",
        config_fields='    #: JSON-lines event log; default: <stack home>/${backend}-events.jsonl.\n    path: str | None = None',
        factory='    return ${class_name}(Path(config.path) if config.path else context.home / "${backend}-events.jsonl")',
        test_body="    exposes_metrics = True\n\n" + _FIXTURE),
    "format": _Component(
        abc="ModelFormat", suite="FormatSuite", suffix="Format", summary="linear models as JSON",
        imports="import json\nfrom pathlib import Path\nfrom typing import Any, Mapping, Sequence\n\nimport attrs\n\n"
                "from mlops_core.interfaces import ModelFormat",
        config_fields="    # Formats take no settings from the stack; add fields if yours needs some.",
        factory="    return ${class_name}()",
        test_body='''    @pytest.fixture
    def backend(self, tmp_path):
        return build_backend(tmp_path)

    @pytest.fixture
    def model(self):
        return LinearModel([0.5, -1.0], bias=2.0)

    @pytest.fixture
    def example(self):
        return [[1.0, 2.0], [3.0, 4.0]]''',
        test_imports="from ${package}.backend import LinearModel\n"),
}


def plugin_names(name: str, component: str) -> dict[str, str]:
    """Every name derived from the distribution name: package, backend, classes, metric prefix."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InvalidInputError(f"invalid plugin name {name!r}",
                                hint="use lowercase letters, digits and single dashes, e.g. mlops-foo")
    if component not in COMPONENTS:
        raise InvalidInputError(f"unknown component {component!r}", hint=f"choose one of {', '.join(COMPONENTS)}")
    spec = COMPONENTS[component]
    backend = name[len("mlops-"):] if name.startswith("mlops-") and len(name) > len("mlops-") else name
    camel = "".join(part.capitalize() for part in backend.split("-"))
    class_name = camel if camel.endswith(spec.suffix) else camel + spec.suffix
    return {
        "dist": name, "package": name.replace("-", "_"), "backend": backend, "component": component,
        "class_name": class_name, "config_class": f"{camel}Config", "abc": spec.abc, "suite": spec.suite,
        "title": " ".join(p.capitalize() for p in name.split("-")), "metric": backend.replace("-", "_"),
        "core_version": __version__.split("+")[0], "example_summary": spec.summary,
        "stack_table": "monitors" if component == "monitor" else component,
    }


# ------------------------------------------------------------------ skeleton
def _annotation(value: Any) -> str:
    if value is inspect.Parameter.empty:
        return ""
    return value if isinstance(value, str) else inspect.formatannotation(value)


def _signature(func: Any) -> str:
    sig = inspect.signature(func)
    parts: list[str] = []
    star_done = False
    for p in sig.parameters.values():
        if p.kind is p.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        text = p.name
        ann = _annotation(p.annotation)
        if ann:
            text += f": {ann}"
        if p.default is not p.empty:
            text += f" = {p.default!r}" if ann else f"={p.default!r}"
        parts.append(text)
    ret = _annotation(sig.return_annotation)
    return f"({', '.join(parts)})" + (f" -> {ret}" if ret else "")


def _skeleton(abc_name: str, class_name: str) -> str:
    from . import interfaces

    abc_cls = getattr(interfaces, abc_name)
    methods = [(n, f) for n, f in vars(abc_cls).items() if getattr(f, "__isabstractmethod__", False)]
    out = []
    for name, func in methods:
        doc = inspect.getdoc(func) or f"See mlops_core.interfaces.{abc_name}.{name}."
        doc_lines = textwrap.indent(doc, " " * 8).strip()
        out.append(
            f"    def {name}{_signature(func)}:\n"
            f'        """{doc_lines}"""\n'
            f'        raise NotImplementedError(\n'
            f'            "{class_name}Skeleton.{name} is not written yet: implement it against your service "\n'
            f'            "(contract: mlops_core.interfaces.{abc_name}.{name})"\n'
            f'        )\n'
        )
    if not methods:  # Monitor: no abstract method, a monitor is the event hooks it implements
        out.append(
            "    # A monitor is the event hooks it implements (see docs/hooks.md); for example:\n"
            "    # from mlops_core.plugins import hookimpl\n"
            "    # @hookimpl\n"
            "    # def mlops_predictions_served(self, event): ...\n"
            "    pass\n"
        )
    return "\n".join(out).rstrip("\n")


# ------------------------------------------------------------------- render
def _template(name: str) -> Template:
    return Template(resources.files("mlops_core").joinpath("templates", "plugin", name).read_text(encoding="utf-8"))


def _render(text: str, values: dict[str, str]) -> str:
    return Template(text).substitute(values)


def create_plugin(name: str, component: str, dest: str | Path = ".") -> Path:
    """Create the plugin package ``<dest>/<name>`` and return its path.

    :param name: distribution name, e.g. ``mlops-foo`` (package ``mlops_foo``, backend ``foo``).
    :param component: one of storage, registry, builder, deployer, monitor, format.
    :param dest: the folder to create it in; ``<dest>/<name>`` must not exist or be empty.
    """
    values = plugin_names(name, component)
    spec = COMPONENTS[component]
    root = Path(dest) / name
    if root.exists() and any(root.iterdir()):
        raise AlreadyExistsError(f"{root} already exists and is not empty", hint="choose another --dest or name")
    stack = (f'[[monitors]]\nbackend = "{values["backend"]}"' if component == "monitor"
             else f'[{component}]\nbackend = "{values["backend"]}"')
    if spec.stack_extra:
        stack += "\n" + spec.stack_extra
    values["stack_snippet"] = stack
    for field in ("imports", "config_fields", "factory", "test_body", "test_imports"):
        values[field] = _render(getattr(spec, field), values)
    values["imports"] = values["imports"].replace("from mlops_core.interfaces import ",
                                                  "from mlops_core.interfaces import BackendContext, ", 1)
    values["example"] = _template(f"examples/{component}.py.tmpl").substitute(values).rstrip("\n")
    values["skeleton"] = _skeleton(spec.abc, values["class_name"])
    if component == "format":
        values["config_fields"] += "\n    pass" if "pass" not in values["config_fields"] else ""

    package = root / values["package"]
    files = {
        root / "setup.cfg": "setup.cfg.tmpl",
        root / "pyproject.toml": "pyproject.toml.tmpl",
        root / "README.md": "README.md.tmpl",
        package / "__init__.py": "package_init.py.tmpl",
        package / "plugin.py": "plugin.py.tmpl",
        package / "backend.py": "backend.py.tmpl",
        root / "tests" / f"test_{values['package']}.py": "test_plugin.py.tmpl",
    }
    for path, template in files.items():
        text = _template(template).substitute(values)
        if template == "test_plugin.py.tmpl" and values["test_imports"]:
            text = text.replace("\n\n\ndef test_plugin_is_installed", "\n" + values["test_imports"].rstrip("\n")
                                + "\n\n\ndef test_plugin_is_installed", 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (package / "py.typed").write_text("", encoding="utf-8")
    return root
