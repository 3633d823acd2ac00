"""The ``oci`` builder: an OCI image of a model version, without a daemon and without running anything in it.

Image = base image layers + three layers of ours, cheapest-to-change last:

1. **deps**: the Python dependencies (the bundle's pinned requirements and the
   server's), as wheels for the target platform unpacked into
   ``/opt/mlops/site-packages``;
2. **runtime**: mlops-core, the server and the bundle's format plugin in
   ``/opt/mlops/runtime``, plus ``/opt/mlops/boot.py`` (the entrypoint);
3. **bundle**: the verified bundle in ``/opt/mlops/bundle``.

Each layer is cached under ``<home>/cache/oci`` by a key of its inputs (wheel
hashes, runtime file fingerprint, bundle digest), so a warm build writes only
what changed, and a push skips every blob the registry already has.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Mapping

import attrs

from mlops_core.bundle import verify_bundle
from mlops_core.entities import ImageRef, ModelVersion
from mlops_core.errors import BackendUnavailableError, ConfigError, InvalidInputError, MlopsError
from mlops_core.interfaces import BackendContext, ImageBuilder

from .config import OciBuilderConfig
from .layers import (CONFIG_MEDIA_TYPE, LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, BlobStore, FileTree, Layer,
                     canonical_json, source_date_epoch, write_layer, write_layout)
from .progress import Progress, human_bytes
from .reference import ImageReference
from .registry import INDEX_TYPES, PushStats, RegistryClient, client_for
from .wheels import (BOOT_SCRIPT, TargetPlatform, WheelSet, ZipPool, normalize_name, requirement_set,
                     resolve_wheels, runtime_tree, wheel_tree)

__all__ = ["OciImageBuilder", "push_image", "BaseImage", "ImagePlan", "BuildReport", "plan_image", "load_base", "LABEL_PREFIX",
           "check_base_platform", "image_created",
           "registry_client_kwargs"]

log = logging.getLogger("mlops_oci")

ROOT = "opt/mlops"
LABEL_PREFIX = "io.mlops"
_LAYER_FORMAT = 1  # bump when the layer contents of equal inputs change
_DOCKER_LAYER_TYPES = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": LAYER_MEDIA_TYPE,
    "application/vnd.oci.image.layer.v1.tar+gzip": LAYER_MEDIA_TYPE,
}


# ----------------------------------------------------------------- base image
@attrs.frozen
class BaseImage:
    """The resolved base: its manifest and config, and where its blobs come from."""

    name: str
    digest: str
    manifest: Mapping[str, Any]
    config: Mapping[str, Any]
    registry: ImageReference | None = None
    layout_blobs: Path | None = None

    @property
    def layers(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("layers", []))

    @property
    def env(self) -> dict[str, str]:
        out = {}
        for item in (self.config.get("config") or {}).get("Env") or []:
            key, _, value = item.partition("=")
            out[key] = value
        return out


def _pick_platform(index: Mapping[str, Any], platform: str, name: str) -> dict[str, Any]:
    os_name, _, rest = platform.partition("/")
    arch, _, variant = rest.partition("/")
    candidates = []
    for desc in index.get("manifests", []):
        p = desc.get("platform") or {}
        if p.get("os") == os_name and p.get("architecture") == arch and (not variant or p.get("variant") == variant):
            candidates.append(desc)
    if not candidates:
        offered = ", ".join(sorted({f"{(d.get('platform') or {}).get('os')}/{(d.get('platform') or {}).get('architecture')}"
                                    for d in index.get("manifests", [])}))
        raise InvalidInputError(f"base image {name} has no {platform} variant (it offers {offered or 'none'})",
                                hint="choose another base, or set the builder's platform")
    return candidates[0]


def _config_platform(config: Mapping[str, Any]) -> str:
    out = f"{config.get('os', 'linux')}/{config.get('architecture', 'amd64')}"
    return out + (f"/{config['variant']}" if config.get("variant") else "")


def check_base_platform(config: Mapping[str, Any], platform: str, name: str) -> None:
    """Refuse a single-platform base of another platform than the build's (wheels and config would disagree)."""
    os_name, _, rest = platform.partition("/")
    arch, _, variant = rest.partition("/")
    if config.get("os", "linux") != os_name or config.get("architecture", "amd64") != arch or \
            (variant and config.get("variant") and config.get("variant") != variant):
        have = _config_platform(config)
        raise InvalidInputError(
            f"the base image {name} is {have}, but the build targets {platform}",
            hint=f"set the builder's platform = \"{have}\", or use a base that offers {platform} "
                 f"(an image index with a {platform} entry)")


def _base_display_name(spec: str) -> str:
    """How the image records its base: a registry reference as given; a local layout by its tag, not its path
    (the same base copied elsewhere, or cached under another user's home, must give the same digest)."""
    if not spec.startswith("oci:"):
        return spec
    body = spec[len("oci:"):]
    tag = body.rsplit(":", 1)[1] if ":" in Path(body).name else ""
    return f"oci-layout:{tag or 'default'}"


def _load_layout_base(spec: str, platform: str, store: BlobStore) -> BaseImage:
    from .layers import read_layout

    body = spec[len("oci:"):]
    path, tag = body, None
    if ":" in Path(body).name:
        path, tag = body.rsplit(":", 1)
    found = list(read_layout(Path(path), tag))
    if not found:
        raise InvalidInputError(f"no image {tag or ''} in the OCI layout {path}", hint="check the tag after the ':'")
    desc, blobs = found[0]

    def blob(digest: str) -> bytes:
        p = blobs / "sha256" / digest.split(":", 1)[1]
        if not p.is_file():
            raise InvalidInputError(f"OCI layout {path} lacks blob {digest}", hint="copy the image again (skopeo copy)")
        return p.read_bytes()

    raw = blob(desc["digest"])
    digest = desc["digest"]
    doc = json.loads(raw)
    if doc.get("mediaType") in INDEX_TYPES or "manifests" in doc:
        desc = _pick_platform(doc, platform, spec)
        digest = desc["digest"]
        raw = blob(digest)
        doc = json.loads(raw)
    config = json.loads(blob(doc["config"]["digest"]))
    check_base_platform(config, platform, spec)
    return BaseImage(name=_base_display_name(spec), digest=digest, manifest=doc, config=config, layout_blobs=blobs)


def load_base(spec: str, platform: str, store: BlobStore, cache: Path, client_kwargs: Mapping[str, Any]) -> BaseImage:
    """Resolve the base image (registry reference or ``oci:PATH[:TAG]``) to one platform's manifest and config.

    The tag's last resolution is remembered, so a build still works when the
    base's registry is unreachable and everything it needs is cached.
    """
    if spec.startswith("oci:"):
        return _load_layout_base(spec, platform, store)
    ref = ImageReference.parse(spec)
    memo = cache / "bases" / (re.sub(r"[^A-Za-z0-9_.-]", "_", f"{spec}@{platform}") + ".json")
    client = client_for(ref, **client_kwargs)
    try:
        raw, media_type, digest = client.get_manifest(ref.repository, ref.reference)
        doc = json.loads(raw)
        if media_type in INDEX_TYPES or "manifests" in doc:
            desc = _pick_platform(doc, platform, spec)
            raw, media_type, digest = client.get_manifest(ref.repository, desc["digest"])
            doc = json.loads(raw)
        config_digest = doc["config"]["digest"]
        if not store.has(config_digest):
            store.import_stream(client.iter_blob(ref.repository, config_digest), config_digest)
        store.put_bytes(raw)
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(json.dumps({"digest": digest}))
    except BackendUnavailableError:
        if not memo.is_file():
            raise
        digest = json.loads(memo.read_text())["digest"]
        if not store.has(digest):
            raise
        log.warning("registry %s unreachable; using the cached resolution of %s (%s)", ref.registry, spec, digest)
        doc = json.loads(store.read_bytes(digest))
    finally:
        client.close()
    config = json.loads(store.read_bytes(doc["config"]["digest"]))
    check_base_platform(config, platform, spec)
    return BaseImage(name=spec, digest=digest, manifest=doc, config=config, registry=ref)


def fetch_base_layers(base: BaseImage, store: BlobStore, client_kwargs: Mapping[str, Any], progress: Progress) -> None:
    """Copy the base layers into the blob store (once; they are cached by digest)."""
    missing = [d for d in base.layers if not store.has(d["digest"])]
    if not missing:
        return
    progress.start("fetch base layers", sum(int(d.get("size", 0)) for d in missing))
    if base.layout_blobs is not None:
        for d in missing:
            src = base.layout_blobs / "sha256" / d["digest"].split(":", 1)[1]

            def chunks(src: Path = src) -> Any:
                with open(src, "rb") as f:
                    while chunk := f.read(1 << 20):
                        progress.advance(len(chunk))
                        yield chunk

            store.import_stream(chunks(), d["digest"])
    else:
        assert base.registry is not None
        client = client_for(base.registry, **client_kwargs)
        try:
            for d in missing:
                def chunks(d: Mapping[str, Any] = d) -> Any:
                    for chunk in client.iter_blob(base.registry.repository, d["digest"]):  # type: ignore[union-attr]
                        progress.advance(len(chunk))
                        yield chunk

                store.import_stream(chunks(), d["digest"])
        finally:
            client.close()
    progress.done(f"{len(missing)} layers")


# ------------------------------------------------------------------ the plan
@attrs.frozen
class ImagePlan:
    """Everything of an image except the base's bytes: three file trees and the runtime config."""

    model: str
    version: int
    bundle_digest: str
    python_version: str
    requirements: tuple[str, ...]
    wheels: WheelSet
    runtime_versions: Mapping[str, str]
    deps: FileTree
    runtime: FileTree
    bundle: FileTree
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: Mapping[str, str]
    labels: Mapping[str, str]
    user: str
    port: int
    created: str = "1970-01-01T00:00:00Z"
    healthcheck: tuple[str, ...] = ()
    workdir: str = "/" + ROOT


def _iso(epoch: int) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def image_created(bundle_manifest: Mapping[str, Any]) -> str:
    """The image's ``created``: ``$SOURCE_DATE_EPOCH`` when set, else when the bundle was saved.

    Both are inputs of the build, so equal inputs keep giving equal digests, and the
    time is a real one (not 1970) unless the builder is told otherwise.
    """
    import os

    if os.environ.get("SOURCE_DATE_EPOCH", "").strip():
        return _iso(source_date_epoch())
    raw = str(bundle_manifest.get("created_at") or "")
    try:
        when = _dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return _iso(0)
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return _iso(int(when.timestamp()))


#: The image's HEALTHCHECK interval, timeout and start period (the model may take a while to load).
HEALTHCHECK_TIMING = {"Interval": 10_000_000_000, "Timeout": 5_000_000_000, "StartPeriod": 120_000_000_000,
                      "Retries": 3}


def _format_distribution(fmt: str) -> str | None:
    """The distribution that provides a model format (to put it into the runtime layer)."""
    from mlops_core.plugins import get_plugin_manager

    try:
        spec = get_plugin_manager().catalog.get("format", fmt)
    except MlopsError:
        raise InvalidInputError(f"the bundle uses format {fmt!r}, which no installed plugin provides",
                                hint="install the format's plugin so it can go into the image") from None
    return spec.distribution


def target_python(cfg: Any, base_env: Mapping[str, str], bundle_manifest: Mapping[str, Any]) -> str:
    """The image's Python MAJOR.MINOR, checked against the Python the bundle was saved with."""
    bundle_py = ".".join(str((bundle_manifest.get("python") or {}).get("version", "")).split(".")[:2])
    if cfg.python_version:
        return str(cfg.python_version)
    base_py = ".".join(base_env.get("PYTHON_VERSION", "").split(".")[:2])
    if base_py and bundle_py and base_py != bundle_py:
        raise InvalidInputError(
            f"the base image has Python {base_py} but the bundle was saved with Python {bundle_py}",
            hint="pickled models need the same Python minor version: use a base with Python "
                 f"{bundle_py} (or set python_version to override)",
        )
    if base_py:
        return base_py
    if bundle_py:
        return bundle_py
    raise ConfigError("cannot tell which Python the base image has", hint="set the builder's python_version")


def plan_image(version: ModelVersion, bundle_dir: Path, cfg: Any, base_name: str, base_env: Mapping[str, str],
               cache: Path, progress: Progress, *, base_digest: str = "") -> tuple[ImagePlan, ZipPool]:
    # Verify every file against the manifest (size and sha256) before anything is packaged:
    # the image must hold exactly the registered bytes, and the bundle layer's cache key
    # (manifest digest and sizes) would not notice a same-size change either.
    info = verify_bundle(bundle_dir)
    manifest, bundle_digest = dict(info.manifest), info.digest
    py = target_python(cfg, base_env, manifest)
    target = TargetPlatform.parse(cfg.platform, py, cfg.glibc)
    runtime_dists = list(cfg.runtime_distributions)
    fmt_dist = _format_distribution(manifest["format"])
    if fmt_dist and normalize_name(fmt_dist) not in {normalize_name(d) for d in runtime_dists}:
        runtime_dists.append(fmt_dist)

    progress.start("resolve dependencies")
    reqs = requirement_set(manifest.get("requirements") or [], runtime_dists, target, extra=cfg.extra_requirements)
    wheels = resolve_wheels(reqs, target, cache, index_url=cfg.index_url, extra_index_urls=cfg.extra_index_urls,
                            find_links=cfg.find_links)
    progress.done(f"{len(wheels.wheels)} wheels{' (pip ran)' if wheels.resolved_now else ' (cached)'}")

    pool = ZipPool()
    deps = wheel_tree(wheels.wheels, f"{ROOT}/site-packages", pool)
    runtime, versions = runtime_tree(runtime_dists, f"{ROOT}/runtime", BOOT_SCRIPT.encode())
    bundle = FileTree()
    bundle.add_file(f"{ROOT}/bundle/manifest.json", bundle_dir / "manifest.json", executable=False)
    for entry in manifest["files"]:
        bundle.add_file(f"{ROOT}/bundle/{entry['path']}", bundle_dir / entry["path"], executable=False)

    created = image_created(manifest)
    healthcheck = (cfg.python, "-s", f"/{ROOT}/boot.py", "--healthcheck")
    labels = {
        "org.opencontainers.image.title": version.model,
        "org.opencontainers.image.version": str(version.version),
        "org.opencontainers.image.description":
            f"{version.model} version {version.version}, served over the Open Inference Protocol V2",
        "org.opencontainers.image.created": created,
        "org.opencontainers.image.revision": bundle_digest,
        "org.opencontainers.image.base.name": base_name,
        f"{LABEL_PREFIX}.model.name": version.model,
        f"{LABEL_PREFIX}.model.version": str(version.version),
        f"{LABEL_PREFIX}.model.uri": version.uri,
        f"{LABEL_PREFIX}.model.format": manifest["format"],
        f"{LABEL_PREFIX}.bundle.digest": bundle_digest,
        f"{LABEL_PREFIX}.runtime": ",".join(f"{k}=={v}" for k, v in sorted(versions.items())),
        # podman reads HEALTHCHECK only from Docker-format configs; the container deployer reads this label.
        f"{LABEL_PREFIX}.healthcheck": json.dumps(list(healthcheck)),
    }
    if base_digest:
        labels["org.opencontainers.image.base.digest"] = base_digest
    labels.update(cfg.labels)
    env = {
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HOME": "/tmp",
        "MLOPS_HOME": "/tmp/mlops",
        "MLOPS_SERVER_MODULE": cfg.server_module,
    }
    entrypoint = (cfg.python, "-s", f"/{ROOT}/boot.py", "--bundle", f"/{ROOT}/bundle", "--name", version.model,
                  "--model-version", str(version.version), "--host", "0.0.0.0")
    plan = ImagePlan(
        model=version.model, version=version.version, bundle_digest=bundle_digest, python_version=py,
        requirements=tuple(str(r) for r in reqs), wheels=wheels, runtime_versions=versions,
        deps=deps, runtime=runtime, bundle=bundle, entrypoint=entrypoint, cmd=("--port", str(cfg.port)),
        env=env, labels=labels, user=cfg.user, port=cfg.port, created=created, healthcheck=healthcheck,
    )
    return plan, pool


# ------------------------------------------------------------------ reports
@attrs.define
class BuildReport:
    """What the last build did: per layer whether it came from the cache, and the push counts."""

    reference: str = ""
    digest: str = ""
    layout: str = ""
    layers: list[dict[str, Any]] = attrs.field(factory=list)
    wheels: int = 0
    pip_ran: bool = False
    push: PushStats | None = None
    #: The SBOM: its artifact manifest digest, file in the layout and component count (None: sbom off).
    sbom: dict[str, Any] | None = None
    #: The digest of the signature manifest (``sha256-<digest>.sig`` tag) when the push was signed.
    signature: str | None = None
    seconds: float = 0.0
    steps: list[tuple[str, float, str]] = attrs.field(factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = attrs.asdict(self, recurse=False)
        out["push"] = self.push.to_dict() if self.push else None
        out["steps"] = [{"step": s, "seconds": round(t, 3), "summary": m} for s, t, m in self.steps]
        return out


# ------------------------------------------------------------------ builder
class OciImageBuilder(ImageBuilder):
    """Builds model images as OCI layouts on disk, and pushes them when a repository is configured."""

    def __init__(self, config: OciBuilderConfig, context: BackendContext) -> None:
        self.config = config
        self.context = context
        self.cache = Path(context.home) / "cache" / "oci"
        self.store = BlobStore(self.cache / "blobs")
        self.output = Path(config.output) if config.output else Path(context.home) / "images"
        self.last_report: BuildReport | None = None

    # registry settings shared by base fetches and pushes
    def _client_kwargs(self) -> dict[str, Any]:
        return registry_client_kwargs(self.config)

    def check(self) -> str:
        """For ``mlops doctor``: the base resolves (or the local fallback can be made) and the push
        registry answers with the configured credentials. Raises with a fix when not."""
        cfg = self.config
        kwargs = {**self._client_kwargs(), "retries": 0}
        try:
            base = load_base(cfg.base, cfg.platform, self.store, self.cache, kwargs)
            base_note = f"base {base.name} ({base.digest[:19]})"
        except BackendUnavailableError as exc:
            if cfg.base_fallback != "local" or cfg.base.startswith("oci:"):
                raise BackendUnavailableError(
                    f"base {cfg.base} cannot be resolved: {exc}",
                    hint="make a local base with `mlops image base` and set the [builder] base it prints") from None
            import shutil

            if shutil.which("debootstrap") is None or os.geteuid() != 0:
                raise BackendUnavailableError(
                    f"base {cfg.base} is unreachable ({exc}) and the local fallback base needs root and debootstrap",
                    hint="make the base registry reachable, or apt-get install debootstrap and run "
                         "`mlops image base` as root") from None
            base_note = f"base {cfg.base} unreachable: builds use the local Debian base (`mlops image base`)"
        if cfg.repository:
            target = ImageReference.parse(f"{cfg.repository.rstrip('/')}/probe:latest")
            client = client_for(target, **kwargs)
            try:
                client.ping()
            finally:
                client.close()
            where = f"pushes to {cfg.repository} (reachable, credentials accepted)"
        else:
            where = "no push (layout on disk only)"
        return f"{base_note}; {where}; cache {self.cache}"

    def target_reference(self, version: ModelVersion) -> ImageReference | None:
        if not self.config.repository:
            return None
        tag = self.config.tag.format(version=version.version, model=version.model)
        return ImageReference.parse(f"{self.config.repository.rstrip('/')}/{version.model.lower()}:{tag}")

    def _layer(self, kind: str, key: str, tree: FileTree, progress: Progress, comment: str,
               python_version: str | None = None) -> tuple[Layer, bool]:
        """The layer for ``key`` from the cache, or written now. Returns (layer, from_cache).

        The cache key also holds everything else that changes the layer's bytes: the file
        times (``SOURCE_DATE_EPOCH``), the platform and the compression level.
        """
        from .bytecode import COMPILER_ID, can_compile_for, compile_tree

        mtime = source_date_epoch()
        compile_py = bool(python_version and self.config.compile_bytecode and can_compile_for(python_version))
        key = _key({"k": key, "mtime": mtime, "platform": self.config.platform, "gz": self.config.compression_level,
                    "comment": comment, "pyc": COMPILER_ID if compile_py else None})
        record = self.cache / "layers" / f"{kind}-{key}.json"
        if record.is_file():
            try:
                layer = Layer(**json.loads(record.read_text()))
                if self.store.has(layer.digest):
                    return layer, True
            except (ValueError, TypeError):
                pass
        if python_version and self.config.compile_bytecode:
            progress.start(f"bytecode {kind}")
            added = compile_tree(tree, python_version)
            progress.done(f"{added} .pyc files")
        progress.start(f"layer {kind}", tree.total_size())
        layer = write_layer(tree, self.store, mtime=mtime, compresslevel=self.config.compression_level,
                            comment=comment, on_bytes=progress.advance)
        progress.done(f"{len(tree)} files, {human_bytes(tree.total_size())} -> {human_bytes(layer.size)} gzip")
        record.parent.mkdir(parents=True, exist_ok=True)
        tmp = record.with_suffix(".tmp")
        tmp.write_text(json.dumps(layer.to_dict()))
        tmp.replace(record)
        return layer, False

    def _resolve_base(self, progress: Progress, kwargs: Mapping[str, Any]) -> BaseImage:
        """The configured base; with ``base_fallback = "local"``, the local debootstrap base when
        the configured one cannot be reached (a fresh machine without a public registry)."""
        cfg = self.config
        try:
            return load_base(cfg.base, cfg.platform, self.store, self.cache, kwargs)
        except BackendUnavailableError as exc:
            if cfg.base_fallback != "local" or cfg.base.startswith("oci:"):
                raise BackendUnavailableError(
                    str(exc), hint="make a local Python base with `mlops image base` and set the [builder] base it "
                                   "prints, or set base_fallback = \"local\"") from None
            from .localbase import base_reference

            try:
                reference = base_reference()
            except BackendUnavailableError as local_exc:
                raise BackendUnavailableError(
                    f"{exc}; the local fallback base cannot be made either: {local_exc}",
                    hint="make the base reachable (registry, [builder] username/password), or run as root with "
                         "debootstrap installed so `mlops image base` can make one") from None
            progress.note(f"{cfg.base} is unreachable ({exc}); using the local Debian base {reference} "
                          "(set [builder] base to choose another)")
            return load_base(reference, cfg.platform, self.store, self.cache, kwargs)

    def build(self, version: ModelVersion, bundle_dir: Path, *, push: bool = False) -> ImageRef:
        started = time.perf_counter()
        cfg = self.config
        progress = Progress(cfg.progress)
        target = self.target_reference(version)
        if push and target is None:
            raise ConfigError("cannot push: the oci builder has no repository configured",
                              hint="set [builder] repository = \"REGISTRY/PATH\" in the stack file "
                                   "(or MLOPS_BUILDER__REPOSITORY)")
        platforms = [p.strip() for p in cfg.platform.split(",") if p.strip()]
        if len(platforms) > 1:
            return self._build_index(version, Path(bundle_dir), platforms, target, push=push, started=started)
        report = BuildReport()
        kwargs = self._client_kwargs()

        progress.start("resolve base image")
        base = self._resolve_base(progress, kwargs)
        progress.done(f"{base.name} {base.digest[:19]}")
        plan, pool = plan_image(version, Path(bundle_dir), cfg, base.name, base.env, self.cache, progress,
                                base_digest=base.digest)
        try:
            wheel_key = _key({"v": _LAYER_FORMAT, "wheels": [[p.name, h] for p, h in zip(plan.wheels.wheels, plan.wheels.hashes)]})
            deps, deps_cached = self._layer("deps", wheel_key, plan.deps, progress,
                                            f"mlops-oci: {len(plan.wheels.wheels)} Python packages",
                                            python_version=plan.python_version)
        finally:
            pool.close()
        runtime, runtime_cached = self._layer("runtime", _key({"v": _LAYER_FORMAT, "t": plan.runtime.fingerprint()}),
                                              plan.runtime, progress, "mlops-oci: runtime " +
                                              ", ".join(f"{k} {v}" for k, v in sorted(plan.runtime_versions.items())),
                                              python_version=plan.python_version)
        bundle, bundle_cached = self._layer("bundle", _key({"v": _LAYER_FORMAT, "bundle": plan.bundle_digest,
                                                            "t": [(e.path, e.size) for e in plan.bundle.entries()]}),
                                            plan.bundle, progress, f"mlops-oci: bundle {plan.bundle_digest}")
        fetch_base_layers(base, self.store, kwargs, progress)

        ours = [deps, runtime, bundle]
        config_doc = image_config(base, plan, ours)
        config_bytes = canonical_json(config_doc)
        config_digest = self.store.put_bytes(config_bytes)
        base_layers = [{**d, "mediaType": _DOCKER_LAYER_TYPES.get(d.get("mediaType", ""), d.get("mediaType"))}
                       for d in base.layers]
        manifest_doc = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": len(config_bytes)},
            "layers": [{k: d[k] for k in ("mediaType", "digest", "size")} for d in base_layers]
            + [layer.descriptor() for layer in ours],
            "annotations": {"org.opencontainers.image.base.name": base.name,
                            "org.opencontainers.image.base.digest": base.digest},
        }
        manifest_bytes = canonical_json(manifest_doc)
        digest = self.store.put_bytes(manifest_bytes)
        tag = (target.tag if target else cfg.tag.format(version=version.version, model=version.model))
        progress.start("write layout")
        layout = write_layout(self.output / version.model / tag, self.store, manifest_bytes,
                              [config_digest] + [d["digest"] for d in manifest_doc["layers"]], ref_name=tag)
        progress.done(str(layout))

        referrers: list[bytes] = []
        if cfg.sbom:
            progress.start("sbom")
            artifact, report.sbom = self._sbom(version, plan, base, digest, manifest_bytes, layout)
            referrers.append(artifact)
            progress.done(f"{report.sbom['components']} components")

        reference = f"{version.model.lower()}:{tag}"
        if push:
            assert target is not None
            key = self._signing_key()
            stats = self.push(manifest_bytes, target, base=base, progress=progress, referrers=referrers)
            report.signature = self._sign(target, digest, key)
            report.push = stats
            reference = str(target)
        size = len(config_bytes) + sum(int(d["size"]) for d in manifest_doc["layers"])
        report.reference, report.digest, report.layout = reference, digest, str(layout)
        report.layers = [{"name": n, "digest": l.digest, "diff_id": l.diff_id, "size": l.size, "cached": c}
                         for n, l, c in (("deps", deps, deps_cached), ("runtime", runtime, runtime_cached),
                                         ("bundle", bundle, bundle_cached))]
        report.wheels = len(plan.wheels.wheels)
        report.pip_ran = plan.wheels.resolved_now
        report.seconds = time.perf_counter() - started
        report.steps = progress.steps
        self.last_report = report
        return ImageRef(reference=reference, digest=digest, layout=str(layout), size=size, labels=plan.labels)

    def _build_index(self, version: ModelVersion, bundle_dir: Path, platforms: list[str],
                     target: ImageReference | None, *, push: bool, started: float) -> ImageRef:
        """Several platforms: one image per platform (each from the base's entry for it), then an image index.

        Every platform's image is exactly what a single-platform build makes (same cache,
        same digest); the index lists them with their platforms, and is what the tag names.
        """
        import tempfile

        from .layers import INDEX_MEDIA_TYPE

        original, output = self.config, self.output
        images: list[tuple[str, bytes, BuildReport]] = []
        scratch = Path(tempfile.mkdtemp(prefix=".index-", dir=self.cache))
        try:
            self.output = scratch  # the platforms' own layouts are not kept: the index's layout holds them
            for platform in platforms:
                self.config = attrs.evolve(original, platform=platform, repository=None)
                one = self.build(version, bundle_dir, push=False)
                assert self.last_report is not None
                images.append((platform, self.store.read_bytes(one.digest), self.last_report))
        finally:
            self.config, self.output = original, output
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
        descriptors = []
        blobs: list[str] = []
        for platform, manifest_bytes, _ in images:
            manifest = json.loads(manifest_bytes)
            config = json.loads(self.store.read_bytes(manifest["config"]["digest"]))
            plat = {"architecture": config["architecture"], "os": config["os"]}
            if config.get("variant"):
                plat["variant"] = config["variant"]
            descriptors.append({"mediaType": MANIFEST_MEDIA_TYPE, "digest": "sha256:" + hashlib.sha256(manifest_bytes).hexdigest(),
                                "size": len(manifest_bytes), "platform": plat})
            blobs += [manifest["config"]["digest"]] + [d["digest"] for d in manifest["layers"]]
            blobs.append(descriptors[-1]["digest"])
        index_bytes = canonical_json({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": descriptors})
        digest = self.store.put_bytes(index_bytes)
        tag = target.tag if target else self.config.tag.format(version=version.version, model=version.model)
        layout = write_layout(self.output / version.model / tag, self.store, index_bytes, blobs, ref_name=tag,
                              media_type=INDEX_MEDIA_TYPE)
        report = BuildReport(digest=digest, layout=str(layout), wheels=sum(r.wheels for _, _, r in images),
                             pip_ran=any(r.pip_ran for _, _, r in images),
                             layers=[{**l, "platform": p} for p, _, r in images for l in r.layers])
        reference = f"{version.model.lower()}:{tag}"
        if push:
            assert target is not None
            progress = Progress(self.config.progress)
            client_kwargs = self._client_kwargs()
            totals = PushStats()
            for platform, manifest_bytes, one in images:
                referrers = [self.store.read_bytes(one.sbom["digest"])] if one.sbom else []
                stats = push_image(self.store, manifest_bytes,
                                   target.with_digest("sha256:" + hashlib.sha256(manifest_bytes).hexdigest()),
                                   client_kwargs, progress=progress, referrers=referrers)
                for field in ("uploaded", "mounted", "existing"):
                    getattr(totals, field).extend(getattr(stats, field))
                totals.bytes_uploaded += stats.bytes_uploaded
                totals.requests += stats.requests
            key = self._signing_key()
            client = client_for(target, **client_kwargs)
            try:
                client.put_manifest(target.repository, target.reference, index_bytes, INDEX_MEDIA_TYPE)
            finally:
                client.close()
            report.push = totals
            report.signature = self._sign(target, digest, key)
            reference = str(target)
        report.reference, report.seconds = reference, time.perf_counter() - started
        self.last_report = report
        labels = json.loads(self.store.read_bytes(json.loads(images[0][1])["config"]["digest"]))["config"]["Labels"]
        size = len(index_bytes) + sum(len(m) for _, m, _ in images)
        return ImageRef(reference=reference, digest=digest, layout=str(layout), size=size, labels=labels)

    def _signing_key(self) -> Any:
        """The configured signing key (loaded before the push, so a bad key fails before anything is sent)."""
        if not self.config.signing_key:
            return None
        from .signing import load_signing_key

        return load_signing_key(self.config.signing_key, self.config.signing_key_password)

    def _sign(self, target: ImageReference, digest: str, key: Any) -> str | None:
        if key is None:
            return None
        from .signing import sign_pushed_image

        client = client_for(target, **self._client_kwargs())
        try:
            return sign_pushed_image(client, target.repository, digest, key)
        finally:
            client.close()

    def _sbom(self, version: ModelVersion, plan: ImagePlan, base: BaseImage, digest: str, manifest_bytes: bytes,
              layout: Path) -> tuple[bytes, dict[str, Any]]:
        """The image's SBOM: written into the layout as ``sbom.cdx.json``; (artifact manifest, report entry)."""
        from ._version import __version__
        from .sbom import cyclonedx_sbom, dpkg_packages, sbom_manifest

        memo = self.cache / "sbom" / f"dpkg-{base.digest.split(':', 1)[1]}.json"
        try:
            debs = json.loads(memo.read_text())
        except (OSError, ValueError):
            debs = dpkg_packages(self.store.path(d["digest"]) for d in base.layers)
            memo.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo.with_suffix(".tmp")
            tmp.write_text(json.dumps(debs))
            tmp.replace(memo)
        sbom = cyclonedx_sbom(image_name=version.model, image_version=str(version.version), image_digest=digest,
                              created=plan.created, wheels=zip(plan.wheels.wheels, plan.wheels.hashes),
                              runtime=plan.runtime_versions, debs=debs, tool_version=__version__)
        (layout / "sbom.cdx.json").write_bytes(sbom)
        artifact = sbom_manifest(self.store, sbom, {"mediaType": MANIFEST_MEDIA_TYPE, "digest": digest,
                                                    "size": len(manifest_bytes)}, plan.created)
        self.store.put_bytes(artifact)
        entry = {"digest": "sha256:" + hashlib.sha256(artifact).hexdigest(),
                 "file": str(layout / "sbom.cdx.json"), "components": len(json.loads(sbom)["components"])}
        return artifact, entry

    def push(self, manifest_bytes: bytes, target: ImageReference, *, base: BaseImage | None = None,
             progress: Progress | None = None, referrers: list[bytes] | None = None) -> PushStats:
        return push_image(self.store, manifest_bytes, target, self._client_kwargs(), base=base,
                          progress=progress or Progress(self.config.progress), referrers=referrers)


def push_image(store: BlobStore, manifest_bytes: bytes, target: ImageReference, client_kwargs: Mapping[str, Any], *,
               base: BaseImage | None = None, progress: Progress | None = None,
               state_dir: Path | None = None, referrers: list[bytes] | None = None) -> PushStats:
    """Push an image whose blobs are in ``store``; base layers are mounted when on the same registry.

    ``state_dir`` (default: next to the store) keeps the upload sessions in flight, so a
    killed push resumes, and which repository got each blob, for mounts.
    """
    progress = progress or Progress()
    manifest = json.loads(manifest_bytes)
    base_digests = {d["digest"] for d in (base.layers if base else [])}
    mount_from = base.registry.repository if (base and base.registry and base.registry.registry == target.registry) else None
    # Upload sessions in flight (so a killed push resumes) and which repository got each blob (mounts).
    client = client_for(target, **{"state_dir": state_dir or store.root.parent / "registry-state", **client_kwargs})
    try:
        blobs = manifest["layers"] + [manifest["config"]]
        progress.start(f"push {target}", sum(int(b["size"]) for b in blobs))
        for desc in blobs:
            digest = desc["digest"]
            opener = (lambda d=digest: open(store.path(d), "rb")) if store.has(digest) else None
            client.push_blob(target.repository, digest, opener, int(desc["size"]),
                             mount_from=mount_from if digest in base_digests else None, on_bytes=progress.advance)
        client.put_manifest(target.repository, target.reference, manifest_bytes, MANIFEST_MEDIA_TYPE)
        subject = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
        for artifact in referrers or []:
            from .sbom import attach_referrer

            doc = json.loads(artifact)
            for desc in [doc["config"], *doc["layers"]]:
                client.push_blob(target.repository, desc["digest"], lambda d=desc["digest"]: open(store.path(d), "rb"),
                                 int(desc["size"]))
            attach_referrer(client, target.repository, artifact, subject)
        stats = client.stats
        progress.done(f"{len(stats.uploaded)} uploaded ({human_bytes(stats.bytes_uploaded)}), "
                      f"{len(stats.existing)} already there, {len(stats.mounted)} mounted")
        return stats
    finally:
        client.close()


def registry_client_kwargs(config: OciBuilderConfig) -> dict[str, Any]:
    """The registry client's settings from the ``oci`` builder's (credentials, plain_http, TLS, retries)."""
    verify: bool | str = config.tls_verify
    if verify.lower() in ("true", "1", "yes"):
        verify = True
    elif verify.lower() in ("false", "0", "no"):
        verify = False
    return {"username": config.username, "password": config.password, "plain_http": config.plain_http,
            "retries": config.retries, "chunk_size": config.chunk_size, "verify": verify}


def _key(data: Any) -> str:
    return hashlib.sha256(canonical_json(data)).hexdigest()[:40]


def image_config(base: BaseImage, plan: ImagePlan, layers: list[Layer]) -> dict[str, Any]:
    """The image config: the base's, with our layers, entrypoint, user, env and labels."""
    created = plan.created
    base_cfg = dict(base.config.get("config") or {})
    env = base.env
    env.update(plan.env)
    labels = dict(base_cfg.get("Labels") or {})
    labels.update(plan.labels)
    runtime_cfg = {k: v for k, v in base_cfg.items() if k not in ("Healthcheck", "OnBuild", "Volumes", "StopSignal")}
    runtime_cfg.update({
        "Env": [f"{k}={v}" for k, v in env.items()],
        "Entrypoint": list(plan.entrypoint),
        "Cmd": list(plan.cmd),
        "User": plan.user,
        "WorkingDir": plan.workdir,
        "Labels": labels,
        "ExposedPorts": {f"{plan.port}/tcp": {}},
        "StopSignal": "SIGTERM",
    })
    if plan.healthcheck:
        runtime_cfg["Healthcheck"] = {"Test": ["CMD", *plan.healthcheck], **HEALTHCHECK_TIMING}
    history = list(base.config.get("history") or [])
    history += [{"created": created, "created_by": layer.comment or "mlops-oci"} for layer in layers]
    doc: dict[str, Any] = {
        "architecture": base.config.get("architecture", "amd64"),
        "os": base.config.get("os", "linux"),
        "created": created,
        "config": runtime_cfg,
        "rootfs": {"type": "layers",
                   "diff_ids": list((base.config.get("rootfs") or {}).get("diff_ids") or []) + [l.diff_id for l in layers]},
        "history": history,
    }
    for key in ("variant", "os.version", "os.features"):
        if key in base.config:
            doc[key] = base.config[key]
    return doc
