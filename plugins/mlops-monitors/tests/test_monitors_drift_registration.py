"""The drift monitor profiles a version at registration from the example rows the core stores in its bundle."""

from __future__ import annotations

import numpy as np

import mlops_core
from mlops_core import api
from mlops_core.stack import Stack, load_config


class Identity:
    def predict(self, x):
        return np.asarray(x)[:, 0]


def test_reference_profile_captured_from_the_registered_example(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / ".mlops"))
    monkeypatch.setenv("MLOPS_MONITORS", "drift")
    stack = Stack(load_config())
    with api.use_stack(stack):
        (drift,) = stack.start_monitors()
        rng = np.random.default_rng(0)
        version = mlops_core.register("ident", Identity(), example=rng.normal(size=(400, 3)))
        assert drift.flush(30)
        key = f"profiles/ident/{version.version}.json"
        assert stack.storage.exists(key), stack.storage.list("profiles/")
        # Too few rows: no profile is captured from the example.
        small = mlops_core.register("ident", Identity(), example=rng.normal(size=(5, 3)))
        assert drift.flush(30)
        assert not stack.storage.exists(f"profiles/ident/{small.version}.json")
    stack.close()
