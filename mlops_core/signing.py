"""Optional bundle signing: an Ed25519 signature over a bundle's manifest digest.

Whoever can write the registry and the artifact store decides what ``models:/``
loads, and loading a pickle runs code. A signature made with a private key that
never leaves the publisher's machine, checked against public keys listed in the
stack file, moves the trust anchor from "whoever can write storage" to "whoever
holds the key". What is signed is the manifest digest (the sha256 of
``manifest.json``), which pins every file's sha256, so the signature covers every
byte of the bundle.

The signature is recorded at register time as the version tag
:data:`SIGNATURE_TAG`, ``ed25519:<key id>:<base64url signature>``, and checked
before the bundle is loaded or handed to a builder or deployer when the stack sets
``[security] require_signature = true``.

Needs the ``cryptography`` package (``pip install 'mlops-core[signing]'``),
imported only when a key is used: ``import mlops_core`` never imports it.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import ConfigError, IntegrityError

__all__ = ["SIGNATURE_TAG", "generate_key", "key_id", "sign_digest", "verify_digest", "require_signature"]

#: Version tag holding the signature.
SIGNATURE_TAG = "mlops.signature"
#: Domain separation: a signature made for something else never verifies as a bundle signature.
_CONTEXT = b"mlops-bundle-signature/1\n"


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise ConfigError("bundle signing needs the 'cryptography' package",
                          hint="pip install 'mlops-core[signing]' (or: pip install cryptography)") from None
    return serialization, ed25519


def generate_key(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a new Ed25519 private key to ``path`` (PEM, mode 0600) and its public key to ``path.pub``."""
    serialization, ed25519 = _crypto()
    private = ed25519.Ed25519PrivateKey.generate()
    path = Path(path)
    pub_path = path.with_name(path.name + ".pub")
    for p in (path, pub_path):
        if p.exists():
            from .errors import AlreadyExistsError

            raise AlreadyExistsError(f"{p} already exists", hint="choose another path; keys are never overwritten")
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub_path.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                           serialization.PublicFormat.SubjectPublicKeyInfo))
    return path, pub_path


def _load_private(path: str | os.PathLike[str]) -> Any:
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read the signing key {path}: {exc}",
                          hint="create one with `mlops keys new PATH` and set [security] signing_key") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 private key", hint="create one with `mlops keys new PATH`")
    return key


def _load_public(path: str | os.PathLike[str]) -> Any:
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"cannot read the trusted key {path}: {exc}",
                          hint="list the .pub files written by `mlops keys new` in [security] trusted_keys") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 public key", hint="use a .pub file written by `mlops keys new`")
    return key


def key_id(public_key: Any) -> str:
    """16 hex digits naming a public key (sha256 of its raw bytes)."""
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign_digest(private_key_path: str | os.PathLike[str], digest: str) -> str:
    """The :data:`SIGNATURE_TAG` value signing the bundle digest ``sha256:<hex>``."""
    key = _load_private(private_key_path)
    sig = key.sign(_CONTEXT + digest.encode("ascii"))
    return f"ed25519:{key_id(key.public_key())}:{base64.urlsafe_b64encode(sig).decode().rstrip('=')}"


def verify_digest(value: str | None, digest: str, trusted_keys: Iterable[str | os.PathLike[str]],
                  what: str = "the bundle") -> str:
    """Check a :data:`SIGNATURE_TAG` value over ``digest`` against the trusted keys; return the key id.

    IntegrityError when there is no signature, it is malformed, made by an untrusted
    key, or does not verify.
    """
    _crypto()  # a clear error when cryptography is missing
    from cryptography.exceptions import InvalidSignature

    keys = {key_id(k): k for k in (_load_public(p) for p in trusted_keys)}
    hint = "register it again from a trusted machine with [security] signing_key set, or sign it: `mlops models sign`"
    if not keys:
        raise ConfigError("[security] require_signature is on but no trusted_keys are listed",
                          hint="list the public keys (.pub) of the publishers you trust in [security] trusted_keys")
    if not value:
        raise IntegrityError(f"{what} is not signed, and this stack requires a signature", hint=hint)
    algo, _, rest = value.partition(":")
    kid, _, b64 = rest.partition(":")
    if algo != "ed25519" or not kid or not b64:
        raise IntegrityError(f"{what} has a malformed signature {value[:40]!r}", hint=hint)
    key = keys.get(kid)
    if key is None:
        raise IntegrityError(f"{what} is signed by key {kid}, which is not in [security] trusted_keys",
                             hint="add that publisher's public key if you trust it; " + hint)
    try:
        key.verify(base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)), _CONTEXT + digest.encode("ascii"))
    except (InvalidSignature, ValueError):
        raise IntegrityError(f"the signature of {what} does not verify (tampered, or made for another bundle)",
                             hint=hint) from None
    return kid


def require_signature(security: Mapping[str, Any], tags: Mapping[str, str], digest: str, what: str) -> str | None:
    """Verify ``tags``' signature when ``security`` requires one; return the key id (None when not required)."""
    if not security.get("require_signature"):
        return None
    return verify_digest(tags.get(SIGNATURE_TAG), digest, security.get("trusted_keys") or [], what)
