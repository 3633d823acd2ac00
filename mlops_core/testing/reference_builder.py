"""A reproducible tarball builder: the kit's reference :class:`~mlops_core.interfaces.ImageBuilder`.

The "image" is a tar of the verified bundle with fixed names, order, times and
modes, so equal bundles give equal digests (``sha256`` of the tar). It needs no
daemon and no registry: enough for tests of build-and-deploy workflows.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

from ..bundle import verify_bundle
from ..entities import ImageRef, ModelVersion
from ..interfaces import ImageBuilder

__all__ = ["TarballImageBuilder"]


class TarballImageBuilder(ImageBuilder):
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def check(self) -> str:
        return f"tarball builder in {self.folder}"

    def build(self, version: ModelVersion, bundle_dir: Path, *, push: bool = False) -> ImageRef:
        verify_bundle(bundle_dir)  # never package bytes that do not match the manifest
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(Path(bundle_dir).rglob("*")):
                if path.is_file():
                    data = path.read_bytes()
                    info = tarfile.TarInfo(path.relative_to(bundle_dir).as_posix())
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    tar.addfile(info, io.BytesIO(data))
        raw = buf.getvalue()
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        self.folder.mkdir(parents=True, exist_ok=True)
        out = self.folder / f"{digest.replace(':', '-')}.tar"
        out.write_bytes(raw)
        return ImageRef(reference=f"kit/{version.model}:{version.version}", digest=digest, layout=str(out),
                        size=len(raw), labels={"model": version.model, "version": str(version.version)})
