"""Named stacks in one stack file: selection order, isolation, and copying a model between them."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mlops_core as mlops
from mlops_core import api
from mlops_core.entities import Lineage
from mlops_core.errors import ConfigError, IntegrityError
from mlops_core.stack import ACTIVE_STACK_FILE, Stack, list_profiles, load_config, use_profile

STACKS = """
default_stack = "dev"

[builder]
backend = "oci"
platform = "linux/amd64"

[stacks.dev]
[[stacks.dev.monitors]]
backend = "log"

[stacks.prod]
home = "prod-state"
[stacks.prod.storage]
backend = "fsspec"
url = "prod-artifacts"

[stacks.bare]
[stacks.bare.builder]
backend = "oci"
"""


class Doubler:
    def predict(self, x):
        return np.asarray(x, dtype=float) * 2


@pytest.fixture
def project(tmp_path):
    (tmp_path / "mlops.toml").write_text(STACKS)
    return tmp_path


def test_selection_order_explicit_env_marker_default(project):
    assert load_config(env={}).profile == "dev"
    use_profile("bare")
    assert (project / ACTIVE_STACK_FILE).read_text().strip() == "bare"
    assert load_config(env={}).profile == "bare"
    assert load_config(env={"MLOPS_STACK": "prod"}).profile == "prod"
    assert load_config(env={"MLOPS_STACK": "prod"}, profile="dev").profile == "dev"


def test_profiles_share_top_level_tables_and_get_their_own_home(project):
    dev, prod, bare = (load_config(env={}, profile=p) for p in ("dev", "prod", "bare"))
    assert dev.home == project / ".mlops" / "dev"
    assert prod.home == project / "prod-state"
    assert [m.backend for m in dev.monitors] == ["log"] and prod.monitors == ()
    assert prod.components["builder"].settings == {"platform": "linux/amd64"}  # shared table
    assert bare.components["builder"].settings == {}  # overridden as a whole
    assert prod.components["storage"].settings == {"url": "prod-artifacts"}
    assert dev.components["storage"].settings == {}
    assert prod.describe()["profile"] == "prod"
    assert list_profiles() == ["bare", "dev", "prod"]


def test_unknown_stack_names_the_defined_ones(project):
    with pytest.raises(ConfigError) as err:
        load_config(env={"MLOPS_STACK": "staging"})
    assert "MLOPS_STACK" in err.value.message and "bare, dev, prod" in err.value.hint
    with pytest.raises(ConfigError):
        use_profile("staging")
    (project / "mlops.toml").write_text('[stacks]\nprod = "oops"\n')
    with pytest.raises(ConfigError, match="must hold tables"):
        load_config(env={})


def test_a_file_without_profiles_is_unchanged(tmp_path):
    (tmp_path / "mlops.toml").write_text('home = "state"\n')
    config = load_config(env={})
    assert config.profile is None and config.home == tmp_path / "state"


def test_copy_keeps_tags_lineage_and_aliases_and_is_idempotent(project):
    dev, prod = Stack.load(profile="dev"), Stack.load(profile="prod")
    try:
        lineage = Lineage(source_run="run-9", dataset_uri="s3://data/iris")
        v1 = api.register("iris", Doubler(), example=np.ones((2, 3)), stack=dev)
        v2 = api.register("iris", Doubler(), example=np.ones((2, 3)), alias="production", tags={"team": "ml"},
                          lineage=lineage, description="second", stack=dev)
        api.set_alias("iris", "candidate", v2.version, stack=dev)
        copied = api.copy_version("models:/iris@production", source=dev, target=prod)
        assert (copied.version, sorted(copied.aliases)) == (1, ["candidate", "production"])
        assert copied.tags["team"] == "ml" and copied.tags["mlops.copied_from"] == "dev:models:/iris/2"
        assert copied.lineage == lineage and copied.description == "second"
        assert copied.artifact.digest == v2.artifact.digest
        again = api.copy_version("models:/iris/2", source=dev, target=prod)
        assert again.version == 1 and len(api.list_versions("iris", stack=prod).items) == 1
        older = api.copy_version(v1.uri, source=dev, target=prod, copy_aliases=False)
        assert older.version == 2 and older.aliases == ()
        np.testing.assert_array_equal(api.load("models:/iris@production", stack=prod).predict([[1.0]]), [[2.0]])
        assert (project / "prod-artifacts").is_dir() and not (project / ".mlops" / "prod").exists()
    finally:
        dev.close()
        prod.close()


def test_copy_refuses_a_tampered_source(project):
    dev, prod = Stack.load(profile="dev"), Stack.load(profile="prod")
    try:
        version = api.register("iris", Doubler(), stack=dev)
        blobs = [p for p in (project / ".mlops" / "dev").rglob("*") if p.is_file() and p.stat().st_size > 200
                 and "registry" not in p.name and "cache" not in p.parts]
        for blob in blobs:
            data = bytearray(blob.read_bytes())
            data[len(data) // 2] ^= 0xFF
            blob.write_bytes(bytes(data))
        with pytest.raises(IntegrityError):
            api.copy_version(version.uri, source=dev, target=prod)
        assert not api.list_models(stack=prod).items
    finally:
        dev.close()
        prod.close()


def test_cli_stack_list_use_show_copy_and_doctor(run_cli, project):
    listed = json.loads(run_cli("stack", "list", "--json").stdout)
    assert listed["stacks"] == ["bare", "dev", "prod"] and listed["active"] == "dev"
    assert run_cli("stack", "use", "prod").returncode == 0
    shown = json.loads(run_cli("stack", "show", "--json").stdout)
    assert shown["profile"] == "prod" and shown["home"].endswith("prod-state")
    assert json.loads(run_cli("--stack", "bare", "stack", "show", "--json").stdout)["profile"] == "bare"
    bad = run_cli("--stack", "nope", "models", "list")
    assert bad.returncode == 3 and "defined stacks: bare, dev, prod" in bad.stderr

    (project / "model.py").write_text("import numpy as np\nclass M:\n    def predict(self, x):\n"
                                      "        return np.asarray(x) + 1\n")
    saved = run_cli("--stack", "dev", "models", "save", "model:M", "--name", "plus", "--alias", "prod", "--tag", "k=v")
    assert saved.returncode == 0, saved.stderr
    copied = run_cli("models", "copy", "models:/plus@prod", "--from", "dev", "--to", "bare", "--json")
    assert copied.returncode == 0, copied.stderr
    data = json.loads(copied.stdout)
    assert data["aliases"] == ["prod"] and data["tags"]["k"] == "v"
    models = json.loads(run_cli("--stack", "bare", "models", "list", "--json").stdout)["models"]
    assert [m["name"] for m in models] == ["plus"]
    assert json.loads(run_cli("models", "list", "--json").stdout)["models"] == []  # prod (active) untouched

    doctor = run_cli("doctor", "--all-stacks", "--json", "storage", "registry")
    checks = {c["check"]: c["ok"] for c in json.loads(doctor.stdout)["checks"]}
    assert doctor.returncode == 0, doctor.stdout
    assert {"[dev] storage (fsspec)", "[prod] registry (sqlite)", "[bare] config"} <= set(checks)
