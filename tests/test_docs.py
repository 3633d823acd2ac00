"""The documentation site: generated pages are current, every hook is documented and tested, mkdocs builds strictly."""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_core import hookspecs

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
HOOKS = sorted(name for name, f in vars(hookspecs).items() if name.startswith("mlops_") and callable(f))


def _generator():
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_pages_are_up_to_date() -> None:
    for path, text in _generator().outputs().items():
        assert path.is_file(), f"{path.relative_to(REPO)} is missing: run python docs/gen_reference.py"
        assert path.read_text(encoding="utf-8") == text, \
            f"{path.relative_to(REPO)} is out of date: run python docs/gen_reference.py"


def test_there_are_hooks() -> None:
    assert "mlops_register_backends" in HOOKS and len(HOOKS) >= 10


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook: str) -> None:
    func = getattr(hookspecs, hook)
    doc = inspect.getdoc(func) or ""
    assert len(doc.splitlines()[0]) > 10 if doc else False, f"{hook} has no one-line summary"
    for param in inspect.signature(func).parameters:
        assert f":param {param}:" in doc, f"{hook} does not document its parameter {param!r}"
    page = (DOCS / "hooks.md").read_text(encoding="utf-8")
    assert f"### {hook}\n" in page, f"{hook} is missing from docs/hooks.md"


def _test_sources() -> dict[Path, str]:
    folders = [REPO / "tests", *REPO.glob("plugins/*/tests"), *REPO.glob("contrib/*/tests")]
    return {p: p.read_text(encoding="utf-8") for folder in folders for p in folder.rglob("*.py")
            if p.resolve() != Path(__file__).resolve()}


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_exercised_by_a_test(hook: str) -> None:
    """A test names the hook (an implementation, the recorder) or calls its facade method (hooks.alert(...))."""
    facade = re.compile(rf"\.{hook[len('mlops_'):]}\(")
    users = [p for p, text in _test_sources().items() if hook in text or facade.search(text)]
    assert users, f"no test exercises {hook}: add one (implement it in a test plugin, or use mlops_hook_recorder)"


def test_every_first_party_plugin_has_a_page() -> None:
    pages = "\n".join(p.read_text(encoding="utf-8") for p in (DOCS / "plugins").glob("*.md"))
    for setup_cfg in sorted(REPO.glob("plugins/*/setup.cfg")):
        dist = setup_cfg.parent.name
        assert f"`{dist}`" in pages, f"docs/plugins has no page for {dist}"


def test_every_page_is_in_the_nav() -> None:
    nav = (REPO / "mkdocs.yml").read_text(encoding="utf-8")
    for page in DOCS.rglob("*.md"):
        rel = page.relative_to(DOCS).as_posix()
        assert rel in nav, f"{rel} is not in the mkdocs.yml nav"


def test_site_builds_with_no_warnings(tmp_path: Path) -> None:
    if importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None:
        pytest.skip("mkdocs-material is not installed (pip install -r requirements-test.txt)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    site = tmp_path / "site"
    assert (site / "hooks" / "index.html").is_file() and (site / "cli" / "index.html").is_file()
    assert (site / "schemas" / "bundle-manifest.schema.json").is_file()
    html = (site / "hooks" / "index.html").read_text(encoding="utf-8")
    for hook in HOOKS:
        assert f'id="{hook}"' in html, f"the built hook reference has no anchor for {hook}"
    shutil.rmtree(site, ignore_errors=True)
