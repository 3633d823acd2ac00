"""contrib/bundle-verify-node: a Node.js program reads and verifies real bundles (schema + sha256)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from mlops_core.bundle import save_bundle

ROOT = Path(__file__).resolve().parents[3]
VERIFIER = ROOT / "contrib" / "bundle-verify-node"


@pytest.fixture(scope="module")
def verifier() -> Path:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (Node.js 20 is part of this machine's setup)")
    if not (VERIFIER / "node_modules" / "ajv").is_dir():
        npm = shutil.which("npm")
        assert npm, "npm is needed to install the verifier's one dependency (ajv)"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=VERIFIER, check=True, capture_output=True, timeout=300)
    return VERIFIER / "verify.js"


def run(verifier: Path, bundle: Path) -> tuple[int, dict]:
    out = subprocess.run(["node", str(verifier), str(bundle)], capture_output=True, text=True, timeout=60)
    return out.returncode, json.loads(out.stdout)


def test_node_verifies_a_real_bundle(verifier, tmp_path, sk_model, iris):
    info = save_bundle(sk_model, tmp_path / "b", example=iris[0][:5])
    code, report = run(verifier, info.path)
    assert code == 0, report
    assert report["verified"] is True and report["problems"] == []
    assert report["format"] == "skops"
    assert report["digest"] == info.digest  # the same manifest digest as Python computes
    assert report["files"] == len(info.manifest["files"])
    assert report["signature"]["inputs"][0]["shape"] == [-1, 4]


def test_node_refuses_a_tampered_file(verifier, tmp_path, onnx_proto):
    info = save_bundle(onnx_proto, tmp_path / "b")
    victim = info.path / "model.onnx"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    code, report = run(verifier, info.path)
    assert code == 1 and report["verified"] is False
    assert report["problems"] == ["model.onnx: sha256 does not match (tampered or corrupt)"]


def test_node_refuses_an_unlisted_file_and_a_bad_manifest(verifier, tmp_path, sk_model):
    info = save_bundle(sk_model, tmp_path / "b")
    (info.path / "extra.py").write_text("import os\n")
    code, report = run(verifier, info.path)
    assert code == 1 and report["problems"] == ["extra.py: not listed in the manifest"]
    (info.path / "extra.py").unlink()
    manifest = json.loads((info.path / "manifest.json").read_text())
    manifest["files"][0]["sha256"] = "not-a-digest"
    (info.path / "manifest.json").write_text(json.dumps(manifest))
    code, report = run(verifier, info.path)
    assert code == 1 and any(p.startswith("manifest /files/0/sha256") for p in report["problems"]), report
