"""Make a Python base image locally, with no registry: Debian bookworm + python3 via debootstrap.

For air-gapped machines and for this project's own tests and quickstart, where no
public registry is reachable. The result is an OCI image layout, usable as the
``oci`` builder's base with ``base = "oci:<path>:python"``. It is cached by its
inputs, so only the first call pays for debootstrap (about 35-45 s; the layout
is about 45 MB of gzip, 150 MB unpacked; needs root and a Debian mirror).

One cache serves every caller on the machine (``$MLOPS_BASE_CACHE``, default
``~/.cache/mlops-core/bases``): the quickstart, the tests and ``mlops image base``.
Concurrent callers (two xdist workers, two test runs, the quickstart next to a
test run) are safe: an exclusive ``flock`` per cache key lets one process build
while the others wait, and they then take its result. Should the lock not be
honoured (a file system without ``flock``), the final rename still cannot clobber
anything: a loser whose rename meets a complete layout verifies and adopts it.
Work folders are removed on every path, and stale ones of crashed runs are swept
under the lock.

The layout is reproducible: the same inputs give the same digests (file times
are clamped to 0, owners are numeric, volatile caches and logs are dropped, and
the dates in ``/etc/shadow`` are fixed).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

from mlops_core.bundle import sha256_file
from mlops_core.errors import BackendUnavailableError

from .layers import CONFIG_MEDIA_TYPE, INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, BlobStore, canonical_json

__all__ = ["DEFAULT_CACHE", "DEBOOTSTRAP_INPUTS", "debootstrap_base_layout", "base_reference", "verify_layout",
           "default_cache"]


def default_cache() -> Path:
    """The machine's shared base cache: ``$MLOPS_BASE_CACHE`` or ``~/.cache/mlops-core/bases``."""
    return Path(os.environ.get("MLOPS_BASE_CACHE") or Path.home() / ".cache" / "mlops-core" / "bases")


DEFAULT_CACHE = default_cache()

# libgomp1: the OpenMP runtime that some model wheels load from the system instead of bundling it
# (LightGBM's lib_lightgbm.so); without it their images fail to load the model.
DEBOOTSTRAP_INPUTS = {"suite": "bookworm", "variant": "minbase", "include": ["python3", "libgomp1"],
                      "mirror": os.environ.get("MLOPS_DEBIAN_MIRROR", "http://deb.debian.org/debian"),
                      "recipe": 3}

# Files that differ between two debootstrap runs of the same inputs (caches, logs, ids).
_VOLATILE = ("usr/share/doc/*", "usr/share/man/*", "usr/share/locale/*", "var/cache/apt/*", "var/lib/apt/lists/*",
             "var/log/*", "dev/*", "var/cache/ldconfig/aux-cache", "var/cache/debconf/*-old",
             "var/lib/dpkg/*-old", "etc/machine-id", "var/lib/dbus/machine-id", "etc/hostname", "etc/resolv.conf",
             "root/.bash_history", "tmp/*", "var/tmp/*", "run/*", "proc/*", "sys/*")

# Debian architecture -> OCI platform (architecture, variant).
_DEB_TO_OCI = {"amd64": ("amd64", ""), "arm64": ("arm64", "v8"), "armhf": ("arm", "v7"), "armel": ("arm", "v5"),
               "i386": ("386", ""), "ppc64el": ("ppc64le", ""), "s390x": ("s390x", ""), "riscv64": ("riscv64", "")}


def verify_layout(path: Path, *, deep: bool = False) -> bool:
    """True when ``path`` is a complete OCI layout: every blob its index reaches exists with the right size.

    ``deep`` also checks every blob's sha256 (used when adopting another process's result).
    """
    try:
        index = json.loads((path / "index.json").read_text())
        todo = [(d["digest"], int(d["size"]), True) for d in index["manifests"]]
        while todo:
            digest, size, is_doc = todo.pop()
            blob = path / "blobs" / "sha256" / digest.split(":", 1)[1]
            if not blob.is_file() or blob.stat().st_size != size:
                return False
            if deep and "sha256:" + sha256_file(blob)[0] != digest:
                return False
            if is_doc:
                doc = json.loads(blob.read_bytes())
                for d in doc.get("manifests", []):
                    todo.append((d["digest"], int(d["size"]), True))
                if "config" in doc:
                    todo.append((doc["config"]["digest"], int(doc["config"]["size"]), False))
                for d in doc.get("layers", []):
                    todo.append((d["digest"], int(d["size"]), False))
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """An exclusive advisory lock (released by the kernel if the holder dies)."""
    with open(lock_path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _publish(layout: Path, dest: Path) -> None:
    """Move a finished layout into place; if another process got there first, verify and adopt its result."""
    try:
        os.rename(layout, dest)
        return
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    if verify_layout(dest, deep=True):
        return  # the winner's complete result; ours is dropped with the work folder
    # An incomplete leftover (a crash of an older version): move it aside, then take its place.
    trash = dest.parent / f".trash-{uuid.uuid4().hex[:8]}"
    os.rename(dest, trash)
    try:
        os.rename(layout, dest)
    finally:
        shutil.rmtree(trash, ignore_errors=True)


def _oci_platform(rootfs: Path) -> tuple[str, str]:
    deb = subprocess.run(["chroot", str(rootfs), "dpkg", "--print-architecture"], check=True, capture_output=True,
                         text=True).stdout.strip()
    if deb not in _DEB_TO_OCI:
        raise BackendUnavailableError(f"unknown Debian architecture {deb!r} for an OCI image",
                                      hint="build the base on amd64, arm64, armhf, i386, ppc64el, s390x or riscv64")
    return _DEB_TO_OCI[deb]


def _build(work: Path) -> Path:
    """debootstrap into ``work/rootfs`` and write ``work/layout``; returns the layout."""
    inp = DEBOOTSTRAP_INPUTS
    rootfs = work / "rootfs"
    done = subprocess.run(["debootstrap", f"--variant={inp['variant']}", f"--include={','.join(inp['include'])}",
                           inp["suite"], str(rootfs), inp["mirror"]], capture_output=True, text=True)
    if done.returncode != 0:
        raise BackendUnavailableError(f"debootstrap failed: {done.stderr.strip()[-800:]}",
                                      hint=f"check that the Debian mirror {inp['mirror']} is reachable")
    subprocess.run(["sh", "-c", "rm -rf " + " ".join(_VOLATILE)], cwd=rootfs, check=True)
    # /etc/shadow records the day each account was made: fix it so the layer does not change daily.
    shadow = rootfs / "etc" / "shadow"
    if shadow.is_file():
        lines = []
        for line in shadow.read_text().splitlines():
            fields = line.split(":")
            if len(fields) > 2 and fields[2]:
                fields[2] = "0"
            lines.append(":".join(fields))
        shadow.write_text("\n".join(lines) + "\n")
    version = subprocess.run(["chroot", str(rootfs), "python3", "-c",
                              "import platform; print(platform.python_version())"],
                             check=True, capture_output=True, text=True).stdout.strip()
    architecture, variant = _oci_platform(rootfs)
    layer_tar = work / "layer.tar.gz"
    subprocess.run(["sh", "-c", f"tar --sort=name --numeric-owner --owner=0 --group=0 --mtime=@0 --format=posix "
                    f"--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime "
                    f"-C {rootfs} -cf - . | tee {work}/layer.tar | gzip -n > {layer_tar}"], check=True)
    diff_id = "sha256:" + sha256_file(work / "layer.tar")[0]
    layout = work / "layout"
    store = BlobStore(layout / "blobs")
    layer_digest = "sha256:" + sha256_file(layer_tar)[0]
    os.replace(layer_tar, store.path(layer_digest))
    platform = {"architecture": architecture, "os": "linux", **({"variant": variant} if variant else {})}
    config = canonical_json({
        **platform, "created": "1970-01-01T00:00:00Z",
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
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_bytes(canonical_json({
        "schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [{"mediaType": MANIFEST_MEDIA_TYPE, "digest": manifest_digest, "size": len(manifest),
                       "platform": platform, "annotations": {"org.opencontainers.image.ref.name": "python"}}]}))
    return layout


def debootstrap_base_layout(cache: Path | None = None) -> Path:
    """A runnable Debian bookworm + python3 base image as an OCI layout, cached by its inputs.

    First call: debootstrap (about 35-45 s, needs root and the Debian mirror), drop the
    volatile files, tar it reproducibly with GNU tar, write the layout. Later calls (and
    callers that waited for a concurrent first call): the cached layout.
    """
    cache = Path(cache or default_cache())
    key = hashlib.sha256(json.dumps(DEBOOTSTRAP_INPUTS, sort_keys=True).encode()).hexdigest()[:16]
    dest = cache / f"debootstrap-python-{key}"
    if verify_layout(dest):
        return dest
    if shutil.which("debootstrap") is None or os.geteuid() != 0:
        raise BackendUnavailableError(
            "making a local base image needs debootstrap and root",
            hint="apt-get install debootstrap and run as root, or use a base image from a reachable registry",
        )
    cache.mkdir(parents=True, exist_ok=True)
    with _exclusive(cache / f".lock-{key}"):
        if verify_layout(dest):
            return dest  # another process built it while we waited
        # We hold the lock, so any work folder of this key belongs to a run that died.
        for stale in cache.glob(f".work-{key}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        work = Path(tempfile.mkdtemp(prefix=f".work-{key}-", dir=cache))
        try:
            _publish(_build(work), dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return dest


def base_reference(cache: Path | None = None) -> str:
    """The ``oci`` builder's ``base`` setting for the local base (made on first use)."""
    return f"oci:{debootstrap_base_layout(cache)}:python"
