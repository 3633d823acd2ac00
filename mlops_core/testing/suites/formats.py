"""``FormatSuite``: the conformance tests of a :class:`~mlops_core.interfaces.ModelFormat`.

::

    class TestMyFormat(FormatSuite):
        @pytest.fixture
        def backend(self):
            return MyFormat()

        @pytest.fixture
        def model(self):          # a model your format saves (default: a DoublingModel)
            return train_small_model()

        @pytest.fixture
        def example(self):        # an input its predict() takes
            return [[1.0, 2.0]]

Override ``assert_same_predictions`` when outputs need a tolerance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from ...errors import IntegrityError, MlopsError
from ...interfaces import ModelFormat, validate_key
from ..models import EXAMPLE_INPUT, DoublingModel, flatten
from ._base import ConformanceSuite

__all__ = ["FormatSuite"]


class FormatSuite(ConformanceSuite):
    """Conformance tests for a ModelFormat; define ``backend`` (and usually ``model`` and ``example``)."""

    CAPABILITIES: ClassVar[dict[str, str]] = {
        "rejects_foreign_objects": "says can_save(...) is False for objects it cannot save (a plain object())",
        "describes_signature": "signature(directory) reads the V2 signature from the saved files (e.g. an ONNX graph)",
    }
    rejects_foreign_objects = True
    describes_signature = False

    @pytest.fixture
    def model(self) -> Any:
        return DoublingModel()

    @pytest.fixture
    def example(self) -> Any:
        return EXAMPLE_INPUT

    def predict(self, model: Any, example: Any) -> Any:
        return (getattr(model, "predict", None) or model)(example)

    def assert_same_predictions(self, expected: Any, actual: Any) -> None:
        assert flatten(actual) == flatten(expected)

    def test_is_a_model_format(self, backend: Any) -> None:
        assert isinstance(backend, ModelFormat)
        assert isinstance(backend.name, str) and backend.name.strip(), "set ModelFormat.name (recorded in manifests)"

    def test_can_save_its_model(self, backend: ModelFormat, model: Any) -> None:
        assert backend.can_save(model) is True

    def test_refuses_foreign_objects(self, backend: ModelFormat) -> None:
        self.require("rejects_foreign_objects")
        assert not backend.can_save(object())

    def test_save_lists_every_file_it_wrote(self, backend: ModelFormat, model: Any, tmp_path: Path) -> None:
        written = list(backend.save(model, tmp_path))
        assert written, "save must return the relative paths of the files it wrote"
        for rel in written:
            validate_key(rel)
            assert (tmp_path / rel).is_file(), f"save returned {rel!r}, which is not a file it wrote"
        on_disk = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
        assert on_disk == set(written), "every file written must be listed (bundles refuse unlisted files)"
        assert "manifest.json" not in written

    def test_round_trip_predicts_the_same(self, backend: ModelFormat, model: Any, example: Any,
                                          tmp_path: Path) -> None:
        backend.save(model, tmp_path)
        loaded = backend.load(tmp_path, {"format": backend.name})
        self.assert_same_predictions(self.predict(model, example), self.predict(loaded, example))

    def test_imported_modules(self, backend: ModelFormat, model: Any, tmp_path: Path) -> None:
        backend.save(model, tmp_path)
        modules = backend.imported_modules(tmp_path)
        assert isinstance(modules, set) and all(isinstance(m, str) and m for m in modules)

    def test_bundle_round_trip_through_the_core(self, backend: ModelFormat, model: Any, example: Any,
                                                tmp_path: Path) -> None:
        """save_bundle/load_bundle with this format, registered in an isolated plugin manager; a flipped byte is refused."""
        from ...bundle import load_bundle, save_bundle
        from ...plugins import PluginManager, hookimpl

        class _Provider:
            @hookimpl
            def mlops_register_backends(self, backends: Any) -> None:
                backends.add_format(backend.name, lambda config, context: backend)

        pm = PluginManager(autoload=False)
        assert pm.register(_Provider(), name="kit-format") == "kit-format", pm.failures
        # The bundle functions use this isolated manager, not the process-wide one.
        info = save_bundle(model, tmp_path / "bundle", format=backend.name, plugins=pm)
        assert info.manifest["format"] == backend.name
        loaded = load_bundle(info.path, expected_digest=info.digest, plugins=pm)
        self.assert_same_predictions(self.predict(model, example), self.predict(loaded.model, example))
        victim = tmp_path / "bundle" / info.manifest["files"][0]["path"]
        data = bytearray(victim.read_bytes())
        if data:
            data[0] ^= 0xFF
        else:
            data = bytearray(b"x")
        victim.write_bytes(bytes(data))
        with pytest.raises(IntegrityError):
            load_bundle(info.path, plugins=pm)

    def test_priority_is_an_integer(self, backend: ModelFormat) -> None:
        assert isinstance(backend.priority, int) and not isinstance(backend.priority, bool)

    def test_signature_from_the_saved_files(self, backend: ModelFormat, model: Any, tmp_path: Path) -> None:
        from ...entities import Signature

        backend.save(model, tmp_path)
        sig = backend.signature(tmp_path)
        if not self.describes_signature:
            assert sig is None or isinstance(sig, Signature)
            return
        assert isinstance(sig, Signature), "describes_signature: signature(directory) must return a Signature"
        assert sig.inputs and sig.outputs, "a described signature names at least one input and one output"
        assert len({t.name for t in sig.inputs}) == len(sig.inputs), "input names must be unique"

    def test_bundle_records_a_signature(self, backend: ModelFormat, model: Any, example: Any,
                                        tmp_path: Path) -> None:
        """save_bundle with an example records a signature: the format's own, else one inferred from the example."""
        from ...bundle import load_bundle

        info, pm = self._isolated_bundle(backend, model, tmp_path / "bundle", example=example)
        sig = info.signature
        assert sig is not None and sig.inputs and sig.outputs
        if self.describes_signature:
            assert sig == backend.signature(info.path)
        loaded = load_bundle(info.path, plugins=pm)
        assert loaded.signature == sig

    def _isolated_bundle(self, backend: ModelFormat, model: Any, folder: Path, example: Any = None) -> tuple[Any, Any]:
        from ...bundle import save_bundle
        from ...plugins import PluginManager, hookimpl

        class _Provider:
            @hookimpl
            def mlops_register_backends(self, backends: Any) -> None:
                backends.add_format(backend.name, lambda config, context: backend)

        pm = PluginManager(autoload=False)
        assert pm.register(_Provider(), name="kit-format") == "kit-format", pm.failures
        return save_bundle(model, folder, format=backend.name, example=example, plugins=pm), pm

    def test_loads_the_verified_bytes_not_the_folder(self, backend: ModelFormat, model: Any, example: Any,
                                                     tmp_path: Path) -> None:
        """Every file is replaced by garbage after verification: the load must not notice (it reads the verified bytes)."""
        from ...bundle import open_verified

        info, _pm = self._isolated_bundle(backend, model, tmp_path / "bundle")
        files = open_verified(info.path, expected_digest=info.digest)
        for entry in info.manifest["files"]:
            target = tmp_path / "bundle" / entry["path"]
            target.unlink()
            target.write_bytes(b"swapped after the check " * 8)
        try:
            loaded = backend.load_verified(files)
        finally:
            files.close()
        self.assert_same_predictions(self.predict(model, example), self.predict(loaded, example))

    def test_swapping_files_during_loads(self, backend: ModelFormat, model: Any, example: Any, tmp_path: Path) -> None:
        """Another process swaps each file with a tampered copy in a loop: every load is refused or correct."""
        from ...bundle import load_bundle
        from ..race import FileSwapper

        info, pm = self._isolated_bundle(backend, model, tmp_path / "bundle")
        expected = self.predict(model, example)
        entry = max(info.manifest["files"], key=lambda f: f["size"])  # the payload, most likely
        target = tmp_path / "bundle" / entry["path"]
        good = target.read_bytes()
        bad = bytes(b ^ 0x5A for b in good) or b"x"
        with FileSwapper(target, good, bad, tmp_path / "swap"):
            for _ in range(self.race_loads):
                try:
                    loaded = load_bundle(info.path, expected_digest=info.digest, plugins=pm)
                except IntegrityError:
                    continue  # the swapped copy was seen and refused
                self.assert_same_predictions(expected, self.predict(loaded.model, example))

    #: Loads made while the swapper runs in ``test_swapping_files_during_loads``.
    race_loads = 100

    def test_load_of_missing_files_is_an_error(self, backend: ModelFormat, tmp_path: Path) -> None:
        with pytest.raises((MlopsError, OSError, EOFError, ValueError)):
            backend.load(tmp_path, {"format": backend.name})
