"""Fixtures the builder and deployer suites share: a real bundle and the version it stands for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ...entities import ArtifactRef, ModelVersion


class BundleFixtures:
    """Gives a suite ``kit_bundle`` (a saved DoublingModel bundle) and ``kit_version`` (its ModelVersion)."""

    @pytest.fixture
    def kit_bundle(self, tmp_path: Path) -> Any:
        from ..models import save_kit_bundle

        return save_kit_bundle(tmp_path / "kit-bundle")

    @pytest.fixture
    def kit_version(self, kit_bundle: Any, ns: str) -> ModelVersion:
        return ModelVersion(model=f"{ns}-model", version=1,
                            artifact=ArtifactRef(uri=kit_bundle.path.as_uri(), digest=kit_bundle.digest))

    @pytest.fixture
    def other_bundle(self, tmp_path: Path) -> Any:
        """A second bundle whose model differs (another tag): different content, different digest."""
        from ..models import save_kit_bundle

        return save_kit_bundle(tmp_path / "other-bundle", tag="other")
