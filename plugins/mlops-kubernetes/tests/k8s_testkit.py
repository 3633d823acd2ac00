"""Helpers for the cluster tests: a tiny base layout, real images built with the oci builder, deployers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlops_core.entities import ArtifactRef, DeploymentSpec, ImageRef, ModelVersion
from mlops_core.interfaces import BackendContext
from mlops_core.plugins import get_plugin_manager
from mlops_kubernetes.config import KubernetesDeployerConfig
from mlops_kubernetes.deployer import KubernetesDeployer


def tiny_base_layout(dest: Path) -> str:
    """A one-platform base (no real Python: the simulated kubelet runs nothing); returns the builder's base setting."""
    from mlops_oci.layers import (CONFIG_MEDIA_TYPE, INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, BlobStore, FileTree,
                                  canonical_json, write_layer)

    store = BlobStore(dest / "blobs")
    tree = FileTree()
    tree.add_bytes("etc/os-release", b"ID=tiny\n")
    tree.add_bytes("usr/local/bin/python3", b"#!/bin/false\n", executable=True)
    tree.add_dir("tmp")
    layer = write_layer(tree, store, mtime=0)
    config = canonical_json({
        "architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "PYTHON_VERSION=3.11.9"], "Cmd": ["python3"]},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
    })
    config_digest = store.put_bytes(config)
    manifest = canonical_json({"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
                               "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": len(config)},
                               "layers": [layer.descriptor()]})
    digest = store.put_bytes(manifest)
    (dest / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (dest / "index.json").write_bytes(canonical_json({
        "schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [{"mediaType": MANIFEST_MEDIA_TYPE, "digest": digest, "size": len(manifest),
                       "platform": {"os": "linux", "architecture": "amd64"},
                       "annotations": {"org.opencontainers.image.ref.name": "tiny"}}]}))
    return f"oci:{dest}:tiny"


def build_images(home: Path, base: str, registry_host: str, model: str, bundle: Any, versions: tuple[int, ...]) -> dict[int, ImageRef]:
    """Real images of ``bundle`` as versions ``versions`` of ``model``, built by the oci builder and pushed."""
    from mlops_oci.builder import OciImageBuilder
    from mlops_oci.config import OciBuilderConfig

    config = OciBuilderConfig(base=base, repository=f"{registry_host}/kit", runtime_distributions=["mlops-core"],
                              python_version="3.11", output=str(home / "images"), progress=False)
    builder = OciImageBuilder(config, BackendContext(home=home, hooks=get_plugin_manager().hooks, name="oci",
                                                     base_dir=home))
    out = {}
    for v in versions:
        mv = ModelVersion(model=model, version=v, artifact=ArtifactRef(uri=bundle.path.as_uri(), digest=bundle.digest))
        out[v] = builder.build(mv, bundle.path, push=True)
    return out


def make_deployer(home: Path, kubeconfig: Path, namespace: str, **settings: Any) -> KubernetesDeployer:
    config = KubernetesDeployerConfig(namespace=namespace, kubeconfig=str(kubeconfig), **settings)
    return KubernetesDeployer(config, BackendContext(home=home, hooks=get_plugin_manager().hooks, name="kubernetes",
                                                     base_dir=home))


def spec(name: str, model: str, version: int, image: ImageRef, bundle: Any = None, **options: Any) -> DeploymentSpec:
    return DeploymentSpec(name=name, model=model, version=version, image=image, options=options,
                          bundle_path=str(bundle.path) if bundle is not None else None)
