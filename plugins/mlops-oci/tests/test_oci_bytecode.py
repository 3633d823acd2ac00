"""Build-time bytecode (issue 14.7): reproducible unchecked-hash pycs that Python really uses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mlops_oci.bytecode import compile_tree
from mlops_oci.layers import FileTree, materialize

_PY = f"{sys.version_info.major}.{sys.version_info.minor}"
_SOURCE = b'WORDS = {"alpha", "beta", "gamma", "delta"}\nFROZEN = frozenset(["x", "y", "z"])\ndef f():\n    return "from source"\n'


def _tree() -> FileTree:
    tree = FileTree()
    tree.add_bytes("opt/app/site/pkg/__init__.py", b"")
    tree.add_bytes("opt/app/site/pkg/mod.py", _SOURCE)
    tree.add_bytes("opt/app/site/pkg/py2.py", b"print 'python 2'\n")  # not Python 3: skipped, like compileall
    return tree


def test_pycs_are_identical_across_runs_and_name_the_image_path() -> None:
    first, second = _tree(), _tree()
    assert compile_tree(first, _PY) == 2 and compile_tree(second, _PY) == 2
    tag = sys.implementation.cache_tag
    pyc = f"opt/app/site/pkg/__pycache__/mod.{tag}.pyc"
    blobs = [{e.path: e.opener().read() for e in t.entries() if e.kind == "file"} for t in (first, second)]
    assert blobs[0] == blobs[1]  # two compiler processes, same bytes (set constants included)
    data = blobs[0][pyc]
    assert int.from_bytes(data[4:8], "little") == 0b01  # PEP 552 flags: hash-based, unchecked
    assert b"/opt/app/site/pkg/mod.py" in data  # the path inside the image, not the build machine's
    assert f"opt/app/site/pkg/__pycache__/py2.{tag}.pyc" not in blobs[0]


def test_python_loads_the_unchecked_pyc_without_reading_the_source_again(tmp_path: Path) -> None:
    tree = _tree()
    compile_tree(tree, _PY)
    materialize(tree, tmp_path)
    site = tmp_path / "opt/app/site"
    # Change the source after the build: an unchecked pyc is still what Python runs.
    (site / "pkg/mod.py").write_bytes(_SOURCE.replace(b"from source", b"edited later"))
    out = subprocess.run([sys.executable, "-B", "-c", "import pkg.mod; print(pkg.mod.f())"], cwd=site,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "from source"


def test_another_python_minor_is_not_compiled() -> None:
    tree = _tree()
    assert compile_tree(tree, "3.99") == 0
    assert not [e for e in tree.entries() if e.path.endswith(".pyc")]
