"""Signed pushes in cosign's format, checked by standard tools, never by our own code.

The verifiers that read cosign signatures natively cannot run here: ``cosign`` is not
packaged for Debian bookworm (nor on PyPI), and Debian's skopeo is built with sigstore
verification disabled ("Debian-local change: sigstore disabled"; asserted below so the
test notices when that changes). So the check is done in cosign's steps with standard
tools: ``skopeo`` finds and reads the ``sha256-<digest>.sig`` signature manifest and its
payload from the registry, ``openssl dgst -verify`` checks the ECDSA signature of the
payload with the public key, and the payload must name the pushed image's digest.
After a one-byte change of the payload, ``openssl`` must refuse it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mlops_core.api as api
from conftest import need
from mlops_core.errors import ConfigError
from oci_testkit import Doubler, make_stack

EXAMPLE = np.array([[1.0, 2.0]])


def _keys(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = tmp_path / "cosign.key", tmp_path / "cosign.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public


def _fetch(registry: Any, repository: str, tag: str, tmp_path: Path) -> tuple[bytes, bytes, str]:
    """(payload, DER signature, manifest digest it names) of the first signature, fetched with skopeo."""
    skopeo = need("skopeo", "skopeo")
    dest = tmp_path / f"sig-{hashlib.sha256(os.urandom(8)).hexdigest()[:8]}"
    subprocess.run([skopeo, "copy", "--src-tls-verify=false", f"docker://{registry.host}/{repository}:{tag}",
                    f"oci:{dest}:sig"], check=True, capture_output=True)
    index = json.loads((dest / "index.json").read_text())
    manifest = json.loads((dest / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]).read_text())
    layer = manifest["layers"][0]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    payload = (dest / "blobs/sha256" / layer["digest"].split(":")[1]).read_bytes()
    signature = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
    return payload, signature, json.loads(payload)["critical"]["image"]["docker-manifest-digest"]


def _openssl_verify(payload: bytes, signature: bytes, public: Path, tmp_path: Path) -> bool:
    (tmp_path / "payload").write_bytes(payload)
    (tmp_path / "signature.der").write_bytes(signature)
    done = subprocess.run([need("openssl", "openssl"), "dgst", "-sha256", "-verify", str(public), "-signature",
                           str(tmp_path / "signature.der"), str(tmp_path / "payload")], capture_output=True, text=True)
    assert done.returncode == 0 or "Verification failure" in done.stdout + done.stderr, done.stderr
    return done.returncode == 0


def test_a_signed_push_verifies_with_skopeo_and_fails_after_a_one_byte_change(
        tmp_path: Path, registry: Any, tiny_base: str) -> None:
    pytest.importorskip("cryptography", reason="signing needs cryptography (pip install 'mlops-oci[sign]')")
    from mlops_oci.registry import RegistryClient
    from mlops_oci.signing import signature_tag

    private, public = _keys(tmp_path)
    stack = make_stack(tmp_path / "home", base=tiny_base, repository=f"{registry.host}/signed",
                       runtime_distributions=["mlops-core"], signing_key=str(private))
    version = api.register("doubler", Doubler(), example=EXAMPLE, stack=stack)
    image = api.build(version.uri, push=True, stack=stack)
    assert stack.builder.last_report.signature

    payload, signature, named = _fetch(registry, "signed/doubler", signature_tag(image.digest), tmp_path)
    assert named == image.digest
    assert json.loads(payload)["critical"]["identity"]["docker-reference"] == f"{registry.host}/signed/doubler"
    assert _openssl_verify(payload, signature, public, tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    assert not _openssl_verify(payload, signature, _keys(other)[1], tmp_path)  # another key: refused
    forged = bytearray(payload)
    forged[forged.index(b"cosign container image signature")] ^= 0x20  # one byte: 'c' -> 'C'
    assert not _openssl_verify(bytes(forged), signature, public, tmp_path)

    # One push, one signature under the .sig tag.
    client = RegistryClient(registry.host)
    raw, _, _ = client.get_manifest("signed/doubler", signature_tag(image.digest))
    assert len(json.loads(raw)["layers"]) == 1

    # Debian's skopeo cannot verify sigstore signatures (when it can, use it here instead of openssl).
    skopeo = need("skopeo", "skopeo")
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "sigstoreSigned", "keyPath": str(public),
                                               "signedIdentity": {"type": "matchRepository"}}]}))
    registries_d = tmp_path / "registries.d"
    registries_d.mkdir()
    (registries_d / "test.yaml").write_text(f"docker:\n  {registry.host}:\n    use-sigstore-attachments: true\n")
    native = subprocess.run([skopeo, "--policy", str(policy), "--registries.d", str(registries_d), "copy",
                             "--src-tls-verify=false", f"docker://{image.reference}", f"dir:{tmp_path / 'native'}"],
                            capture_output=True, text=True, timeout=120)
    if native.returncode != 0:
        assert "sigstore disabled" in native.stderr, native.stderr


def test_a_bad_signing_key_fails_before_anything_is_pushed(tmp_path: Path, registry: Any, tiny_base: str) -> None:
    pytest.importorskip("cryptography")
    (tmp_path / "not-a-key.pem").write_text("hello")
    stack = make_stack(tmp_path / "home", base=tiny_base, repository=f"{registry.host}/badkey",
                       runtime_distributions=["mlops-core"], signing_key=str(tmp_path / "not-a-key.pem"))
    version = api.register("doubler", Doubler(), example=EXAMPLE, stack=stack)
    with pytest.raises(ConfigError, match="cannot be loaded") as err:
        api.build(version.uri, push=True, stack=stack)
    assert err.value.hint
    assert registry.completed_uploads("badkey/doubler") == []
