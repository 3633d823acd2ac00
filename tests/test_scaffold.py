"""The plugin template: names, generated files, and a generated plugin that installs, is discovered and passes the kit."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_core.errors import AlreadyExistsError, InvalidInputError
from mlops_core.scaffold import COMPONENTS, create_plugin, plugin_names


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_") and k != "PYTHONPATH"}
    env.update(extra)
    return env


def test_names_are_derived_from_the_distribution_name() -> None:
    names = plugin_names("mlops-redis-cache", "storage")
    assert (names["package"], names["backend"], names["class_name"], names["config_class"]) == \
        ("mlops_redis_cache", "redis-cache", "RedisCacheStore", "RedisCacheConfig")
    assert plugin_names("acme-registry", "registry")["class_name"] == "AcmeRegistry"


@pytest.mark.parametrize("name", ["Mlops-Foo", "mlops_foo", "-foo", "foo--bar", "", "mlops foo", "1foo"])
def test_bad_names_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError):
        create_plugin(name, "storage", tmp_path)


def test_unknown_component_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="choose one of storage, registry"):
        create_plugin("mlops-foo", "queue", tmp_path)


def test_existing_folder_is_not_overwritten(tmp_path: Path) -> None:
    create_plugin("mlops-foo", "storage", tmp_path)
    with pytest.raises(AlreadyExistsError):
        create_plugin("mlops-foo", "monitor", tmp_path)


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_generated_package_is_complete_and_valid_python(component: str, tmp_path: Path) -> None:
    root = create_plugin("mlops-acme", component, tmp_path)
    assert root == tmp_path / "mlops-acme"
    setup_cfg = (root / "setup.cfg").read_text()
    assert "mlops_core.plugins =\n    acme = mlops_acme.plugin" in setup_cfg
    assert "name = mlops-acme" in setup_cfg
    for path in root.rglob("*.py"):
        ast.parse(path.read_text(), filename=str(path))
    backend = (root / "mlops_acme" / "backend.py").read_text()
    assert "$" not in backend.replace("$$", "").replace("{32}$", ""), "an unrendered template placeholder"
    abc_name = COMPONENTS[component].abc
    from mlops_core import interfaces

    for method in getattr(interfaces, abc_name).__abstractmethods__:
        assert f"def {method}(" in backend
        assert f"Skeleton.{method} is not written yet" in backend
    readme = (root / "README.md").read_text()
    assert "pip install mlops-acme" in readme and COMPONENTS[component].suite in readme
    assert (root / "tests" / "test_mlops_acme.py").is_file() and (root / "mlops_acme" / "py.typed").is_file()


def test_cli_generates_a_plugin(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "mlops_core.cli", "plugin", "new", "mlops-cli-made", "--component",
                          "monitor", "--dest", str(tmp_path), "--json"], capture_output=True, text=True,
                         env=_env(), timeout=120)
    assert out.returncode == 0, out.stderr
    assert Path(json.loads(out.stdout)["path"]) == tmp_path / "mlops-cli-made"
    assert (tmp_path / "mlops-cli-made" / "mlops_cli_made" / "backend.py").is_file()


@pytest.mark.slow
def test_generated_plugins_install_are_discovered_and_pass_the_kit(tmp_path: Path) -> None:
    """pip-install one generated plugin per component into a target folder, then use them from a new process."""
    roots = [create_plugin(f"mlops-gen-{c}", c, tmp_path / "src") for c in sorted(COMPONENTS)]
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--disable-pip-version-check", "--target", str(target), *map(str, roots)],
                         capture_output=True, text=True, env=_env(), timeout=600)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    env = _env(PYTHONPATH=str(target))

    listed = subprocess.run([sys.executable, "-m", "mlops_core.cli", "plugins", "--json"], capture_output=True,
                            text=True, env=env, cwd=tmp_path, timeout=120)
    assert listed.stdout.startswith("{"), listed.stdout + listed.stderr
    plugins = {p["name"]: p for p in json.loads(listed.stdout)["plugins"]}
    for c in COMPONENTS:
        entry = plugins.get(f"gen-{c}")
        assert entry is not None, f"gen-{c} not discovered: {listed.stdout}\n{listed.stderr}"
        assert f"{c}:gen-{c}" in entry["backends"]
        assert entry["distribution"] == f"mlops-gen-{c}"

    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                          *[str(r / "tests") for r in roots]], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=900)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert " failed" not in run.stdout.splitlines()[-1]


@pytest.mark.parametrize("component", COMPONENTS)
def test_the_skeletons_annotations_resolve(component: str, tmp_path: Path) -> None:
    """Every name the skeleton's signatures use is imported (``Sequence`` was not, for the registry primitives)."""
    root = create_plugin(f"mlops-ann-{component}", component, tmp_path)
    package = root.name.replace("-", "_")
    code = ("import typing, sys, inspect\n"
            f"sys.path.insert(0, {str(root)!r})\n"
            f"import {package}.backend as b\n"
            "for name, cls in vars(b).items():\n"
            "    if inspect.isclass(cls) and cls.__module__ == b.__name__:\n"
            "        for attr, fn in vars(cls).items():\n"
            "            if inspect.isfunction(fn):\n"
            "                typing.get_type_hints(fn)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
