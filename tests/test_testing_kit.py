"""The conformance kit catches known-bad backends and passes good ones.

Each test writes a small test module that runs one of the kit's suites against
a backend, runs it with ``pytester`` and asserts on the outcomes: the reference
implementations pass everything, and each deliberately broken implementation
fails exactly the checks that exist to catch it.
"""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

# Good backends: the kit's references, plus a minimal builder, monitor and format.
GOOD = '''
import hashlib, io, tarfile, threading
from pathlib import Path
import pytest
from mlops_core.bundle import verify_bundle
from mlops_core.entities import ImageRef
from mlops_core.formats.cloudpickle_format import CloudpickleFormat
from mlops_core.interfaces import ImageBuilder, Monitor
from mlops_core.plugins import hookimpl
from mlops_core.testing.reference_deployer import ThreadDeployer
from mlops_core.testing.reference_registry import InMemoryRegistry
from mlops_core.testing.reference_storage import InMemoryArtifactStore


class TarBuilder(ImageBuilder):
    """Deterministic tar of a verified bundle; the digest is the tar's sha256."""

    def __init__(self, folder):
        self.folder = Path(folder)

    def tar_bytes(self, bundle_dir):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for p in sorted(Path(bundle_dir).rglob("*")):
                data = p.read_bytes()
                info = tarfile.TarInfo(p.relative_to(bundle_dir).as_posix())
                info.size, info.mtime = len(data), 0
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    def build(self, version, bundle_dir, *, push=False):
        verify_bundle(bundle_dir)
        raw = self.tar_bytes(bundle_dir)
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        self.folder.mkdir(parents=True, exist_ok=True)
        out = self.folder / (digest.replace(":", "-") + ".tar")
        out.write_bytes(raw)
        return ImageRef(reference=f"local/{version.model}:{version.version}", digest=digest, layout=str(out),
                        size=len(raw))


class CountingMonitor(Monitor):
    def __init__(self):
        self.count = 0
        self.lock = threading.Lock()

    @hookimpl
    def mlops_predictions_served(self, event):
        with self.lock:
            self.count += event.batch_size

    @hookimpl
    def mlops_collect_metrics(self):
        return f"# TYPE kit_predictions_total counter\\nkit_predictions_total {self.count}\\n"
'''


def run_suite(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    # Shrinking a failing state machine is what a plugin author wants; here only the verdict matters.
    source = "from hypothesis import Phase\nNO_SHRINK = [Phase.explicit, Phase.reuse, Phase.generate]\n" + \
        textwrap.dedent(source)
    pytester.makepyfile(backends=GOOD, test_kit_run=source)
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rfEs", "-q", *args)


def failed_tests(result: pytest.RunResult) -> set[str]:
    return {r.split("::")[-1].split(" ")[0] for r in result.outlines if r.startswith("FAILED ")}


# ------------------------------------------------------------------ good ones pass
def test_reference_backends_pass_every_suite(pytester: pytest.Pytester) -> None:
    result = run_suite(pytester, """
        import pytest
        from backends import *
        from mlops_core.testing.suites import (BuilderSuite, DeployerSuite, FormatSuite, MonitorSuite,
                                               RegistrySuite, StorageSuite)

        class TestStore(StorageSuite):
            @pytest.fixture
            def backend(self):
                return InMemoryArtifactStore()

        class TestRegistry(RegistrySuite):
            @pytest.fixture
            def backend(self):
                return InMemoryRegistry()

        class TestBuilder(BuilderSuite):
            @pytest.fixture
            def backend(self, tmp_path):
                return TarBuilder(tmp_path / "images")

        class TestDeployer(DeployerSuite):
            @pytest.fixture
            def backend(self):
                deployer = ThreadDeployer()
                yield deployer
                deployer.close()

        class TestMonitor(MonitorSuite):
            exposes_metrics = True

            @pytest.fixture
            def backend(self):
                return CountingMonitor()

        class TestFormat(FormatSuite):
            rejects_foreign_objects = False  # cloudpickle saves any callable

            @pytest.fixture
            def backend(self):
                return CloudpickleFormat()
    """)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0 and outcomes.get("errors", 0) == 0, result.stdout.str()
    assert outcomes["passed"] >= 70
    assert outcomes.get("skipped") == 1
    result.stdout.fnmatch_lines(["*TestFormat.rejects_foreign_objects is False*set rejects_foreign_objects = True*"])


# ---------------------------------------------------------------------- registries
def test_registry_that_reuses_version_numbers_fails(pytester: pytest.Pytester) -> None:
    result = run_suite(pytester, """
        import pytest
        from backends import InMemoryRegistry
        from mlops_core.entities import Lineage
        from mlops_core.testing.suites import RegistrySuite

        class NextIsMaxPlusOne(InMemoryRegistry):
            # The classic bug: the next number is computed from the versions that still exist.
            def create_version(self, model, artifact, **kw):
                with self._lock:
                    entry = self._models.get(model)
                    self._next_version[model] = (max(entry.versions) + 1) if entry and entry.versions else 1
                    return super().create_version(model, artifact, **kw)

        class TestReuse(RegistrySuite):
            counter_survives_model_delete = False  # only the version-delete bug is under test
            state_machine_settings = {"phases": NO_SHRINK, "max_examples": 200, "derandomize": True}

            @pytest.fixture
            def backend(self):
                return NextIsMaxPlusOne()
    """)
    failed = failed_tests(result)
    assert "test_deleted_numbers_are_never_reused" in failed, result.stdout.str()
    assert "test_matches_reference_model" in failed  # the state machine finds it on its own
    assert "test_versions_are_consecutive" not in failed


def test_registry_with_racy_numbering_fails_under_concurrency(pytester: pytest.Pytester) -> None:
    result = run_suite(pytester, """
        import threading, pytest
        from backends import InMemoryRegistry
        from mlops_core.testing.suites import RegistrySuite

        class ReadThenWrite(InMemoryRegistry):
            # Reads the counter, yields the CPU, then writes: two writers get the same number.
            def __init__(self):
                super().__init__()
                self.gate = threading.Event()

            def create_version(self, model, artifact, **kw):
                number = self._next_version.get(model, 1)
                self.gate.wait(0.002)  # the bug under test: a pause between read and write widens the race
                with self._lock:
                    self._next_version[model] = number
                    return super().create_version(model, artifact, **kw)

        class TestRacy(RegistrySuite):
            @pytest.fixture
            def backend(self):
                return ReadThenWrite()
    """, "-k", "concurrent or consecutive")
    assert failed_tests(result) == {"test_concurrent_writers_get_gapless_numbers"}, result.stdout.str()
    result.stdout.fnmatch_lines(["*version numbers handed out twice*"])


def test_registry_that_keeps_aliases_of_deleted_versions_fails(pytester: pytest.Pytester) -> None:
    result = run_suite(pytester, """
        import pytest
        from backends import InMemoryRegistry
        from mlops_core.testing.suites import RegistrySuite

        class DanglingAliases(InMemoryRegistry):
            def delete_version(self, model, version):
                with self._lock:
                    aliases = dict(self._model(model).aliases)
                    super().delete_version(model, version)
                    self._models[model].aliases = aliases

        class TestDangling(RegistrySuite):
            @pytest.fixture
            def backend(self):
                return DanglingAliases()
    """, "-k", "drops_its_aliases")
    assert failed_tests(result) == {"test_deleting_a_version_drops_its_aliases"}, result.stdout.str()


# ------------------------------------------------------------------------ storage
def test_storage_returning_stale_data_fails(pytester: pytest.Pytester) -> None:
    result = run_suite(pytester, """
        import io, pytest
        from backends import InMemoryArtifactStore
        from mlops_core.testing.suites import StorageSuite

        class CachingStore(InMemoryArtifactStore):
            # A read cache that is never invalidated on write.
            def __init__(self):
                super().__init__()
                self.cache = {}

            def _open(self, key):
                if key not in self.cache:
                    self.cache[key] = super()._open(key).read()
                return io.BytesIO(self.cache[key])

        class TestStale(StorageSuite):
            state_machine_settings = {"phases": NO_SHRINK, "max_examples": 200, "derandomize": True}
            @pytest.fixture
            def backend(self):
                return CachingStore()
    """)
    failed = failed_tests(result)
    assert "test_overwrite_returns_the_new_bytes" in failed, result.stdout.str()
    assert "test_matches_reference_model" in failed
    assert "test_round_trip" not in failed


def test_storage_truncating_large_objects_fails(pytester: pytest.Pytester) -> None:
    result = run_suite(pytester, """
        import io, pytest
        from backends import InMemoryArtifactStore
        from mlops_core.testing.suites import StorageSuite

        class OneReadStore(InMemoryArtifactStore):
            # Reads the source once, as if one read() always returned everything.
            def _write(self, key, source):
                super()._write(key, io.BytesIO(source.read(1 << 20)))

        class TestTruncating(StorageSuite):
            @pytest.fixture
            def backend(self):
                return OneReadStore()
    """, "-k", "large or round_trip or bytes")
    assert failed_tests(result) == {"test_large_object_is_streamed_whole"}, result.stdout.str()
    result.stdout.fnmatch_lines(["*the object was truncated*"])


def test_storage_without_atomic_writes_fails(pytester: pytest.Pytester) -> None:
    result = run_suite(pytester, """
        import io, pytest
        from backends import InMemoryArtifactStore
        from mlops_core.testing.suites import StorageSuite

        class InPlaceStore(InMemoryArtifactStore):
            # Publishes bytes as they arrive, like writing straight into the final file.
            def _write(self, key, source):
                self._blobs[key] = b""
                while chunk := source.read(1 << 16):
                    self._blobs[key] += chunk

        class TestInPlace(StorageSuite):
            @pytest.fixture
            def backend(self):
                return InPlaceStore()

        class TestInPlaceDeclared(StorageSuite):
            atomic_writes = False

            @pytest.fixture
            def backend(self):
                return InPlaceStore()
    """, "-k", "failed_")
    assert failed_tests(result) == {"test_failed_write_leaves_nothing", "test_failed_overwrite_keeps_the_old_object"}
    assert result.parseoutcomes()["skipped"] == 2  # declared honestly: skipped with the reason
    result.stdout.fnmatch_lines(["*TestInPlaceDeclared.atomic_writes is False*never shows a partial object*"])


# ----------------------------------------------------------------------- deployers
def test_deployer_reporting_ready_before_it_answers_fails(pytester: pytest.Pytester) -> None:
    result = run_suite(pytester, """
        import threading, time, pytest
        from http.server import ThreadingHTTPServer
        from backends import ThreadDeployer
        from mlops_core.testing import reference_deployer as ref
        from mlops_core.testing.suites import DeployerSuite

        class Eager(ThreadDeployer):
            # Picks a port, starts the server in the background, and says "ready" at once;
            # the server binds its socket only after a warm-up.
            def _start(self, spec, previous, wait):
                import socket
                from collections import deque
                from mlops_core.entities import utcnow
                probe = socket.socket(); probe.bind(("127.0.0.1", 0)); port = probe.getsockname()[1]; probe.close()
                model = ref.load_bundle_model(spec.bundle_path)
                log = deque()
                holder = {}

                def warm_up_then_serve():
                    time.sleep(3)  # the behaviour under test: "ready" is reported long before the bind
                    server = ThreadingHTTPServer(("127.0.0.1", port), ref._handler(model, spec, log, None))
                    holder["server"] = server
                    server.serve_forever()

                thread = threading.Thread(target=warm_up_then_serve, daemon=True)
                thread.start()

                class Lazy:
                    def shutdown(self):
                        if "server" in holder:
                            holder["server"].shutdown()

                    def server_close(self):
                        if "server" in holder:
                            holder["server"].server_close()

                return ref._Running(spec, Lazy(), thread, f"http://127.0.0.1:{port}", previous, utcnow(), log)

        class TestEager(DeployerSuite):
            stops_serving_on_delete = False

            @pytest.fixture
            def backend(self):
                deployer = Eager()
                yield deployer
                deployer.close()
    """, "-k", "ready")
    failed = failed_tests(result)
    assert failed == {"test_ready_means_it_answers"}, result.stdout.str()
    result.stdout.fnmatch_lines(["*does not answer*"])


# ------------------------------------------------------------ builders and monitors
def test_non_reproducible_and_unverifying_builder_fails(pytester: pytest.Pytester) -> None:
    result = run_suite(pytester, """
        import time, hashlib, pytest
        from backends import TarBuilder
        from mlops_core.entities import ImageRef
        from mlops_core.testing.suites import BuilderSuite

        class Sloppy(TarBuilder):
            # Stamps the build time into the image and never checks the bundle's hashes.
            def build(self, version, bundle_dir, *, push=False):
                raw = self.tar_bytes(bundle_dir) + repr(time.time_ns()).encode()
                return ImageRef(reference="local/x:1", digest="sha256:" + hashlib.sha256(raw).hexdigest())

        class TestSloppy(BuilderSuite):
            writes_layout = False

            @pytest.fixture
            def backend(self, tmp_path):
                return Sloppy(tmp_path)
    """)
    assert failed_tests(result) == {"test_equal_inputs_give_equal_digests", "test_tampered_bundle_is_refused",
                                    "test_missing_bundle_is_an_mlops_error"}, result.stdout.str()


def test_monitor_that_raises_or_emits_bad_metrics_fails(pytester: pytest.Pytester) -> None:
    result = run_suite(pytester, """
        import pytest
        from mlops_core.interfaces import Monitor
        from mlops_core.plugins import hookimpl
        from mlops_core.testing.suites import MonitorSuite

        class Fragile(Monitor):
            @hookimpl
            def mlops_predictions_served(self, event):
                event.outputs["output-0"][0]  # no outputs when the prediction failed -> KeyError

            @hookimpl
            def mlops_collect_metrics(self):
                return "requests total: 3\\n"

        class TestFragile(MonitorSuite):
            exposes_metrics = True

            @pytest.fixture
            def backend(self):
                return Fragile()
    """)
    assert failed_tests(result) == {"test_event_with_error_and_no_version", "test_metrics_parse"}, \
        result.stdout.str()
    result.stdout.fnmatch_lines(["*is not a Prometheus sample*"])


def test_misspelled_hook_in_a_monitor_fails(pytester: pytest.Pytester) -> None:
    result = run_suite(pytester, """
        import pytest
        from mlops_core.interfaces import Monitor
        from mlops_core.plugins import hookimpl
        from mlops_core.testing.suites import MonitorSuite

        class Typo(Monitor):
            @hookimpl
            def mlops_prediction_served(self, event):
                pass

        class TestTypo(MonitorSuite):
            @pytest.fixture
            def backend(self):
                return Typo()
    """, "-k", "listens")
    assert result.parseoutcomes().get("errors") == 1, result.stdout.str()
    result.stdout.fnmatch_lines(["*did you mean 'mlops_predictions_served'*"])


# -------------------------------------------------------------------------- formats
def test_format_that_hides_files_or_loses_the_model_fails(pytester: pytest.Pytester) -> None:
    result = run_suite(pytester, """
        import pickle, pytest
        from mlops_core.interfaces import ModelFormat
        from mlops_core.testing.models import DoublingModel
        from mlops_core.testing.suites import FormatSuite

        class Forgetful(ModelFormat):
            name = "forgetful"

            def can_save(self, model):
                return isinstance(model, DoublingModel)

            def save(self, model, directory):
                (directory / "model.pkl").write_bytes(pickle.dumps(model))
                (directory / "sidecar.json").write_text("{}")  # written but not listed
                return ["model.pkl"]

            def load(self, directory, manifest):
                return DoublingModel("a different model").predict  # not the saved object

        class TestForgetful(FormatSuite):
            def assert_same_predictions(self, expected, actual):
                assert actual == expected

            def predict(self, model, example):
                return model

            @pytest.fixture
            def backend(self):
                return Forgetful()
    """)
    failed = failed_tests(result)
    assert {"test_save_lists_every_file_it_wrote", "test_round_trip_predicts_the_same"} <= failed, \
        result.stdout.str()
