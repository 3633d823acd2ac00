"""Make a Python base image locally, with no registry: Debian bookworm + python3 via debootstrap.

For air-gapped machines and for this project's own tests and quickstart, where no
public registry is reachable. The result is an OCI image layout, usable as the
``oci`` builder's base with ``base = "oci:<path>:python"``. It is cached by its
inputs, so only the first call pays for debootstrap (about 35-45 s, 260 MB; needs
root and a Debian mirror).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from mlops_core.bundle import sha256_file
from mlops_core.errors import BackendUnavailableError

from .layers import CONFIG_MEDIA_TYPE, INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, BlobStore, canonical_json

__all__ = ["DEFAULT_CACHE", "DEBOOTSTRAP_INPUTS", "debootstrap_base_layout", "base_reference"]

DEFAULT_CACHE = Path(os.environ.get("MLOPS_BASE_CACHE", Path.home() / ".cache" / "mlops-core" / "bases"))

DEBOOTSTRAP_INPUTS = {"suite": "bookworm", "variant": "minbase", "include": ["python3"],
                      "mirror": os.environ.get("MLOPS_DEBIAN_MIRROR", "http://deb.debian.org/debian"),
                      "recipe": 2}


def debootstrap_base_layout(cache: Path | None = None) -> Path:
    """A runnable Debian bookworm + python3 base image as an OCI layout, cached by its inputs.

    First call: debootstrap (about 35-45 s, needs root and the Debian mirror), trim docs and
    apt lists, tar it reproducibly with GNU tar, write the layout. Later calls: the cached layout.
    """
    cache = Path(cache or DEFAULT_CACHE)
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        raise BackendUnavailableError(
            "making a local base image needs debootstrap and root",
            hint="apt-get install debootstrap and run as root, or use a base image from a reachable registry",
        )
    key = hashlib.sha256(json.dumps(DEBOOTSTRAP_INPUTS, sort_keys=True).encode()).hexdigest()[:16]
    dest = cache / f"debootstrap-python-{key}"
    if (dest / "index.json").is_file():
        return dest
    work = cache / f".work-{key}-{os.getpid()}"
    rootfs = work / "rootfs"
    subprocess.run(["rm", "-rf", str(work)], check=True)
    work.mkdir(parents=True)
    inp = DEBOOTSTRAP_INPUTS
    done = subprocess.run(["debootstrap", f"--variant={inp['variant']}", f"--include={','.join(inp['include'])}",
                           inp["suite"], str(rootfs), inp["mirror"]], capture_output=True, text=True)
    if done.returncode != 0:
        subprocess.run(["rm", "-rf", str(work)], check=False)
        raise BackendUnavailableError(f"debootstrap failed: {done.stderr.strip()[-800:]}",
                                      hint=f"check that the Debian mirror {inp['mirror']} is reachable")
    subprocess.run(["sh", "-c", "rm -rf usr/share/doc/* usr/share/man/* usr/share/locale/* var/cache/apt/* "
                    "var/lib/apt/lists/* var/log/* dev/*"], cwd=rootfs, check=True)
    version = subprocess.run(["chroot", str(rootfs), "python3", "-c",
                              "import platform; print(platform.python_version())"],
                             check=True, capture_output=True, text=True).stdout.strip()
    layer_tar = work / "layer.tar.gz"
    subprocess.run(["sh", "-c", f"tar --sort=name --numeric-owner --owner=0 --group=0 --mtime=@0 --format=posix "
                    f"--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime "
                    f"-C {rootfs} -cf - . | tee {work}/layer.tar | gzip -n > {layer_tar}"], check=True)
    diff_id = "sha256:" + sha256_file(work / "layer.tar")[0]
    store = BlobStore(work / "layout" / "blobs")
    layer_digest = "sha256:" + sha256_file(layer_tar)[0]
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
    cache.mkdir(parents=True, exist_ok=True)
    os.replace(layout, dest)
    subprocess.run(["rm", "-rf", str(work)], check=True)
    return dest


def base_reference(cache: Path | None = None) -> str:
    """The ``oci`` builder's ``base`` setting for the local base (made on first use)."""
    return f"oci:{debootstrap_base_layout(cache)}:python"
