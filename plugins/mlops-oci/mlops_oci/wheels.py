"""Python dependencies for the image: requirements, wheel resolution for the target, file trees.

* :func:`requirement_set` pins the model's requirements (from the bundle manifest)
  and the runtime's dependencies, and walks their dependency closure through the
  locally installed metadata, pinning each to the installed version: the image
  gets what the model was trained and tested with, and equal inputs give equal
  layers.
* :func:`resolve_wheels` asks ``pip download --only-binary=:all:`` for wheels of
  the *target* platform and Python (never the build machine's), caches them under
  the stack home, and remembers each resolution so a warm build runs no pip at all.
  pip runs with the build machine's own pip configuration (``pip.conf``,
  ``PIP_FIND_LINKS``, ``PIP_EXTRA_INDEX_URL``...) plus the builder's
  ``index_url``/``extra_index_urls``/``find_links``.
* Local version labels (``torch==2.13.0+cpu``) are kept exactly: PEP 440's
  ``==2.13.0`` also admits other builds of 2.13.0 (PyPI's CUDA torch, several
  GB), so dropping the label would put a different build into the image than
  the one the model was saved and tested with. Public indexes never serve local
  versions, so such a pin resolves only from where that build came from (a
  wheel folder or the vendor's index); when it cannot, the error names the
  label and says how to point the builder there.
* :func:`wheel_tree` unpacks wheels into a layer tree (a wheel is a zip; no code
  runs); :func:`runtime_tree` copies mlops-core, the server and any format plugin
  the bundle needs, with their metadata and entry points.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import attrs

from mlops_core.bundle import sha256_file
from mlops_core.errors import InvalidInputError, MlopsError

from .layers import FileTree, canonical_json

__all__ = ["TargetPlatform", "Requirement", "requirement_set", "resolve_wheels", "wheel_tree", "runtime_tree",
           "WheelSet", "normalize_name", "local_labelled", "BOOT_SCRIPT"]

_RESOLVER_VERSION = 1
_ARCH = {"amd64": "x86_64", "arm64": "aarch64", "ppc64le": "ppc64le", "s390x": "s390x", "386": "i686"}


def normalize_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@attrs.frozen
class TargetPlatform:
    """The OS, CPU and Python the image runs, as pip needs them."""

    os: str = "linux"
    architecture: str = "amd64"
    python_version: str = "3.11"
    glibc: str = "2.28"

    @classmethod
    def parse(cls, platform: str, python_version: str, glibc: str) -> "TargetPlatform":
        os_name, _, arch = platform.partition("/")
        arch = arch.split("/")[0]
        if os_name != "linux" or arch not in _ARCH:
            raise InvalidInputError(f"unsupported target platform {platform!r}",
                                    hint=f"use linux/ARCH with ARCH one of {', '.join(sorted(_ARCH))}")
        if not re.fullmatch(r"3\.[0-9]+", python_version):
            raise InvalidInputError(f"target Python version {python_version!r} is not MAJOR.MINOR",
                                    hint="for example python_version = \"3.11\"")
        if not re.fullmatch(r"2\.[0-9]+", glibc):
            raise InvalidInputError(f"glibc version {glibc!r} is not 2.N", hint="for example glibc = \"2.36\"")
        return cls(os_name, arch, python_version, glibc)

    @property
    def pip_platforms(self) -> list[str]:
        """Every manylinux tag the target's glibc accepts, newest first."""
        arch = _ARCH[self.architecture]
        minor = int(self.glibc.split(".")[1])
        tags = [f"manylinux_2_{m}_{arch}" for m in range(minor, 4, -1)]
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
        tags += [f"{name}_{arch}" for m, name in legacy.items() if m <= minor]
        return tags

    @property
    def marker_environment(self) -> dict[str, str]:
        return {
            "python_version": self.python_version,
            "python_full_version": self.python_version + ".0",
            "sys_platform": "linux",
            "platform_system": "Linux",
            "platform_machine": _ARCH[self.architecture],
            "os_name": "posix",
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            "platform_release": "",
            "platform_version": "",
            "implementation_version": self.python_version + ".0",
        }

    @property
    def site_packages_hint(self) -> str:
        return f"python{self.python_version}"


@attrs.frozen(order=True)
class Requirement:
    name: str
    spec: str  # "==1.2.3" or a raw specifier such as ">=1.0"

    def __str__(self) -> str:
        return f"{self.name}{self.spec}"


def _installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def requirement_set(
    model_requirements: Sequence[Mapping[str, str]],
    runtime_distributions: Sequence[str],
    target: TargetPlatform,
    *,
    extra: Sequence[str] = (),
) -> list[Requirement]:
    """Pinned requirements for the image's dependency layer.

    The runtime distributions themselves are excluded (they go into the runtime
    layer); their dependencies, the model's requirements and their closure are
    pinned to the installed versions. A requirement with nothing installed keeps
    its specifier and pip resolves it.
    """
    from packaging.markers import default_environment
    from packaging.requirements import InvalidRequirement
    from packaging.requirements import Requirement as PkgRequirement

    env = {**default_environment(), **target.marker_environment}
    runtime = {normalize_name(d) for d in runtime_distributions}
    pins: dict[str, Requirement] = {}
    queue: list[tuple[str, str, frozenset[str]]] = []  # (name, fallback spec, extras)

    for req in model_requirements:
        name = str(req.get("name", ""))
        if not name:
            continue
        version = req.get("version")
        queue.append((name, f"=={version}" if version else "", frozenset()))
    for raw in extra:
        try:
            parsed = PkgRequirement(raw)
        except InvalidRequirement as exc:
            raise InvalidInputError(f"invalid extra requirement {raw!r}: {exc}", hint="use pip's syntax, e.g. pandas>=2") from None
        queue.append((parsed.name, str(parsed.specifier), frozenset(parsed.extras)))
    for dist_name in runtime_distributions:
        for raw in _requires(dist_name):
            queue.extend(_expand(raw, env, frozenset(), PkgRequirement))

    seen: set[tuple[str, frozenset[str]]] = set()
    while queue:
        name, spec, extras = queue.pop(0)
        key = normalize_name(name)
        if key in runtime or (key, extras) in seen:
            continue
        seen.add((key, extras))
        version = _installed_version(name)
        if key not in pins:
            pins[key] = Requirement(key, f"=={version}" if version else spec)
        elif version is None and spec and not pins[key].spec:
            pins[key] = Requirement(key, spec)
        if version is None:
            continue  # unknown locally: pip resolves its dependencies
        for raw in _requires(name):
            queue.extend(_expand(raw, env, extras, PkgRequirement))
    return sorted(pins.values())


def _requires(dist_name: str) -> list[str]:
    try:
        return list(metadata.requires(dist_name) or [])
    except metadata.PackageNotFoundError:
        return []


def _expand(raw: str, env: Mapping[str, str], extras: frozenset[str], parse: Any) -> list[tuple[str, str, frozenset[str]]]:
    try:
        req = parse(raw)
    except Exception:
        return []
    if req.marker is not None:
        wanted = [""] + sorted(extras)
        if not any(req.marker.evaluate({**env, "extra": e}) for e in wanted):
            return []
    return [(req.name, str(req.specifier), frozenset(req.extras))]


# ------------------------------------------------------------------ resolution
@attrs.frozen
class WheelSet:
    """Resolved wheels (paths in the cache) and whether pip had to run."""

    wheels: tuple[Path, ...]
    resolved_now: bool
    key: str
    hashes: tuple[str, ...] = ()


def resolve_wheels(
    requirements: Sequence[Requirement],
    target: TargetPlatform,
    cache: Path,
    *,
    index_url: str | None = None,
    extra_index_urls: Sequence[str] = (),
    find_links: Sequence[str] = (),
    pip_args: Sequence[str] = (),
    python: str | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> WheelSet:
    """Wheels for ``requirements`` on ``target``, from the cache or ``pip download``."""
    options = {"index_url": index_url, "extra_index_urls": list(extra_index_urls), "pip_args": list(pip_args)}
    if find_links:  # only when set, so resolutions cached before the option existed stay valid
        options["find_links"] = list(find_links)
    key = hashlib.sha256(canonical_json({
        "v": _RESOLVER_VERSION, "requirements": [str(r) for r in requirements],
        "target": attrs.asdict(target), "options": options,
    })).hexdigest()
    wheel_dir = cache / "wheels"
    lock_path = cache / "resolutions" / f"{key}.json"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    if lock_path.is_file():
        try:
            lock = json.loads(lock_path.read_text())
            paths = [wheel_dir / w["file"] for w in lock["wheels"]]
            if all(p.is_file() and p.stat().st_size == w["size"] for p, w in zip(paths, lock["wheels"])):
                return WheelSet(tuple(paths), False, key, tuple(w["sha256"] for w in lock["wheels"]))
        except (ValueError, KeyError, TypeError):
            pass
    if not requirements:
        lock_path.write_text(json.dumps({"wheels": []}))
        return WheelSet((), True, key)
    with tempfile.TemporaryDirectory(prefix="mlops-wheels-", dir=cache) as tmp:
        cmd = [python or sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input",
               "--only-binary=:all:", "--implementation", "cp", "--python-version", target.python_version,
               "--progress-bar", "off", "-d", tmp]
        for tag in target.pip_platforms:
            cmd += ["--platform", tag]
        if index_url:
            cmd += ["--index-url", index_url]
        for url in extra_index_urls:
            cmd += ["--extra-index-url", url]
        # Existing cached wheels satisfy pip without downloading them again.
        for link in [*find_links, str(wheel_dir)]:
            cmd += ["--find-links", link]
        cmd += list(pip_args) + [str(r) for r in requirements]
        log(f"pip download {len(requirements)} requirements for {target.os}/{target.architecture} cp{target.python_version}")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-12:])
            raise MlopsError(
                f"could not resolve wheels for {target.os}/{target.architecture} Python {target.python_version}:\n{tail}",
                hint=_local_label_hint(requirements) or (
                    "every requirement needs a wheel for the target platform (no source builds happen in an image "
                    "build); pin a version that has one, set glibc/python_version, or point index_url at a mirror"),
            )
        entries = []
        for name in sorted(os.listdir(tmp)):
            src = Path(tmp, name)
            if not name.endswith(".whl"):
                raise MlopsError(f"pip produced {name}, which is not a wheel", hint="report this as a bug")
            dest = wheel_dir / name
            if not dest.is_file():
                shutil.move(str(src), dest)
            entries.append({"file": name, "size": dest.stat().st_size, "sha256": sha256_file(dest)[0]})
    tmp_lock = lock_path.with_suffix(".tmp")
    tmp_lock.write_text(json.dumps({"requirements": [str(r) for r in requirements], "wheels": entries}, indent=1))
    os.replace(tmp_lock, lock_path)
    return WheelSet(tuple(wheel_dir / e["file"] for e in entries), True, key, tuple(e["sha256"] for e in entries))


def local_labelled(requirements: Sequence[Requirement]) -> list[Requirement]:
    """The requirements pinned to a local version (``==2.13.0+cpu``), which no public index serves."""
    return [r for r in requirements if r.spec.startswith("==") and "+" in r.spec]


def _local_label_hint(requirements: Sequence[Requirement]) -> str | None:
    local = local_labelled(requirements)
    if not local:
        return None
    names = ", ".join(str(r) for r in local)
    return (f"{names} carries a local version label (after '+'): public indexes such as PyPI never serve such "
            "builds, and the label is kept so the image gets the build the model was saved with, not another one "
            "(for torch, PyPI's multi-GB CUDA build). Point the builder where that build came from: "
            "find_links = [\"/folder/with/the/wheel\"] or extra_index_urls = [\"https://download.pytorch.org/whl/cpu\"] "
            "in [builder] (pip's own configuration, pip.conf or PIP_FIND_LINKS, is read too)")


# ------------------------------------------------------------------ file trees
class ZipPool:
    """Open wheel archives, kept open while a layer is written; close() at the end."""

    def __init__(self) -> None:
        self._zips: dict[Path, zipfile.ZipFile] = {}

    def get(self, path: Path) -> zipfile.ZipFile:
        zf = self._zips.get(path)
        if zf is None:
            zf = self._zips[path] = zipfile.ZipFile(path)
        return zf

    def close(self) -> None:
        for zf in self._zips.values():
            zf.close()
        self._zips.clear()


def wheel_tree(wheels: Iterable[Path], prefix: str, pool: ZipPool) -> FileTree:
    """Unpack ``wheels`` (in name order; a later wheel wins a clash) into ``prefix`` as site-packages.

    ``*.data/purelib`` and ``platlib`` join site-packages; ``scripts``,
    ``headers`` and ``data`` are left out (the server needs none of them).
    """
    tree = FileTree()
    for wheel in sorted(wheels, key=lambda p: p.name):
        zf = pool.get(wheel)
        for info in zf.infolist():
            name = info.filename
            if name.endswith("/"):
                continue
            parts = name.split("/")
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    continue
                name = "/".join(parts[2:])
            mode = (info.external_attr >> 16) & 0o777
            tree.add_opener(f"{prefix}/{name}", lambda zf=zf, info=info: zf.open(info), info.file_size,
                            executable=bool(mode & 0o111))
    return tree


def _dist_packages(dist: metadata.Distribution) -> list[str]:
    top = (dist.read_text("top_level.txt") or "").split()
    if top:
        return top
    name = normalize_name(dist.metadata["Name"])
    return sorted(pkg for pkg, owners in metadata.packages_distributions().items()
                  if name in {normalize_name(o) for o in owners})


def _skip_runtime(path: Path) -> bool:
    return path.name == "__pycache__" or path.suffix in (".pyc", ".pyo") or path.name.endswith(".egg-info")


def runtime_tree(distributions: Sequence[str], prefix: str, boot: bytes) -> tuple[FileTree, dict[str, str]]:
    """Copy the runtime distributions' packages (and a minimal dist-info) under ``prefix``.

    Works for regular and editable installs alike: files come from where Python
    imports each package. Returns the tree and {distribution: version}.
    """
    tree = FileTree()
    versions: dict[str, str] = {}
    for dist_name in distributions:
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            raise MlopsError(f"the image needs {dist_name}, which is not installed here",
                             hint=f"pip install {dist_name} (or remove it from runtime_distributions)") from None
        version = dist.version
        versions[dist_name] = version
        packages = _dist_packages(dist)
        if not packages:
            raise MlopsError(f"cannot find the packages of {dist_name}", hint="reinstall it")
        for pkg in packages:
            spec = importlib.util.find_spec(pkg)
            if spec is None:
                raise MlopsError(f"package {pkg} of {dist_name} cannot be imported", hint=f"reinstall {dist_name}")
            if spec.submodule_search_locations:
                folder = Path(list(spec.submodule_search_locations)[0])
                tree.add_tree(f"{prefix}/{pkg}", folder, skip=_skip_runtime)
            elif spec.origin:
                tree.add_file(f"{prefix}/{Path(spec.origin).name}", Path(spec.origin))
        info = f"{prefix}/{re.sub(r'[-.]+', '_', dist.metadata['Name'])}-{version}.dist-info"
        tree.add_bytes(f"{info}/METADATA", (dist.read_text("METADATA") or
                                              f"Metadata-Version: 2.1\nName: {dist.metadata['Name']}\nVersion: {version}\n").encode())
        eps = dist.read_text("entry_points.txt")
        if eps:
            tree.add_bytes(f"{info}/entry_points.txt", eps.encode())
        tree.add_bytes(f"{info}/top_level.txt", ("\n".join(packages) + "\n").encode())
        tree.add_bytes(f"{info}/INSTALLER", b"mlops-oci\n")
    tree.add_bytes(f"{prefix.rsplit('/', 1)[0]}/boot.py", boot)
    return tree, versions


# Runs inside the image: makes the two site folders importable (with .pth files and
# entry points), ahead of the base image's own site-packages, then starts the server.
BOOT_SCRIPT = '''\
"""Start the model server with the image's own site folders ahead of the base image's packages."""
import os
import runpy
import site
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if sys.argv[1:2] == ["--healthcheck"]:
    # The image's HEALTHCHECK: ask the server (PID 1, whose --port we read) whether it is ready.
    import urllib.request
    try:
        with open("/proc/1/cmdline", "rb") as f:
            args = f.read().decode().split("\\0")
        port = args[args.index("--port") + 1] if "--port" in args else "8080"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5) as resp:
            sys.exit(0 if resp.status == 200 else 1)
    except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy"
        print(f"unhealthy: {exc}", file=sys.stderr)
        sys.exit(1)
before = list(sys.path)
for folder in ("runtime", "site-packages"):
    site.addsitedir(os.path.join(HERE, folder))
ours = [p for p in sys.path if p not in before]
base_sites = set(site.getsitepackages() + [site.getusersitepackages()])
rest = [p for p in before if p not in base_sites]
sys.path[:] = rest + ours + [p for p in before if p in base_sites]
module = os.environ.get("MLOPS_SERVER_MODULE", "mlops_server")
sys.argv = [module] + sys.argv[1:]
runpy.run_module(module, run_name="__main__", alter_sys=True)
'''
