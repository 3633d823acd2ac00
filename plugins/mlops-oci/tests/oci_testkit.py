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
from mlops_oci.localbase import DEBOOTSTRAP_INPUTS  # noqa: E402,F401  (re-exported for the tests)


def debootstrap_base_layout() -> Path:
    """The cached local Python base (see mlops_oci.localbase), in the machine's one shared base cache.

    The quickstart and ``mlops image base`` use the same cache, so the base is made once per machine
    (and concurrent test runs wait for each other instead of racing).
    """
    from mlops_oci.localbase import debootstrap_base_layout as make

    return make()


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
