"""The project's deployer conformance suite (mlops_core.testing), run against the process deployer.

Real ``python -m mlops_server`` processes serve the kit's DoublingModel bundle. Every
capability is claimed: a deploy to an existing name is a rolling update on the same
port that records ``previous_version``, and delete stops (and waits for) the server.

Teardown: the kit deletes every deployment it made; after that, the ``backend``
fixture deletes whatever is still listed, then checks that no server process of the
test is left (found by the test's folder in their command line, killed by pid).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from mlops_core.errors import NotFoundError
from mlops_core.testing.suites import DeployerSuite
from mlops_process_deployer import ProcessDeployer, ProcessDeployerConfig

from process_deployer_support import wait_until


def _servers_below(folder: Path) -> list[int]:
    """Live ``mlops_server`` processes whose command line names ``folder`` (the kit bundle is under it)."""
    marker = str(folder).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if b"mlops_server" in cmdline and any(marker in a for a in cmdline) and stat[stat.rfind(")") + 2] not in "ZX":
            pids.append(int(entry.name))
    return pids


class TestProcessDeployerConformance(DeployerSuite):
    @pytest.fixture
    def backend(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
        # The servers inherit the environment: keep them (and anything they read) off the user's stack.
        monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("MLOPS_CONFIG", str(tmp_path / "mlops.toml"))
        deployer = ProcessDeployer(ProcessDeployerConfig(stop_timeout=20.0), home=tmp_path / "home")
        yield deployer
        try:
            for d in deployer.list():
                try:
                    deployer.delete(d.name)
                except NotFoundError:
                    pass
            try:
                wait_until(lambda: not _servers_below(tmp_path), 30, "every server process of the test to exit")
            except AssertionError:
                left = _servers_below(tmp_path)
                pytest.fail(f"server processes left after every deployment was deleted: {left}")
        finally:
            for pid in _servers_below(tmp_path):  # stragglers: by pid, never by name
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
            deadline = time.monotonic() + 10
            while _servers_below(tmp_path) and time.monotonic() < deadline:
                time.sleep(0.05)
