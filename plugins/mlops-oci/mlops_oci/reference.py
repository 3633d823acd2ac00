"""Image references: ``[registry[:port]/]repository[:tag][@sha256:...]`` and ``oci:PATH[:tag]``."""

from __future__ import annotations

import re

import attrs

from mlops_core.errors import InvalidInputError

__all__ = ["ImageReference", "DOCKER_HUB", "is_loopback"]

DOCKER_HUB = "registry-1.docker.io"
_REPO = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]")
    return name in ("localhost", "::1") or name.startswith("127.")


@attrs.frozen
class ImageReference:
    """A parsed registry reference. ``reference`` is the digest if present, else the tag."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, ref: str) -> "ImageReference":
        original = ref
        if not isinstance(ref, str) or not ref or ref != ref.strip():
            raise InvalidInputError(f"invalid image reference {original!r}", hint="use REGISTRY/REPOSITORY:TAG")
        digest = None
        if "@" in ref:
            ref, digest = ref.split("@", 1)
            if not _DIGEST.fullmatch(digest):
                raise InvalidInputError(f"invalid digest in image reference {original!r}", hint="use @sha256:<64 hex>")
        tag = None
        last = ref.rsplit("/", 1)[-1]
        if ":" in last:
            ref, tag = ref.rsplit(":", 1)
            if not _TAG.fullmatch(tag):
                raise InvalidInputError(f"invalid tag {tag!r} in image reference {original!r}",
                                        hint="tags are up to 128 letters, digits, '_', '.', '-'")
        first, _, rest = ref.partition("/")
        if rest and ("." in first or ":" in first or first == "localhost"):
            registry, repository = first, rest
        else:
            registry, repository = DOCKER_HUB, ref
            if "/" not in repository:
                repository = f"library/{repository}"
        if registry in ("docker.io", "index.docker.io"):
            registry = DOCKER_HUB
        if not _REPO.fullmatch(repository):
            raise InvalidInputError(f"invalid repository {repository!r} in image reference {original!r}",
                                    hint="repositories are lowercase path components of letters, digits, '.', '_', '-'")
        if tag is None and digest is None:
            tag = "latest"
        return cls(registry, repository, tag, digest)

    @property
    def reference(self) -> str:
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> "ImageReference":
        return attrs.evolve(self, digest=digest)

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out
