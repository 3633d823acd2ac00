"""The process deployer end to end: real server processes, the Python API and the real CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import threading

import pytest

import mlops_core
from mlops_core import api
from mlops_core.errors import MlopsError, NotFoundError

from process_deployer_support import ANSWERS, MLOPS, DeployEnv, infer, pid_alive, wait_until

pytestmark = pytest.mark.slow


def test_deploy_status_logs_update_rollback_delete(fresh: DeployEnv) -> None:
    d = mlops_core.deploy("models:/adder/1", name="adder")
    assert (d.state, d.version, d.previous_version, d.backend) == ("ready", 1, None, "process")
    assert infer(d.url) == ANSWERS[1]
    v1_pid = d.details["pid"]

    # Another process (a second shell) sees it, and its state is observed, not just recorded.
    listed = fresh.cli_json("deployments", "list")
    assert [(x["name"], x["version"], x["state"], x["url"]) for x in listed] == [("adder", 1, "ready", d.url)]
    status = fresh.cli_json("deployments", "status", "adder")
    assert status["details"]["pid"] == v1_pid
    logs = fresh.cli("deployments", "logs", "adder", "--tail", "50").stdout
    assert "listening on http://127.0.0.1:" in logs and "starting adder version 1" in logs

    # Update through the CLI: same URL, new version, old process gone.
    updated = fresh.cli_json("deploy", "models:/adder/2", "--name", "adder")
    assert (updated["state"], updated["version"], updated["previous_version"]) == ("ready", 2, 1)
    assert updated["url"] == d.url
    assert infer(d.url) == ANSWERS[2]
    assert not pid_alive(v1_pid)
    assert "starting adder version 2" in api.deployment_logs("adder", tail=50)

    # Rollback redeploys the previous version; a second rollback toggles back.
    back = mlops_core.rollback("adder")
    assert (back.state, back.version, back.previous_version, back.url) == ("ready", 1, 2, d.url)
    assert infer(d.url) == ANSWERS[1]
    assert not pid_alive(updated["details"]["pid"])
    assert fresh.server_pids() == [back.details["pid"]]

    api.undeploy("adder")
    assert not pid_alive(back.details["pid"])
    with pytest.raises(NotFoundError):
        api.deployment("adder")
    assert fresh.cli_json("deployments", "list") == []
    assert not (fresh.home / "deployments" / "adder").exists()


def test_redeploy_of_the_same_version_replaces_the_process(fresh: DeployEnv) -> None:
    first = mlops_core.deploy("models:/adder/2", name="same")
    again = mlops_core.deploy("models:/adder/2", name="same")
    assert again.details["pid"] != first.details["pid"]
    assert (again.state, again.version, again.previous_version, again.url) == ("ready", 2, None, first.url)
    assert not pid_alive(first.details["pid"])
    assert infer(again.url) == ANSWERS[2]


def test_killed_server_is_reported_failed_and_an_update_recovers(fresh: DeployEnv) -> None:
    d = mlops_core.deploy("models:/adder/1", name="victim")
    os.kill(d.details["pid"], signal.SIGKILL)
    wait_until(lambda: api.deployment("victim").state == "failed", 10, "the deployment to show as failed")
    seen = api.deployment("victim")
    assert "has exited" in seen.details["reason"]
    listed = fresh.cli_json("deployments", "list")
    assert [(x["name"], x["state"]) for x in listed] == [("victim", "failed")]
    assert fresh.cli("deployments", "status", "victim", check=False).returncode != 0

    revived = mlops_core.deploy("models:/adder/1", name="victim")
    assert revived.state == "ready" and revived.url == d.url
    assert infer(revived.url) == ANSWERS[1]


def test_reused_pid_is_not_mistaken_for_the_server(fresh: DeployEnv) -> None:
    """A recorded pid that now belongs to another process (other start time) reads as failed."""
    from mlops_process_deployer._state import StateDir

    d = mlops_core.deploy("models:/adder/1", name="reused")
    folder = StateDir(fresh.home / "deployments", "reused")
    state = folder.read()
    stranger = subprocess.Popen(["sleep", "60"])
    try:
        import attrs

        forged = attrs.evolve(state, current=attrs.evolve(state.current, pid=stranger.pid))
        folder.write(forged)
        seen = api.deployment("reused")
        assert seen.state == "failed" and "another process" in seen.details["reason"]
        folder.write(state)
        assert api.deployment("reused").state == "ready"
    finally:
        stranger.kill()
        stranger.wait()
    assert d.state == "ready"


def test_bundle_that_fails_to_load_leaves_the_old_version_serving(fresh: DeployEnv) -> None:
    d = mlops_core.deploy("models:/adder/1", name="guarded")
    with pytest.raises(MlopsError) as info:
        mlops_core.deploy(f"models:/adder/{fresh.broken_version}", name="guarded", wait=60)
    message = str(info.value)
    assert "status 3" in message and "keeps serving" in message
    assert "broken on purpose" in message  # the last log lines say why
    after = api.deployment("guarded")
    assert (after.state, after.version, after.details["pid"]) == ("ready", 1, d.details["pid"])
    assert "updating_to" not in after.details
    assert infer(d.url) == ANSWERS[1]
    assert fresh.server_pids() == [d.details["pid"]]

    # Through the CLI: an error message, no traceback, a non-zero exit status.
    result = fresh.cli("deploy", f"models:/adder/{fresh.broken_version}", "--name", "guarded", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr and "broken on purpose" in result.stderr
    assert infer(d.url) == ANSWERS[1]


def test_first_deploy_that_fails_leaves_no_deployment(fresh: DeployEnv) -> None:
    with pytest.raises(MlopsError, match="did not start"):
        mlops_core.deploy(f"models:/adder/{fresh.broken_version}", name="never")
    with pytest.raises(NotFoundError):
        api.deployment("never")
    assert [d.name for d in api.deployments()] == []
    assert fresh.server_pids() == []


def test_concurrent_commands_on_one_deployment_take_turns(fresh: DeployEnv) -> None:
    """Two `mlops deploy` at once on one name: the lock serialises them, the state stays whole."""
    base = mlops_core.deploy("models:/adder/1", name="busy")
    procs = [subprocess.Popen([MLOPS, "deploy", f"models:/adder/{v}", "--name", "busy"], env=fresh.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for v in (2, 1)]
    outcomes = [p.communicate(timeout=180) + (p.returncode,) for p in procs]
    assert [rc for _, _, rc in outcomes] == [0, 0], outcomes
    final = api.deployment("busy")
    assert final.state == "ready" and final.url == base.url
    assert {final.version, final.previous_version} == {1, 2}
    assert infer(final.url) == ANSWERS[final.version]
    assert fresh.server_pids() == [final.details["pid"]]


def test_deleting_while_list_runs_elsewhere(fresh: DeployEnv) -> None:
    """list from other threads never sees a half-written state while deploys and deletes happen."""
    errors: list[BaseException] = []
    stop = threading.Event()

    def lister() -> None:
        while not stop.is_set():
            try:
                for dep in api.deployments():
                    assert dep.state in dep.STATES
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)
                return

    threads = [threading.Thread(target=lister) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        mlops_core.deploy("models:/adder/1", name="churn")
        mlops_core.deploy("models:/adder/2", name="churn")
        api.undeploy("churn")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors


def test_json_logs_carry_model_version_request_id_and_latency(fresh: DeployEnv) -> None:
    """``log_format=json`` (#12): the server's lines in the deployment log are JSON objects, one per request."""
    import http.client
    import json

    d = mlops_core.deploy("models:/adder/1", name="jsonlogs", options={"log_format": "json"})
    host, port = d.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    body = json.dumps({"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 2], "data": [1.0, 2.0]}]})
    conn.request("POST", "/v2/models/adder/infer", body, {"Content-Type": "application/json",
                                                           "X-Request-ID": "req-7"})
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("x-request-id") == "req-7"
    assert json.loads(response.read())["id"] == "req-7"
    conn.close()

    def logged() -> bool:
        return '"request_id":"req-7"' in api.deployment_logs("jsonlogs", tail=200)

    wait_until(logged, 30, "the request's JSON log line")
    lines = [json.loads(x) for x in api.deployment_logs("jsonlogs", tail=200).splitlines() if x.startswith("{")]
    (record,) = [r for r in lines if r.get("request_id") == "req-7"]
    assert record["model"] == "adder" and record["version"] == "1" and record["status"] == 200
    assert record["latency_ms"] > 0 and record["logger"] == "mlops_server.access" and record["level"] == "info"
    assert any("listening on" in r["msg"] for r in lines)  # the server's own messages are JSON too
    api.undeploy("jsonlogs")
