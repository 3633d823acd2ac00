"""Fixtures of the process deployer tests: an isolated stack with registered scikit-learn models,
the real ``mlops`` CLI in subprocesses, and a teardown that never leaves a server behind."""

from __future__ import annotations

import os
import signal
import sys
from typing import Iterator

import cloudpickle
import numpy as np
import pytest

import process_deployer_testmodels

cloudpickle.register_pickle_by_value(process_deployer_testmodels)

import mlops_core  # noqa: E402
from mlops_core import api  # noqa: E402
from mlops_core.plugins import reset_plugin_manager  # noqa: E402
from process_deployer_support import DeployEnv, wait_until  # noqa: E402


@pytest.fixture(scope="module")
def deploy_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DeployEnv]:
    """A stack home with model ``adder``: v1 answers x0+x1, v2 answers 2*(x0+x1)+100, v3 refuses to load."""
    from sklearn.linear_model import LinearRegression

    root = tmp_path_factory.mktemp("process-deployer")
    home = root / "home"
    stack_file = root / "mlops.toml"
    stack_file.write_text('[deployer]\nbackend = "process"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_")}
    env.update(MLOPS_HOME=str(home), MLOPS_CONFIG=str(stack_file))
    saved = {k: os.environ.get(k) for k in ("MLOPS_HOME", "MLOPS_CONFIG")}
    os.environ.update(MLOPS_HOME=str(home), MLOPS_CONFIG=str(stack_file))
    reset_plugin_manager()
    api.set_stack(None)

    x = np.random.RandomState(0).rand(64, 2)
    assert mlops_core.register("adder", LinearRegression().fit(x, x.sum(axis=1)), example=x[:3]).version == 1
    assert mlops_core.register("adder", LinearRegression().fit(x, 2 * x.sum(axis=1) + 100),
                               example=x[:3]).version == 2
    broken = mlops_core.register("adder", process_deployer_testmodels.BrokenOnLoad(), example=x[:3]).version
    denv = DeployEnv(home=home, stack_file=stack_file, env=env, broken_version=broken)
    try:
        yield denv
    finally:
        try:
            for d in api.deployments():
                try:
                    api.undeploy(d.name)
                except Exception as exc:  # keep tearing down; the stragglers below go anyway
                    print(f"teardown: deleting {d.name} failed: {exc}", file=sys.stderr)
        finally:
            for pid in denv.server_pids():  # stragglers: kill by pid, never by name
                print(f"teardown: killing straggler server {pid}", file=sys.stderr)
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    os.kill(pid, signal.SIGKILL)
            api.set_stack(None)
            reset_plugin_manager()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture
def fresh(deploy_env: DeployEnv) -> Iterator[DeployEnv]:
    """The module's stack, checked clean after each test: every deployment deleted, no server left."""
    yield deploy_env
    for d in api.deployments():
        api.undeploy(d.name)
    wait_until(lambda: not deploy_env.server_pids(), 60, "every server process to exit")
