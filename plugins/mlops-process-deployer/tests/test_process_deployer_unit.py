"""Fast checks of the pieces under the deployer: config, state file, lock, /proc probes, options."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from importlib import metadata
from pathlib import Path

import attrs
import pytest

from mlops_core.entities import DeploymentSpec
from mlops_core.errors import BackendUnavailableError, InvalidInputError, NotFoundError
from mlops_core.plugins import PluginManager
from mlops_core.testing.waiting import wait_until
from mlops_process_deployer import ProcessDeployer, ProcessDeployerConfig
from mlops_process_deployer import _proc
from mlops_process_deployer._state import LOCK_FILE, DeploymentState, ServerRecord, StateDir
from mlops_process_deployer.deployer import tail_lines


def _record(pid: int = 1, start_time: int = 1, version: int = 1) -> ServerRecord:
    return ServerRecord(model="m", version=version, pid=pid, start_time=start_time, bundle_path="/b",
                        log=f"server-{version}.log", log_offset=0, started_at="2026-01-01T00:00:00+00:00")


# ------------------------------------------------------------------ plugin
def test_the_entry_point_offers_the_process_deployer() -> None:
    eps = [ep for ep in metadata.entry_points(group="mlops_core.plugins") if ep.name == "process"]
    assert [ep.value for ep in eps] == ["mlops_process_deployer.plugin"]
    spec = PluginManager().catalog.get("deployer", "process")
    assert spec.distribution == "mlops-process-deployer"


def test_discovery_stays_cheap() -> None:
    code = ("import sys, mlops_process_deployer.plugin; "
            "print(sorted(m for m in ('subprocess', 'mlops_server', 'http.client', "
            "'mlops_process_deployer.deployer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "mlops_server" not in out and "mlops_process_deployer.deployer" not in out


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("raw, expected", [(0, (0, 0)), ("0", (0, 0)), (8080, (8080, 8080)), ("8100-8199", (8100, 8199)),
                                           ([9000, 9009], (9000, 9009))])
def test_port_setting_accepts_a_port_a_range_or_zero(raw: object, expected: tuple[int, int]) -> None:
    assert ProcessDeployerConfig(port=raw).port == expected


@pytest.mark.parametrize("raw", ["9000-8000", "70000", "-1", "x"])
def test_bad_port_settings_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        ProcessDeployerConfig(port=raw)


def test_settings_from_the_environment_are_text() -> None:
    config = ProcessDeployerConfig(server_args="--max-queue 64 --log-level warning", startup_timeout="12.5")
    assert config.server_args == ("--max-queue", "64", "--log-level", "warning")
    assert config.startup_timeout == 12.5


def test_options_become_server_flags_and_unknown_ones_are_refused(tmp_path: Path) -> None:
    deployer = ProcessDeployer(home=tmp_path)
    assert deployer._server_flags({"max_batch_size": "8", "port": "9000"}) == ["--max-batch-size", "8"]
    with pytest.raises(InvalidInputError, match="valid options"):
        deployer._server_flags({"bundle": "/etc"})
    with pytest.raises(InvalidInputError):
        deployer._server_flags({"port": "http"})


def test_deploy_needs_a_local_bundle(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="local bundle"):
        ProcessDeployer(home=tmp_path).deploy(DeploymentSpec(name="d", model="m", version=1, bundle_path=None))


def test_a_port_range_skips_ports_in_use(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        if port >= 65535:
            pytest.skip("needs a port after the busy one")
        deployer = ProcessDeployer(ProcessDeployerConfig(port=f"{port}-{port + 1}"), home=tmp_path)
        try:
            assert deployer._choose_port({}) == port + 1
        except Exception as exc:  # the neighbour may be taken by someone else on a shared machine
            pytest.skip(f"port {port + 1} is not free here: {exc}")


# ------------------------------------------------------------------- state
def test_state_round_trips_and_is_replaced_atomically(tmp_path: Path) -> None:
    folder = StateDir(tmp_path, "d")
    assert folder.read() is None
    state = DeploymentState(name="d", host="127.0.0.1", port=9000, current=_record(), phase="running",
                            previous_version=3, options={"max_batch_size": "8"}, pending=_record(version=2),
                            retiring=[_record(version=5)], created_at="a", updated_at="b")
    folder.write(state)
    assert folder.read() == state
    assert json.loads(folder.state_file.read_text())["url"] == "http://127.0.0.1:9000"
    folder.write(attrs.evolve(state, pending=None))
    assert folder.read().pending is None
    assert sorted(p.name for p in folder.path.iterdir()) == ["state.json"]  # no temp file left


def test_readers_never_see_a_partial_state(tmp_path: Path) -> None:
    folder = StateDir(tmp_path, "d")
    state = DeploymentState(name="d", host="127.0.0.1", port=9000, current=_record(),
                            options={"pad": "x" * 200_000})
    folder.write(state)
    errors: list[BaseException] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                assert folder.read().name == "d"
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)
                return

    t = threading.Thread(target=reader)
    t.start()
    for i in range(50):
        folder.write(attrs.evolve(state, port=9000 + i))
    done.set()
    t.join()
    assert not errors


def test_the_lock_is_exclusive_across_processes(tmp_path: Path) -> None:
    folder = StateDir(tmp_path, "d")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from mlops_process_deployer._state import StateDir\n"
         f"with StateDir(Path({str(tmp_path)!r}), 'd').locked(10):\n"
         "    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BackendUnavailableError, match="busy"):
            with folder.locked(0.3):
                pass
    finally:
        holder.kill()
        holder.wait()
    with folder.locked(5):  # released when its holder died
        pass


def _open_descriptors(path: Path) -> list[str]:
    """This process's descriptors open on ``path`` (Linux /proc)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == os.path.realpath(path):
                found.append(fd)
        except OSError:  # closed meanwhile
            pass
    return found


def test_a_waiter_does_not_keep_a_lock_on_a_deleted_folder(tmp_path: Path) -> None:
    """delete removes the folder, lock file included; whoever waited must lock the new file, or two could run."""
    import shutil

    folder = StateDir(tmp_path, "d")
    inside = threading.Event()
    release = threading.Event()

    def waiter() -> None:
        with StateDir(tmp_path, "d").locked(10):
            inside.set()
            release.wait(10)

    with folder.locked(5):
        t = threading.Thread(target=waiter)
        t.start()
        # The waiter polls with the lock file open: wait until it holds that file (ours is the other descriptor).
        wait_until(lambda: len(_open_descriptors(folder.path / LOCK_FILE)) >= 2, 30,
                   what="the waiter to open the lock file about to be deleted")
        shutil.rmtree(folder.path)  # what delete does while holding the lock
    assert inside.wait(10)
    try:
        with pytest.raises(BackendUnavailableError):
            with folder.locked(0.3):  # the waiter holds the lock that the path names now
                pass
    finally:
        release.set()
        t.join(10)


def test_get_logs_and_delete_of_an_unknown_deployment(tmp_path: Path) -> None:
    deployer = ProcessDeployer(home=tmp_path)
    for call in (lambda: deployer.get("nope"), lambda: deployer.logs("nope"), lambda: deployer.delete("nope")):
        with pytest.raises(NotFoundError):
            call()
    assert deployer.list() == []


def test_tail_lines(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_text("".join(f"line {i}\n" for i in range(100_000)))
    assert tail_lines(path, 3) == "line 99997\nline 99998\nline 99999\n"
    assert tail_lines(path, 0) == ""
    assert tail_lines(tmp_path / "missing", 5) == ""
    path.write_text("old\nold\nnew 1\nnew 2")
    assert tail_lines(path, 10, start=8) == "new 1\nnew 2"


# -------------------------------------------------------------------- /proc
def test_process_identity_survives_only_with_the_same_start_time() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        ident = _proc.identify(child.pid)
        assert ident is not None and _proc.is_running(ident) == (True, "")
        impostor = attrs.evolve(ident, start_time=ident.start_time + 1)
        alive, why = _proc.is_running(impostor)
        assert not alive and "another process" in why
        assert not _proc.terminate(impostor)  # never signal a process that is not ours
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()
    alive, why = _proc.is_running(ident)
    assert not alive and "has exited" in why


def _proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


def test_a_zombie_child_reads_as_gone() -> None:
    # Identify the child while it surely runs (it waits for stdin), then let it exit without
    # waiting for it: a zombie. Before, the child could be gone before identify() and the
    # test passed on ``ident is None`` without checking anything.
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        ident = _proc.identify(child.pid)
        assert ident is not None and _proc.is_running(ident)[0]
        child.stdin.close()
        deadline = time.monotonic() + 30
        while _proc_state(child.pid) != "Z":  # never child.poll(): that would reap the zombie
            assert time.monotonic() < deadline, "the child did not exit"
            time.sleep(0.01)
        alive, why = _proc.is_running(ident)
        assert not alive, why
    finally:
        child.kill()
        child.wait()


def test_listening_sockets_of_a_process_group_are_found() -> None:
    code = ("import socket, time\n"
            "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
            "print(s.getsockname()[1], flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        port = int(child.stdout.readline())
        ident = _proc.identify(child.pid)
        assert _proc.group_listens(ident, port, reap=False) is True
        assert _proc.group_listens(ident, port + 1 if port < 65535 else port - 1, reap=False) is False
        assert _proc.stop(ident, grace=10) == "drained"
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


def test_stop_kills_a_process_that_ignores_sigterm() -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert child.stdout.readline().strip() == "up"
        ident = _proc.identify(child.pid)
        assert _proc.stop(ident, grace=0.5).startswith("killed")
        assert not _proc.is_running(ident)[0]  # stop() reaped it: it is our child here
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
