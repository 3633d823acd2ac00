"""mlops-dir-store: artifacts as plain files in a folder, in one module."""
import os
import shutil
import tempfile
from pathlib import Path

import attrs

import mlops_core
from mlops_core.errors import NotFoundError
from mlops_core.interfaces import ArtifactStore


@attrs.define
class DirStoreConfig:
    root: str = "blobs"  # relative to the stack file's folder


@mlops_core.backend("storage", "dir", config=DirStoreConfig)
class DirStore(ArtifactStore):
    """Artifacts as plain files in a folder."""

    def _path(self, key: str) -> Path:
        return self.context.resolve_path(self.config.root) / key

    @property
    def uri(self) -> str:  # recorded in every ArtifactRef
        return self._path("").as_uri()

    def _write(self, key, source):
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", delete=False) as tmp:
            shutil.copyfileobj(source, tmp)
        os.replace(tmp.name, path)  # atomic: readers never see half a file

    def _open(self, key):
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise NotFoundError(f"no artifact {key!r}") from None

    def _exists(self, key):
        return self._path(key).is_file()

    def _list(self, prefix):
        root = self._path("")
        keys = (p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        return (k for k in keys if k.startswith(prefix) and "/.tmp-" not in "/" + k)

    def _delete(self, key):
        self._path(key).unlink(missing_ok=True)
