"""The project's storage conformance suite (mlops_core.testing), run against the fsspec store.

Three filesystems: a local folder, ``memory://`` and a real S3 API (moto's server on
loopback, the same fixture as test_fsspec_storage.py; slow). Every capability is
claimed on each, because the store really has them:

* atomic_writes: local and memory write to ``<key>.tmp-<uuid>`` and rename into place
  (the temporary key is never listed and is removed on failure); S3 publishes an
  object only when its upload completes and a failed upload is discarded;
* concurrent_writes: each write has its own file handle and temporary key;
* large_objects: data is streamed in 1 MiB chunks (5 MiB parts on S3, so the suite's
  5 MiB object is a real multipart upload);
* state_machine: the Hypothesis comparison with the in-memory reference.
"""

from __future__ import annotations

import uuid

import pytest

from mlops_core.testing.suites import StorageSuite
from mlops_fsspec_storage.store import FsspecArtifactStore

# The moto server fixture of the plugin's other tests (module scoped: one server for this module).
from test_fsspec_storage import BUCKET, s3_endpoint, s3_options  # noqa: F401  (s3_endpoint is a fixture)


class TestLocalFolderConformance(StorageSuite):
    @pytest.fixture
    def backend(self, tmp_path):
        return FsspecArtifactStore(str(tmp_path / "artifacts"))


class TestMemoryConformance(StorageSuite):
    @pytest.fixture
    def backend(self):
        store = FsspecArtifactStore(f"memory://mlops-kit-{uuid.uuid4().hex}")
        yield store
        # memory:// is process-wide: drop this test's objects so they do not pile up.
        root = store.filesystem._strip_protocol(store.uri)
        if store.filesystem.exists(root):
            store.filesystem.rm(root, recursive=True)


@pytest.mark.slow
@pytest.mark.xdist_group("moto-s3")
class TestS3Conformance(StorageSuite):
    # A few hundred S3 calls per state-machine run through moto: fewer examples keep it reasonable.
    state_machine_settings = {"max_examples": 10}

    @pytest.fixture
    def backend(self, s3_endpoint):  # noqa: F811  (the imported fixture)
        endpoint, _client = s3_endpoint
        return FsspecArtifactStore(f"s3://{BUCKET}/kit-{uuid.uuid4().hex}", s3_options(endpoint))
