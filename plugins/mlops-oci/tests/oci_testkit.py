"""Helpers the tests use to make base images and models (imported by conftest and tests)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from mlops_oci.layers import (CONFIG_MEDIA_TYPE, INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, BlobStore, FileTree,
                              canonical_json, write_layer)

CACHE = Path(os.environ.get("MLOPS_TEST_CACHE", Path.home() / ".cache" / "mlops-core-tests"))


def write_multiarch_layout(dest: Path, tag: str) -> None:
    """An OCI layout holding an index with a linux/amd64 and a linux/arm64 image (a few files each)."""
    store = BlobStore(dest / "blobs")
    manifests = []
    for arch in ("amd64", "arm64"):
        tree = FileTree()
        tree.add_bytes("etc/os-release", f'ID=tiny\nARCH={arch}\n'.encode())
        tree.add_bytes("usr/local/bin/python3", b"#!/bin/false\n", executable=True)
        tree.add_dir("tmp")
        layer = write_layer(tree, store, mtime=0)
        config = canonical_json({
            "architecture": arch, "os": "linux", "created": "1970-01-01T00:00:00Z",
            "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHON_VERSION=3.11.9", "LANG=C.UTF-8"],
                       "Cmd": ["python3"], "Labels": {"org.example.base": "tiny"}},
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tiny base"}],
        })
        config_digest = store.put_bytes(config)
        manifest = canonical_json({"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
                                   "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": len(config)},
                                   "layers": [layer.descriptor()]})
        manifests.append({"mediaType": MANIFEST_MEDIA_TYPE, "digest": store.put_bytes(manifest), "size": len(manifest),
                          "platform": {"os": "linux", "architecture": arch}})
    index = canonical_json({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": manifests})
    index_digest = store.put_bytes(index)
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (dest / "index.json").write_bytes(canonical_json({
        "schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [{"mediaType": INDEX_MEDIA_TYPE, "digest": index_digest, "size": len(index),
                       "annotations": {"org.opencontainers.image.ref.name": tag}}]}))


# ------------------------------------------------------------ debootstrap base
DEBOOTSTRAP_INPUTS = {"suite": "bookworm", "variant": "minbase", "include": ["python3"],
                      "mirror": os.environ.get("MLOPS_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian"),
                      "recipe": 2}


def debootstrap_base_layout() -> Path:
    """A runnable Debian bookworm + python3 base image as an OCI layout, cached by its inputs.

    First call: debootstrap (about 35-45 s, needs root and the Debian mirror), trim docs and
    apt lists, tar it reproducibly with GNU tar, write the layout. Later calls: the cached layout.
    """
    key = hashlib.sha256(json.dumps(DEBOOTSTRAP_INPUTS, sort_keys=True).encode()).hexdigest()[:16]
    dest = CACHE / f"debootstrap-python-{key}"
    if (dest / "index.json").is_file():
        return dest
    work = CACHE / f".work-{key}-{os.getpid()}"
    rootfs = work / "rootfs"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    inp = DEBOOTSTRAP_INPUTS
    subprocess.run(["debootstrap", f"--variant={inp['variant']}", f"--include={','.join(inp['include'])}",
                    inp["suite"], str(rootfs), inp["mirror"]], check=True, capture_output=True)
    subprocess.run(["sh", "-c", "rm -rf usr/share/doc/* usr/share/man/* usr/share/locale/* var/cache/apt/* "
                    "var/lib/apt/lists/* var/log/* dev/*"], cwd=rootfs, check=True)
    version = subprocess.run(["chroot", str(rootfs), "python3", "-c",
                              "import platform; print(platform.python_version())"],
                             check=True, capture_output=True, text=True).stdout.strip()
    layer_tar = work / "layer.tar.gz"
    subprocess.run(["sh", "-c", f"tar --sort=name --numeric-owner --owner=0 --group=0 --mtime=@0 --format=posix "
                    f"--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime "
                    f"-C {rootfs} -cf - . | tee {work}/layer.tar | gzip -n > {layer_tar}"], check=True)
    diff_id = "sha256:" + _sha256(work / "layer.tar")
    store = BlobStore(work / "layout" / "blobs")
    layer_digest = "sha256:" + _sha256(layer_tar)
    os.replace(layer_tar, store.path(layer_digest))
    config = canonical_json({
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                           f"PYTHON_VERSION={version}", "LANG=C.UTF-8"], "Cmd": ["python3"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": f"debootstrap {json.dumps(inp)}"}],
    })
    config_digest = store.put_bytes(config)
    manifest = canonical_json({"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
                               "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": len(config)},
                               "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                           "digest": layer_digest,
                                           "size": store.path(layer_digest).stat().st_size}]})
    manifest_digest = store.put_bytes(manifest)
    layout = work / "layout"
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_bytes(canonical_json({
        "schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [{"mediaType": MANIFEST_MEDIA_TYPE, "digest": manifest_digest, "size": len(manifest),
                       "annotations": {"org.opencontainers.image.ref.name": "python"}}]}))
    CACHE.mkdir(parents=True, exist_ok=True)
    os.replace(layout, dest)
    subprocess.run(["rm", "-rf", str(work)], check=True)
    return dest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------ models
class Doubler:
    """A tiny model with no third-party imports: predict doubles its input."""

    def predict(self, x: Any) -> Any:
        return x * 2


def make_stack(home: Path, deployer: dict[str, Any] | None = None, **builder: Any) -> Any:
    """A stack on the embedded defaults with the given builder (and deployer) settings."""
    from mlops_core.stack import Stack, load_config

    env = {"MLOPS_HOME": str(home), "MLOPS_BUILDER": builder.pop("backend", "oci")}
    for component, settings in (("BUILDER", builder), ("DEPLOYER", dict(deployer or {}))):
        if component == "DEPLOYER" and settings:
            env["MLOPS_DEPLOYER"] = settings.pop("backend", "container")
        for k, v in settings.items():
            if isinstance(v, (list, tuple)):
                v = ",".join(v)
            env[f"MLOPS_{component}__{k.upper()}"] = v if isinstance(v, str) else json.dumps(v)
    return Stack(load_config(env=env))
