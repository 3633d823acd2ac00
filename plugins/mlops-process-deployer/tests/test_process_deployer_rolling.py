"""A rolling update under continuous load loses no request.

Client threads POST V2 requests to the deployment's stable URL while it is updated
from version 1 to 2 (through the real CLI, in another process) and rolled back
(through ``mlops_core.rollback``). No client retries anything: a request counts
as failed on any error, so a connection the old server drops shows up here.

Two kinds of clients run side by side:

* keep-alive clients (``http.client``, one persistent connection each): they only
  open a new connection when the server says ``Connection: close`` or after an
  error. ``http.client`` checks nothing before reusing a connection, so a server
  that closes idle keep-alive connections while draining loses their next request
  (the request crosses the server's FIN on the wire).
* new-connection clients: one connection per request, so the SO_REUSEPORT
  hand-over of *new* connections between the old and the new listener is exercised.

mlops-server makes this hold (``mlops_server.server.GRACEFUL_HANDOVER``): the deployment's
socket holder keeps one listening socket that old and new servers accept from, the
old one accepts what is still queued before letting go of it, and idle keep-alive
connections get a last request answered with ``Connection: close``. Not a single
request may fail.
"""

from __future__ import annotations

import json
import time

import pytest

import mlops_core
from mlops_core.testing.load import LoadGenerator
from process_deployer_support import ANSWERS, ROWS, DeployEnv

pytestmark = pytest.mark.slow

_BODY = json.dumps({"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [len(ROWS), 2],
                                "data": [v for r in ROWS for v in r]}]}).encode()
_VERSION_OF = {tuple(v): k for k, v in ANSWERS.items()}


def _version_of(data: bytes) -> int | None:
    return _VERSION_OF.get(tuple(round(v, 6) for v in json.loads(data)["outputs"][0]["data"]))


def test_rolling_update_and_rollback_under_load_lose_no_request(fresh: DeployEnv) -> None:
    import mlops_server.server

    assert mlops_server.server.GRACEFUL_HANDOVER

    deployment = mlops_core.deploy("models:/adder/1", name="rolling", wait=300)
    marks: dict[str, float] = {}
    with LoadGenerator(deployment.url, "/v2/models/adder/infer", _BODY, identify=_version_of) as load:
        load.wait_for(300)
        marks["update_start"] = time.monotonic()
        # Generous waits: on a loaded machine a model may take a minute to load (no time is asserted).
        updated = fresh.cli_json("deploy", "models:/adder/2", "--name", "rolling", "--wait", "300")
        marks["update_done"] = time.monotonic()
        load.wait_for(300)
        marks["rollback_start"] = time.monotonic()
        rolled = mlops_core.rollback("rolling", wait=300)
        marks["rollback_done"] = time.monotonic()
        load.wait_for(300)
    outcomes = list(load.outcomes)

    assert (updated["version"], updated["previous_version"]) == (2, 1)
    assert (rolled.version, rolled.previous_version, rolled.url) == (1, 2, deployment.url)
    failed = [o for o in outcomes if o.error]
    by_version = {v: sum(1 for o in outcomes if o.version == v) for v in (1, 2)}
    kinds = {kind: [o for o in outcomes if o.client.startswith(kind)] for kind in ("keepalive", "new-conn")}
    print(f"\nrolling update under load: {len(outcomes)} requests sent, {len(failed)} failed "
          f"(keep-alive clients: {len(kinds['keepalive'])} sent, {sum(1 for o in kinds['keepalive'] if o.error)} failed; "
          f"new-connection clients: {len(kinds['new-conn'])} sent, {sum(1 for o in kinds['new-conn'] if o.error)} failed), "
          f"answered by v1: {by_version[1]}, by v2: {by_version[2]}, "
          f"during the update: {sum(1 for o in outcomes if marks['update_start'] <= o.sent <= marks['update_done'])}, "
          f"during the rollback: "
          f"{sum(1 for o in outcomes if marks['rollback_start'] <= o.sent <= marks['rollback_done'])}")
    # Responses switch from v1's answers to v2's and back, at the moments the deploys say they did.
    answered = [o for o in outcomes if not o.error]
    before = [o.version for o in answered if o.done < marks["update_start"]]
    on_v2 = [o.version for o in answered if marks["update_done"] < o.sent and o.done < marks["rollback_start"]]
    after = [o.version for o in answered if o.sent > marks["rollback_done"]]
    assert before and set(before) == {1}
    assert on_v2 and set(on_v2) == {2}
    assert after and set(after) == {1}

    assert kinds["keepalive"] and kinds["new-conn"]
    assert not failed, f"{len(failed)} of {len(outcomes)} requests failed, e.g. {failed[:5]}"
