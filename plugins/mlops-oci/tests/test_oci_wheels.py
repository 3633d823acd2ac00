"""Wheel resolution for the image: local version labels (``torch==2.13.0+cpu``) are kept exactly.

Real ``pip download`` runs, offline (``--no-index``) against wheel folders made here, so they
need no network and do not depend on what an index serves.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from mlops_core.errors import MlopsError
from mlops_oci.wheels import Requirement, TargetPlatform, local_labelled, requirement_set, resolve_wheels

NAME = "mlops_demo_local"  # installed nowhere, served by no index


def _wheel(folder: Path, version: str, marker: str) -> Path:
    """A minimal pure-Python wheel whose module records which build it is."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{NAME}-{version}-py3-none-any.whl"
    info = f"{NAME}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{NAME}/__init__.py", f"BUILD = {marker!r}\n")
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {NAME}\nVersion: {version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


def test_a_local_label_stays_in_the_pin():
    reqs = requirement_set([{"name": NAME, "version": "1.0+cpu"}, {"name": "also-absent", "version": "2.0"}], [],
                           TargetPlatform())
    assert Requirement(NAME.replace("_", "-"), "==1.0+cpu") in reqs
    assert [str(r) for r in local_labelled(reqs)] == ["mlops-demo-local==1.0+cpu"]


def test_the_exact_local_build_is_taken_not_another_build_of_the_same_version(tmp_path):
    # Both builds of 1.0 lie in the folder; PEP 440's ==1.0 admits either, ==1.0+cpu only one.
    wheels = tmp_path / "wheels"
    _wheel(wheels, "1.0", "other")
    cpu = _wheel(wheels, "1.0+cpu", "cpu")
    got = resolve_wheels([Requirement(NAME, "==1.0+cpu")], TargetPlatform(), tmp_path / "cache",
                         find_links=[str(wheels)], pip_args=["--no-index"])
    assert [p.name for p in got.wheels] == [cpu.name]
    with zipfile.ZipFile(got.wheels[0]) as zf:
        assert zf.read(f"{NAME}/__init__.py") == b"BUILD = 'cpu'\n"


def test_an_unreachable_local_build_says_what_the_label_means_and_where_to_point(tmp_path):
    elsewhere = tmp_path / "only-the-public-build"
    _wheel(elsewhere, "1.0", "other")
    with pytest.raises(MlopsError) as err:
        resolve_wheels([Requirement(NAME, "==1.0+cpu")], TargetPlatform(), tmp_path / "cache",
                       find_links=[str(elsewhere)], pip_args=["--no-index"])
    hint = err.value.hint
    assert f"{NAME}==1.0+cpu carries a local version label" in hint
    assert "find_links" in hint and "extra_index_urls" in hint
