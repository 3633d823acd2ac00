"""A software bill of materials for each image, attached to it as an OCI referrer (issue 14, supply chain).

The SBOM is CycloneDX 1.5 JSON listing what the image really holds:

* every wheel unpacked into the deps layer (name and version from the wheel's file
  name, the wheel's sha256, a ``pkg:pypi`` purl);
* the runtime distributions copied into the runtime layer (mlops-core, the server,
  the format plugin) with their versions;
* the base image's Debian packages, read from ``var/lib/dpkg/status`` in its layers
  (``pkg:deb/debian`` purls), when the base has one.

It is reproducible like the image: the serial number is derived from the image
digest and the timestamp is the image's ``created``.

It goes to the registry as an OCI 1.1 artifact: a manifest with ``artifactType``
``application/vnd.cyclonedx+json`` whose ``subject`` is the image. Registries with
the referrers API index it themselves; for the others (CNCF distribution 2.x, as
here) the client keeps the referrers tag schema up to date: the tag
``sha256-<image digest hex>`` holds an index of the image's referrers. ``oras
discover`` reads either; ``skopeo inspect --raw docker://REPO:sha256-<hex>`` shows
the index.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

from .layers import BlobStore, canonical_json

__all__ = ["SBOM_MEDIA_TYPE", "EMPTY_CONFIG", "cyclonedx_sbom", "dpkg_packages", "sbom_manifest", "attach_referrer",
           "referrers_tag"]

SBOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
_STATUS_PATHS = ("var/lib/dpkg/status", "./var/lib/dpkg/status")


def dpkg_packages(layer_paths: Iterable[Path]) -> list[dict[str, str]]:
    """Installed Debian packages from the topmost ``var/lib/dpkg/status`` in the given gzip tar layers."""
    status: bytes | None = None
    for path in layer_paths:  # bottom to top: a later layer's file wins
        try:
            with gzip.open(path, "rb") as raw, tarfile.open(fileobj=raw, mode="r|") as tar:
                for member in tar:
                    if member.name in _STATUS_PATHS and member.isfile():
                        f = tar.extractfile(member)
                        status = f.read() if f else None
        except (OSError, tarfile.TarError, EOFError):
            continue
    if not status:
        return []
    out = []
    for stanza in status.decode("utf-8", "replace").split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Package") and "installed" in fields.get("Status", "").split():
            out.append({"name": fields["Package"], "version": fields.get("Version", ""),
                        "arch": fields.get("Architecture", "")})
    return sorted(out, key=lambda p: (p["name"], p["arch"]))


def _wheel_component(path: Path, sha256: str) -> dict[str, Any]:
    from packaging.utils import parse_wheel_filename

    name, version, _, _ = parse_wheel_filename(path.name)
    return {"type": "library", "bom-ref": f"pkg:pypi/{name}@{version}", "name": str(name), "version": str(version),
            "purl": f"pkg:pypi/{name}@{version}", "hashes": [{"alg": "SHA-256", "content": sha256}],
            "properties": [{"name": "mlops:layer", "value": "deps"}, {"name": "mlops:wheel", "value": path.name}]}


def cyclonedx_sbom(*, image_name: str, image_version: str, image_digest: str, created: str,
                   wheels: Iterable[tuple[Path, str]], runtime: Mapping[str, str],
                   debs: Iterable[Mapping[str, str]], tool_version: str) -> bytes:
    """The image's CycloneDX 1.5 JSON document (canonical, so equal inputs give equal bytes)."""
    components: dict[str, dict[str, Any]] = {}
    for path, sha in wheels:
        comp = _wheel_component(path, sha)
        components[comp["bom-ref"]] = comp
    for dist, version in sorted(runtime.items()):
        from packaging.utils import canonicalize_name

        name = canonicalize_name(dist)
        ref = f"pkg:pypi/{name}@{version}"
        components.setdefault(ref, {"type": "library", "bom-ref": ref, "name": str(name), "version": version,
                                    "purl": ref, "properties": [{"name": "mlops:layer", "value": "runtime"}]})
    for deb in debs:
        ref = f"pkg:deb/debian/{deb['name']}@{deb['version']}" + (f"?arch={deb['arch']}" if deb.get("arch") else "")
        components.setdefault(ref, {"type": "library", "bom-ref": ref, "name": deb["name"], "version": deb["version"],
                                    "purl": ref, "properties": [{"name": "mlops:layer", "value": "base"}]})
    doc = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.UUID(hashlib.sha256(image_digest.encode()).hexdigest()[:32])}",
        "version": 1,
        "metadata": {
            "timestamp": created,
            "tools": {"components": [{"type": "application", "name": "mlops-oci", "version": tool_version}]},
            "component": {"type": "container", "bom-ref": image_digest, "name": image_name, "version": image_version,
                          "hashes": [{"alg": "SHA-256", "content": image_digest.split(":", 1)[1]}]},
        },
        "components": [components[k] for k in sorted(components)],
    }
    return canonical_json(doc)


def sbom_manifest(store: BlobStore, sbom: bytes, subject: Mapping[str, Any], created: str) -> bytes:
    """An OCI 1.1 artifact manifest for ``sbom`` whose subject is the image (blobs put into ``store``)."""
    from .layers import MANIFEST_MEDIA_TYPE

    config_digest = store.put_bytes(EMPTY_CONFIG)
    sbom_digest = store.put_bytes(sbom)
    return canonical_json({
        "schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "artifactType": SBOM_MEDIA_TYPE,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": config_digest, "size": len(EMPTY_CONFIG)},
        "layers": [{"mediaType": SBOM_MEDIA_TYPE, "digest": sbom_digest, "size": len(sbom),
                    "annotations": {"org.opencontainers.image.title": "sbom.cdx.json"}}],
        "subject": {k: subject[k] for k in ("mediaType", "digest", "size")},
        "annotations": {"org.opencontainers.image.created": created},
    })


def referrers_tag(digest: str) -> str:
    """The referrers tag schema's tag for an image digest (``sha256-<hex>``)."""
    algo, _, hexdigest = digest.partition(":")
    return f"{algo}-{hexdigest}"


def attach_referrer(client: Any, repository: str, artifact: bytes, subject_digest: str) -> str:
    """Put an artifact manifest (its blobs already pushed) and make it discoverable; its digest.

    With a registry that serves the referrers API nothing more is needed; otherwise the
    ``sha256-<hex>`` tag's index gains the artifact's descriptor (kept sorted, no duplicates).
    """
    from .layers import INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE
    from .registry import RegistryNotFoundError

    digest = client.put_manifest(repository, "sha256:" + hashlib.sha256(artifact).hexdigest(), artifact,
                                 MANIFEST_MEDIA_TYPE)
    resp = client.request("GET", f"/v2/{repository}/referrers/{subject_digest}", what="referrers query",
                          scope=client._scope(repository), ok=(200, 404, 405))
    if resp.status_code == 200 and resp.headers.get("Content-Type", "").startswith(INDEX_MEDIA_TYPE):
        return digest
    doc = json.loads(artifact)
    desc = {"mediaType": MANIFEST_MEDIA_TYPE, "digest": digest, "size": len(artifact),
            "artifactType": doc.get("artifactType"), "annotations": doc.get("annotations") or {}}
    tag = referrers_tag(subject_digest)
    try:
        raw, _, _ = client.get_manifest(repository, tag)
        index = json.loads(raw)
    except RegistryNotFoundError:
        index = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []}
    manifests = [m for m in index.get("manifests", []) if m.get("digest") != digest] + [desc]
    index["manifests"] = sorted(manifests, key=lambda m: m["digest"])
    client.put_manifest(repository, tag, canonical_json(index), INDEX_MEDIA_TYPE)
    return digest
