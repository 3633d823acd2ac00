"""The Python API end to end on the embedded stack: register, resolve, load, aliases, tags, events."""

from __future__ import annotations

import numpy as np
import pytest

import mlops_core
from mlops_core import api, hookimpl
from mlops_core.entities import Lineage
from mlops_core.errors import IntegrityError, InvalidInputError, NotFoundError
from mlops_core.plugins import get_plugin_manager


class Doubler:
    def predict(self, x):
        return np.asarray(x) * 2


class Recorder:
    def __init__(self):
        self.events = []

    @hookimpl
    def mlops_version_registered(self, version):
        self.events.append(("registered", version.model, version.version))

    @hookimpl
    def mlops_alias_changed(self, change):
        self.events.append(("alias", change.alias, change.version, change.previous))

    @hookimpl
    def mlops_version_deleted(self, model, version):
        self.events.append(("deleted", model, version))

    @hookimpl
    def mlops_bundle_saved(self, path, manifest):
        self.events.append(("saved", manifest["format"]))


@pytest.fixture
def recorder():
    rec = Recorder()
    get_plugin_manager().register(rec, name="recorder")
    return rec


def test_register_resolve_load_and_events(recorder):
    x = np.ones((2, 3))
    v1 = mlops_core.register("doubler", Doubler(), example=x, alias="staging",
                             lineage=Lineage(source_run="run-1", dataset_uri="s3://d/train.csv"))
    assert (v1.version, v1.aliases) == (1, ("staging",))
    assert v1.lineage.source_run == "run-1"
    v2 = mlops_core.register("doubler", Doubler(), lineage=Lineage(parent_version=1))
    assert v2.version == 2 and v2.lineage.parent_version == 1
    assert mlops_core.resolve("models:/doubler").version == 2
    assert mlops_core.resolve("models:/doubler@staging").version == 1
    assert mlops_core.resolve("models:/doubler/2").version == 2
    model = mlops_core.load("models:/doubler@staging")
    assert (model.predict(x) == 2 * x).all()
    change = mlops_core.set_alias("doubler", "staging", 2)
    assert (change.previous, change.version) == (1, 2)
    assert recorder.events == [
        ("saved", "cloudpickle"), ("registered", "doubler", 1), ("alias", "staging", 1, None),
        ("saved", "cloudpickle"), ("registered", "doubler", 2), ("alias", "staging", 2, 1),
    ]


def test_equal_bundles_are_stored_once(tmp_path):
    info = mlops_core.save(Doubler(), tmp_path / "b")
    a = mlops_core.register("m", info)
    b = mlops_core.register("m", tmp_path / "b")
    assert a.artifact == b.artifact and (a.version, b.version) == (1, 2)
    blobs = mlops_core.get_stack().storage.list("blobs/")
    assert len(blobs) == 2  # the payload and the manifest, once each


def test_tampered_stored_blob_is_refused_on_load(tmp_path):
    version = mlops_core.register("m", Doubler())
    storage = mlops_core.get_stack().storage
    payload = [k for k in storage.list("blobs/") if not k.endswith(version.artifact.digest.split(":")[1])][0]
    data = bytearray(storage.read_bytes(payload))
    data[-1] ^= 0xFF
    storage.write_bytes(payload, bytes(data))
    with pytest.raises(IntegrityError):
        mlops_core.load("models:/m/1")


def test_tags_listing_paging_and_deletes(recorder):
    for name in ("alpha", "beta", "gamma"):
        mlops_core.register(name, Doubler())
    api.set_tag("beta", "team", "fraud")
    api.set_tag("beta", "stage", "qa", version=1)
    assert [m.name for m in api.list_models(tags={"team": "fraud"}).items] == ["beta"]
    assert api.list_versions("beta", tags={"stage": "qa"}).items[0].version == 1
    first = api.list_models(page_size=2)
    assert [m.name for m in first.items] == ["alpha", "beta"] and first.next_token
    assert [m.name for m in api.list_models(page_size=2, page_token=first.next_token).items] == ["gamma"]
    mlops_core.register("alpha", Doubler())
    mlops_core.delete_version("alpha", 1)
    assert [v.version for v in api.list_versions("alpha").items] == [2]
    assert mlops_core.register("alpha", Doubler()).version == 3  # numbers are never reused
    mlops_core.delete_model("alpha")
    with pytest.raises(NotFoundError):
        mlops_core.resolve("models:/alpha")
    assert ("deleted", "alpha", 1) in recorder.events and ("deleted", "alpha", 3) in recorder.events


@pytest.mark.parametrize("call", [
    lambda: mlops_core.register("bad name!", Doubler()),
    lambda: mlops_core.register("m", Doubler(), alias="1st"),
    lambda: mlops_core.resolve("model:/x"),
    lambda: mlops_core.resolve("models:/x/0"),
    lambda: api.list_models(page_size=0),
])
def test_bad_input_is_refused_with_a_hint(call):
    with pytest.raises(InvalidInputError) as err:
        call()
    assert err.value.hint


def test_missing_things_say_what_to_do():
    with pytest.raises(NotFoundError) as err:
        mlops_core.resolve("models:/nothing@prod")
    assert err.value.hint
    mlops_core.register("m", Doubler())
    with pytest.raises(NotFoundError):
        mlops_core.resolve("models:/m@prod")
    with pytest.raises(NotFoundError):
        mlops_core.resolve("models:/m/9")


@pytest.mark.parametrize("kwargs", [{"parent_version": 0}, {"parent_version": "2"}, {"source_run": 5}])
def test_lineage_is_validated_at_the_boundary(kwargs):
    with pytest.raises((InvalidInputError, TypeError)):
        Lineage(**kwargs)
