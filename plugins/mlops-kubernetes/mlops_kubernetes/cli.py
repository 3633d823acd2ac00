"""``mlops k8s manifests``: the deployer's objects as deterministic YAML for GitOps (loaded only when it runs).

Same renderer as ``mlops deploy``: :func:`write_manifests` builds the same
:class:`~mlops_kubernetes.render.RenderInput` the deployer builds, minus the
deployer's own bookkeeping annotations (``mlops.dev/render`` and
``mlops.dev/previous-version``), which only make sense on a live object.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping

from mlops_core.entities import DeploymentSpec, ImageRef
from mlops_core.errors import InvalidInputError

from .config import KubernetesDeployerConfig, with_options
from .render import ApiVersions, manifest_files, render

__all__ = ["write_manifests", "manifests_command"]

_OUR_FILE = re.compile(r"^\d\d-[a-z]+-[a-z0-9-]+\.yaml$")


def _parse_image(value: str) -> ImageRef:
    reference, sep, digest = value.partition("@")
    if not sep or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        raise InvalidInputError(f"--image {value!r} is not pinned by digest",
                                hint="give REGISTRY/REPOSITORY@sha256:<64 hex> (see `mlops image inspect`)")
    return ImageRef(reference=reference, digest=digest)


def write_manifests(uri: str, output: str | os.PathLike[str], *, flavor: str | None = None, name: str | None = None,
                    namespace: str | None = None, image: str | None = None,
                    options: Mapping[str, Any] | None = None, cluster: bool = False, stack: Any = None) -> list[Path]:
    """Render the objects for ``uri`` and write one YAML file per object into ``output``; returns the paths.

    Files are written atomically, and files of an earlier run that the new render no
    longer has (same ``NN-kind-name.yaml`` pattern) are removed, so the folder holds
    exactly this render.
    """
    from mlops_core import api
    from mlops_core.entities import validate_model_name

    s = stack or api.get_stack()
    config = _stack_config(s)
    overrides: dict[str, Any] = dict(options or {})
    if flavor:
        overrides["flavor"] = flavor
    if namespace:
        overrides["namespace"] = namespace
    config = with_options(config, overrides)
    version, path = api.resolve_bundle(uri, stack=s)
    name = validate_model_name(name or version.model)
    built = _parse_image(image) if image else s.builder.build(version, path, push=True)
    spec = DeploymentSpec(name=name, model=version.model, version=version.version, bundle_path=str(path),
                          image=built, options={})
    if cluster:
        from .deployer import KubernetesDeployer

        deployer = s.deployer if isinstance(s.deployer, KubernetesDeployer) else None
        if deployer is None:
            from mlops_core.errors import ConfigError

            raise ConfigError("--cluster needs [deployer] backend = \"kubernetes\"",
                              hint="configure the kubernetes deployer, or drop --cluster for current API versions")
        apis = deployer.api_versions(config)
    else:
        apis = ApiVersions(service_monitor=bool(config.service_monitor))
    from .deployer import render_input

    inp = render_input(spec, config, apis)
    files = manifest_files(render(inp))
    return _write_folder(Path(output), files)


def _stack_config(stack: Any) -> KubernetesDeployerConfig:
    """The stack's kubernetes deployer settings (without connecting), or the defaults."""
    from mlops_core.plugins import make_config

    cc = stack.config.components.get("deployer")
    if cc is None or cc.backend != "kubernetes":
        return KubernetesDeployerConfig()
    return make_config(KubernetesDeployerConfig, cc.settings, "deployer backend 'kubernetes'")


def _write_folder(folder: Path, files: Mapping[str, str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fname, text in files.items():
        fd, tmp = tempfile.mkstemp(prefix=f".{fname}.", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, folder / fname)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(folder / fname)
    for stale in folder.iterdir():
        if _OUR_FILE.match(stale.name) and stale.name not in files:
            stale.unlink()
    return written


def manifests_command(args: Any) -> int:
    options: dict[str, str] = {}
    for pair in args.option or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"expected KEY=VALUE, got {pair!r}", hint="for example --option replicas=3")
        options[key] = value
    paths = write_manifests(args.uri, args.output, flavor=args.flavor, name=args.name, namespace=args.namespace,
                            image=args.image, options=options, cluster=args.cluster)
    if args.json:
        print(json.dumps({"files": [str(p) for p in paths]}, indent=2))
    else:
        for p in paths:
            print(p)
    return 0
