"""The plugin guide's 30-line storage backend, written to a folder, registered and run through the kit.

``docs/examples/dir_store.py`` is the code the guide shows (a test below keeps the
two identical); one ``@mlops_core.backend`` decorator is its whole registration.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from mlops_core.interfaces import ArtifactStore, BackendContext
from mlops_core.plugins import PluginManager
from mlops_core.testing.suites import StorageSuite

EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "dir_store.py"
GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugin-guide.md"


def load_plugin(folder: Path, name: str = "mlops_dir_store") -> object:
    """Write the example into ``folder`` as a module of its own and import it (as an installed plugin would be)."""
    path = folder / f"{name}.py"
    shutil.copy(EXAMPLE, path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def plugin_manager(tmp_path):
    pm = PluginManager(autoload=False)
    module = load_plugin(tmp_path)
    assert pm.register(module, name="dir-store") == "dir-store", [f.describe() for f in pm.failures]
    yield pm
    sys.modules.pop("mlops_dir_store", None)


def test_the_guide_shows_the_tested_code():
    code = EXAMPLE.read_text(encoding="utf-8").strip()
    assert code in GUIDE.read_text(encoding="utf-8"), "docs/plugin-guide.md must show docs/examples/dir_store.py verbatim"
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) <= 40, f"the small plugin grew to {len(lines)} non-blank lines"


def test_the_decorator_is_the_whole_registration(plugin_manager):
    spec = plugin_manager.catalog.get("storage", "dir")
    assert spec.plugin == "dir-store" and spec.summary == "Artifacts as plain files in a folder."
    (info,) = plugin_manager.plugins()
    assert info.backends == ("storage:dir",)


class TestThirtyLineStore(StorageSuite):
    @pytest.fixture
    def backend(self, tmp_path, plugin_manager):
        context = BackendContext(home=tmp_path / "home", hooks=plugin_manager.hooks, name="dir", base_dir=tmp_path)
        store = plugin_manager.build("storage", "dir", {"root": "blobs"}, context)
        assert isinstance(store, ArtifactStore) and store.config.root == "blobs"
        yield store
        store.close()


def test_a_stack_uses_it_through_the_cli(run_cli, tmp_path):
    load_plugin(tmp_path)
    sys.modules.pop("mlops_dir_store", None)
    (tmp_path / "mlops.toml").write_text('[storage]\nbackend = "dir"\nroot = "my-blobs"\n')
    env = {"MLOPS_PLUGIN_MODULES": "mlops_dir_store", "PYTHONPATH": str(tmp_path)}
    plugins = json.loads(run_cli("plugins", "--json", env=env).stdout)
    assert {"component": "storage", "name": "dir", "plugin": "mlops_dir_store",
            "summary": "Artifacts as plain files in a folder.", "schemes": []} in plugins["backends"]
    doctor = run_cli("doctor", env=env)
    assert "dir" in doctor.stdout + doctor.stderr
