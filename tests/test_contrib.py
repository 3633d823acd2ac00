"""contrib/: each example plugin is its own distribution, uses only the public API, installs and passes its tests."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONTRIB = sorted(p.parent for p in (REPO / "contrib").glob("*/setup.cfg"))
#: What "the public API" means for a plugin author.
PUBLIC = {"mlops_core", "mlops_core.plugins", "mlops_core.interfaces", "mlops_core.entities", "mlops_core.errors",
          "mlops_core.bundle", "mlops_core.testing", "mlops_core.testing.suites", "mlops_core.testing.strategies",
          "mlops_core.testing.stateful", "mlops_core.testing.reference_registry",
          "mlops_core.testing.reference_storage", "mlops_core.testing.reference_deployer"}


def test_there_are_at_least_two_contrib_plugins() -> None:
    assert len(CONTRIB) >= 2, CONTRIB


@pytest.mark.parametrize("root", CONTRIB, ids=lambda p: p.name)
def test_contrib_plugin_is_a_distribution_on_the_public_api(root: Path) -> None:
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        assert (root / name).is_file(), f"{root.name} has no {name}"
    setup_cfg = (root / "setup.cfg").read_text()
    assert "mlops_core.plugins =" in setup_cfg and f"name = {root.name}" in setup_cfg
    assert list((root / "tests").glob("test_*.py")), "each contrib plugin has tests"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for module in modules:
                if module.split(".")[0] == "mlops_core":
                    assert module in PUBLIC, f"{path.relative_to(REPO)} imports {module}, not public API"
    tests = "\n".join(p.read_text() for p in (root / "tests").glob("test_*.py"))
    assert "from mlops_core.testing.suites import" in tests, f"{root.name} does not run the conformance kit"


@pytest.mark.slow
@pytest.mark.parametrize("root", CONTRIB, ids=lambda p: p.name)
def test_contrib_plugin_installs_is_discovered_and_passes_its_tests(root: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_") and k != "PYTHONPATH"}
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--disable-pip-version-check", "--target", str(target), str(root)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    env["PYTHONPATH"] = str(target)
    # --rootdir keeps the repository's own conftest and ini out; the plugin's tests bring their fixtures.
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                          "--rootdir", str(root), "-c", str(root / "pyproject.toml"), str(root / "tests")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert "skipped" not in run.stdout.splitlines()[-1], "a service the tests need is missing:\n" + run.stdout[-3000:]
