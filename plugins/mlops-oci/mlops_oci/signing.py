"""Key-based image signatures in cosign's format, checked by standard verifiers (issue 14, supply chain).

A pushed image (the manifest or index its tag names) is signed with an ECDSA P-256
key (a PEM private key: ``openssl ecparam -name prime256v1 -genkey``, or a PKCS#8 key
``cosign``-style tools write unencrypted). The signature is stored the way cosign
stores it, so the tools of that ecosystem read it:

* the tag ``sha256-<image digest hex>.sig`` in the image's repository holds an OCI
  image manifest whose layers are *simple signing* payloads
  (``application/vnd.dev.cosign.simplesigning.v1+json``) naming the repository and the
  signed digest;
* each layer's ``dev.cosignproject.cosign/signature`` annotation is the base64 ASN.1
  ECDSA signature of that payload.

Verified in the tests by skopeo/containers-image (``policy.json`` with a
``sigstoreSigned`` requirement and the public key; ``use-sigstore-attachments`` in
``registries.d``), not by this code; ``cosign verify --key`` reads the same format.
Keyless signing (Fulcio/Rekor) is out of scope: it needs the public sigstore
services, which this machine cannot reach.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from mlops_core.errors import ConfigError

from .layers import CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, canonical_json

__all__ = ["SIMPLE_SIGNING_TYPE", "SIGNATURE_ANNOTATION", "signature_tag", "simple_signing_payload", "sign_pushed_image",
           "load_signing_key"]

SIMPLE_SIGNING_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"


def signature_tag(digest: str) -> str:
    algo, _, hexdigest = digest.partition(":")
    return f"{algo}-{hexdigest}.sig"


def simple_signing_payload(repository_reference: str, digest: str) -> bytes:
    """The payload cosign signs: which repository and which manifest digest."""
    return json.dumps({"critical": {"identity": {"docker-reference": repository_reference},
                                    "image": {"docker-manifest-digest": digest},
                                    "type": "cosign container image signature"},
                       "optional": None}, separators=(",", ":"), sort_keys=True).encode()


def load_signing_key(path: str | Path, password: str | None = None) -> Any:
    """An EC P-256 private key from a PEM file (clear error if it is missing, encrypted or of another kind)."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import load_pem_private_key
    except ImportError:
        raise ConfigError("signing images needs the cryptography package",
                          hint="pip install 'mlops-oci[sign]'") from None
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the signing key {path}: {exc.strerror}",
                          hint="set [builder] signing_key to a PEM EC P-256 private key") from None
    try:
        key = load_pem_private_key(data, password.encode() if password else None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"the signing key {path} cannot be loaded: {exc}",
                          hint="a PEM private key (`openssl ecparam -name prime256v1 -genkey -noout -out key.pem`); "
                               "set signing_key_password if it is encrypted") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ConfigError(f"the signing key {path} is not an EC P-256 key",
                          hint="cosign-compatible signatures use ECDSA P-256 keys")
    return key


def sign_pushed_image(client: Any, repository: str, digest: str, key: Any) -> str:
    """Sign the pushed manifest/index ``digest`` in ``repository``; returns the signature manifest's digest.

    Signatures already under the ``.sig`` tag are kept (another key's, or an earlier one).
    """
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from .registry import RegistryNotFoundError

    payload = simple_signing_payload(f"{client.registry}/{repository}", digest)
    signature = base64.b64encode(key.sign(payload, ec.ECDSA(hashes.SHA256()))).decode()
    payload_digest = "sha256:" + hashlib.sha256(payload).hexdigest()
    import io

    client.push_blob(repository, payload_digest, lambda: io.BytesIO(payload), len(payload))
    layers = []
    tag = signature_tag(digest)
    try:
        raw, _, _ = client.get_manifest(repository, tag)
        layers = [l for l in json.loads(raw).get("layers", []) if l.get("digest") != payload_digest]
    except RegistryNotFoundError:
        pass
    layers.append({"mediaType": SIMPLE_SIGNING_TYPE, "digest": payload_digest, "size": len(payload),
                   "annotations": {SIGNATURE_ANNOTATION: signature}})
    config = canonical_json({"architecture": "", "os": "", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}})
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    client.push_blob(repository, config_digest, lambda: io.BytesIO(config), len(config))
    manifest = canonical_json({"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
                               "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": len(config)},
                               "layers": layers})
    return client.put_manifest(repository, tag, manifest, MANIFEST_MEDIA_TYPE)
