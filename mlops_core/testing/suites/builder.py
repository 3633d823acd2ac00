"""``BuilderSuite``: the conformance tests of an :class:`~mlops_core.interfaces.ImageBuilder`.

::

    class TestMyBuilder(BuilderSuite):
        @pytest.fixture
        def backend(self, tmp_path):
            return MyBuilder(tmp_path / "images")

The suite saves a real bundle (``kit_bundle``) and builds it as version 1 of a
per-test model name (``kit_version``).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ...entities import ImageRef, ModelVersion
from ...errors import MlopsError
from ...interfaces import ImageBuilder
from ._base import ConformanceSuite
from ._fixtures import BundleFixtures

__all__ = ["BuilderSuite"]

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class BuilderSuite(BundleFixtures, ConformanceSuite):
    """Conformance tests for an ImageBuilder; define the ``backend`` fixture."""

    CAPABILITIES: ClassVar[dict[str, str]] = {
        "reproducible": "gives equal digests for equal inputs (the same bundle built twice)",
        "content_addressed": "gives different digests for different bundles",
        "writes_layout": "writes the image to a local folder or file named in ImageRef.layout",
    }
    reproducible = True
    content_addressed = True
    writes_layout = True

    def test_is_an_image_builder(self, backend: Any) -> None:
        assert isinstance(backend, ImageBuilder)
        assert isinstance(backend.check(), str)

    def test_build_returns_an_image_ref(self, backend: ImageBuilder, kit_version: ModelVersion, kit_bundle: Any) -> None:
        image = backend.build(kit_version, kit_bundle.path)
        assert isinstance(image, ImageRef)
        assert isinstance(image.reference, str) and image.reference
        assert _DIGEST.match(image.digest), f"digest must be 'sha256:<64 hex>', got {image.digest!r}"
        assert image.size is None or image.size > 0

    def test_layout_exists(self, backend: ImageBuilder, kit_version: ModelVersion, kit_bundle: Any) -> None:
        self.require("writes_layout")
        image = backend.build(kit_version, kit_bundle.path)
        assert image.layout, "ImageRef.layout names where the image was written"
        assert os.path.exists(image.layout), f"ImageRef.layout {image.layout!r} does not exist"

    def test_equal_inputs_give_equal_digests(self, backend: ImageBuilder, kit_version: ModelVersion,
                                             kit_bundle: Any, tmp_path: Path) -> None:
        self.require("reproducible")
        first = backend.build(kit_version, kit_bundle.path)
        copy = tmp_path / "copy-of-bundle"
        shutil.copytree(kit_bundle.path, copy)
        os.utime(copy / "manifest.json", (1, 1))  # file times must not leak into the digest
        second = backend.build(kit_version, copy)
        assert first.digest == second.digest, "building the same bundle twice gave two digests"

    def test_different_bundles_give_different_digests(self, backend: ImageBuilder, kit_version: ModelVersion,
                                                      kit_bundle: Any, other_bundle: Any) -> None:
        self.require("content_addressed")
        a = backend.build(kit_version, kit_bundle.path)
        b = backend.build(kit_version, other_bundle.path)
        assert a.digest != b.digest

    def test_missing_bundle_is_an_mlops_error(self, backend: ImageBuilder, kit_version: ModelVersion,
                                              tmp_path: Path) -> None:
        with pytest.raises(MlopsError):
            backend.build(kit_version, tmp_path / "no-such-bundle")

    def test_tampered_bundle_is_refused(self, backend: ImageBuilder, kit_version: ModelVersion, kit_bundle: Any,
                                        tmp_path: Path) -> None:
        """A builder must not package bytes that do not match the manifest (verify before building)."""
        copy = tmp_path / "tampered"
        shutil.copytree(kit_bundle.path, copy)
        payload = next(p for p in copy.iterdir() if p.name != "manifest.json")
        data = bytearray(payload.read_bytes())
        data[len(data) // 2] ^= 0xFF
        payload.write_bytes(bytes(data))
        with pytest.raises(MlopsError):
            backend.build(kit_version, copy)
