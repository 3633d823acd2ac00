"""A throwaway PostgreSQL server for the tests: initdb + pg_ctl on a free port, stopped at the end.

PostgreSQL refuses to run as root, so when the tests run as root the server runs
as the unprivileged ``nobody`` user, in a temporary folder it owns.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def _pg_bin(tool: str) -> str | None:
    found = shutil.which(tool)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    pytest.importorskip("psycopg", reason="install psycopg[binary] to run the PostgreSQL tests")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="mlops-pg-"))
    as_user: dict = {}
    if os.geteuid() == 0:
        import pwd

        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        os.chmod(root, 0o700)
        as_user = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
    data, port = root / "data", _free_port()
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    subprocess.run([initdb, "-D", str(data), "-U", "mlops", "--auth=trust", "-E", "UTF8", "--no-locale"],
                   check=True, capture_output=True, env=env, cwd=root, **as_user)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=60"
    started = subprocess.run([pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "-t", "60",
                              "start"], capture_output=True, text=True, env=env, cwd=root, **as_user)
    if started.returncode != 0:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {started.stderr}\n{log}")
    try:
        dsn = f"postgresql://mlops@127.0.0.1:{port}/postgres"
        import psycopg

        from mlops_core.testing import wait_until

        def connects() -> bool:
            psycopg.connect(dsn, connect_timeout=2).close()
            return True

        wait_until(connects, 60, what=f"PostgreSQL to accept connections on {dsn}", interval=0.1,
                   ignore=(psycopg.OperationalError,))
        yield dsn
    finally:
        subprocess.run([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True, env=env, cwd=root,
                       **as_user)
        shutil.rmtree(root, ignore_errors=True)
