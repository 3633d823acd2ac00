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


def stack_registry_settings(ref: ImageReference) -> tuple[dict[str, Any], Path]:
    """The registry client's settings for ``ref`` from the stack's ``oci`` builder, and its cache folder.

    Credentials and ``plain_http`` apply only to the registry of the builder's
    ``repository`` or ``base`` (never sent to another registry); TLS, retries and
    chunk size apply everywhere. No stack file, or another builder: the defaults
    (credentials from Docker's config).
    """
    from mlops_core.stack import load_config

    from .builder import registry_client_kwargs
    from .config import OciBuilderConfig

    cfg = load_config()
    state_dir = Path(cfg.home) / "cache" / "oci" / "registry-state"
    component = cfg.components.get("builder")
    if component is None or component.backend != "oci":
        return {}, state_dir
    import attrs

    known = {f.name for f in attrs.fields(OciBuilderConfig)}
    settings = OciBuilderConfig(**{k: v for k, v in dict(component.settings).items() if k in known})
    kwargs = registry_client_kwargs(settings)
    own = set()
    for value in (settings.repository, settings.base):
        if value and not value.startswith("oci:"):
            try:
                own.add(ImageReference.parse(f"{value.rstrip('/')}/x" if value == settings.repository else value).registry)
            except Exception:  # noqa: BLE001 - an unparsable setting just matches nothing
                pass
    if ref.registry not in own:
        kwargs.update(username=None, password=None, plain_http=None)
    return kwargs, state_dir


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
    kwargs, _ = stack_registry_settings(ref)
    client = client_for(ref, **kwargs)
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

    kwargs, state_dir = stack_registry_settings(target)
    stats = push_image(BlobStore(blobs), manifest_bytes, target, kwargs, progress=Progress(),
                       state_dir=state_dir)
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
