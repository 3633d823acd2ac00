"""Handlers of ``mlops image inspect`` and ``mlops image push`` (loaded only when they run)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from mlops_core.errors import InvalidInputError

from .layers import BlobStore, read_layout
from .progress import human_bytes
from .reference import ImageReference
from .registry import INDEX_TYPES, client_for

__all__ = ["inspect_image", "inspect_command", "push_command"]


def _split_layout(arg: str) -> tuple[Path, str | None]:
    path = Path(arg)
    if path.exists():
        return path, None
    if ":" in path.name:
        base, tag = arg.rsplit(":", 1)
        if Path(base).exists():
            return Path(base), tag
    raise InvalidInputError(f"{arg} is not an OCI layout folder", hint="give LAYOUT[:TAG] or REGISTRY/REPOSITORY:TAG")


def _summary(manifest: dict[str, Any], config: dict[str, Any], digest: str, source: str) -> dict[str, Any]:
    cfg = config.get("config") or {}
    return {
        "image": source,
        "digest": digest,
        "platform": f"{config.get('os')}/{config.get('architecture')}",
        "size": sum(int(layer["size"]) for layer in manifest.get("layers", [])) + int(manifest["config"]["size"]),
        "layers": [{"digest": l["digest"], "size": int(l["size"]), "mediaType": l.get("mediaType")} for l in manifest.get("layers", [])],
        "user": cfg.get("User", ""),
        "entrypoint": cfg.get("Entrypoint"),
        "cmd": cfg.get("Cmd"),
        "env": cfg.get("Env", []),
        "labels": cfg.get("Labels") or {},
        "created": config.get("created"),
    }


def inspect_image(image: str, platform: str = "linux/amd64") -> dict[str, Any]:
    """Summary of an image in a layout folder or a registry."""
    from .builder import _pick_platform

    if Path(image.rsplit(":", 1)[0]).exists() or Path(image).exists():
        path, tag = _split_layout(image)
        found = list(read_layout(path, tag))
        if not found:
            raise InvalidInputError(f"no image tagged {tag} in {path}", hint="see index.json for the tags")
        desc, blobs = found[0]

        def blob(d: str) -> bytes:
            return (blobs / "sha256" / d.split(":", 1)[1]).read_bytes()

        digest = desc["digest"]
        doc = json.loads(blob(digest))
        if doc.get("mediaType") in INDEX_TYPES or "manifests" in doc:
            digest = _pick_platform(doc, platform, image)["digest"]
            doc = json.loads(blob(digest))
        return _summary(doc, json.loads(blob(doc["config"]["digest"])), digest, str(path))
    ref = ImageReference.parse(image)
    client = client_for(ref)
    try:
        raw, media_type, digest = client.get_manifest(ref.repository, ref.reference)
        doc = json.loads(raw)
        if media_type in INDEX_TYPES or "manifests" in doc:
            raw, media_type, digest = client.get_manifest(ref.repository, _pick_platform(doc, platform, image)["digest"])
            doc = json.loads(raw)
        config = json.loads(client.get_blob(ref.repository, doc["config"]["digest"]))
    finally:
        client.close()
    return _summary(doc, config, digest, str(ref))


def inspect_command(args: Any) -> int:
    info = inspect_image(args.image, args.platform)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    print(f"{info['image']}\n  digest      {info['digest']}\n  platform    {info['platform']}\n"
          f"  size        {human_bytes(info['size'])} (compressed)\n  user        {info['user'] or 'root'}\n"
          f"  entrypoint  {json.dumps(info['entrypoint'])}\n  cmd         {json.dumps(info['cmd'])}")
    print(f"  layers      {len(info['layers'])}")
    for layer in info["layers"]:
        print(f"    {layer['digest'][:19]}  {human_bytes(layer['size']):>10}")
    print("  labels")
    for k, v in sorted(info["labels"].items()):
        print(f"    {k}={v}")
    return 0


def push_command(args: Any) -> int:
    path, tag = _split_layout(args.layout)
    found = list(read_layout(path, tag))
    if len(found) != 1:
        raise InvalidInputError(f"{args.layout} holds {len(found)} images", hint="add :TAG to pick one")
    desc, blobs = found[0]
    manifest_bytes = (blobs / "sha256" / desc["digest"].split(":", 1)[1]).read_bytes()
    target = ImageReference.parse(args.reference)
    from .builder import push_image
    from .progress import Progress

    stats = push_image(BlobStore(blobs), manifest_bytes, target, {}, progress=Progress())
    result = {"reference": str(target), "digest": desc["digest"], **stats.to_dict()}
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(f"pushed {target}@{desc['digest']}: {len(stats.uploaded)} blobs uploaded "
              f"({human_bytes(stats.bytes_uploaded)}), {len(stats.existing)} already there", file=sys.stdout)
    return 0


def base_command(args: Any) -> int:
    """``mlops image base``: make the local debootstrap base and print the builder setting for it."""
    from .localbase import base_reference

    reference = base_reference(Path(args.cache) if args.cache else None)
    if args.json:
        print(json.dumps({"base": reference}))
    else:
        print(f"{reference}\nuse it with: MLOPS_BUILDER__BASE={reference}\n"
              f"or in mlops.toml:\n\n[builder]\nbackend = \"oci\"\nbase = \"{reference}\"\n")
    return 0
