"""Pushes that survive broken connections (issue 14.2) and the client's credentials (issue 13.5), for real.

A small TCP proxy in front of the real docker-registry resets one connection
(RST, not a clean close) after it forwarded N bytes of a request; the client must
finish the push by itself, leave no upload session behind, and a push killed with
SIGKILL must resume where the registry has the bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from conftest import free_port
from mlops_core.errors import BackendUnavailableError
from mlops_oci.registry import RegistryClient, RegistryNetworkError, docker_config_credentials

MiB = 1 << 20


class ResettingProxy:
    """Forwards loopback TCP to ``upstream``; the first connection that sends more than ``reset_after`` bytes is reset."""

    def __init__(self, upstream: str, reset_after: int, resets: int = 1) -> None:
        self.upstream = upstream.rsplit(":", 1)
        self.reset_after = reset_after
        self.resets_left = resets
        self.resets = 0
        self.connections = 0
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host = "127.0.0.1:%d" % self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection((self.upstream[0], int(self.upstream[1])))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, upload: bool) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(1 << 16)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                sent += len(data)
                if upload and sent > self.reset_after:
                    with self.lock:
                        reset = self.resets_left > 0
                        self.resets_left -= reset
                    if reset:
                        self.resets += 1
                        for s in (src, dst):  # RST both ways: SO_LINGER 0 then close
                            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                            s.close()
                        return
                dst.sendall(data)
        except OSError:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()


def _blob(n: int) -> tuple[bytes, str]:
    data = os.urandom(n)
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def _open_sessions(registry: Any, repository: str) -> list[str]:
    uploads = Path(registry.root) / "data" / "docker" / "registry" / "v2" / "repositories" / repository / "_uploads"
    # A cancelled session keeps an empty hash-state folder in distribution's storage; a live one has startedat.
    return sorted(p.name for p in uploads.iterdir() if (p / "startedat").exists()) if uploads.is_dir() else []


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "monolithic"])
def test_a_push_through_a_resetting_proxy_finishes_by_itself(registry: Any, tmp_path: Path, chunked: bool) -> None:
    proxy = ResettingProxy(registry.host, reset_after=5 * MiB)
    try:
        data, digest = _blob(12 * MiB)
        repo = f"resume/{'chunked' if chunked else 'whole'}"
        client = RegistryClient(proxy.host, plain_http=True, chunk_size=MiB if chunked else 64 * MiB,
                                backoff=0.01, state_dir=tmp_path / "state")
        assert client.push_blob(repo, digest, lambda: io.BytesIO(data), len(data)) == "uploaded"
        print(f"\n{repo}: 12 MiB through a proxy that reset the connection after 5 MiB: {client.stats.requests} "
              f"requests, {client.stats.resumes} resumed, {client.stats.restarts} restarted, "
              f"{client.stats.cancelled} cancelled, {len(_open_sessions(registry, repo))} session(s) left")
        assert proxy.resets == 1
        assert client.stats.resumes + client.stats.restarts >= 1
        direct = RegistryClient(registry.host)
        assert direct.get_blob(repo, digest) == data  # the stored bytes hash to the digest
        assert registry.completed_uploads(repo) == [digest]
        # The session the reset broke was cancelled (DELETE) when the registry allowed it. CNCF
        # distribution refuses both the status query and the DELETE of a session whose PATCH/PUT was
        # cut mid-body (404 BLOB_UPLOAD_INVALID: its state token no longer matches the bytes it kept),
        # so that one is left to the registry's upload purging; no other session may stay behind.
        assert len(_open_sessions(registry, repo)) <= proxy.resets
        assert not list((tmp_path / "state").rglob("uploads/*"))
    finally:
        proxy.close()


_KILLED_PUSH = """
import io, os, signal, sys
from mlops_oci.registry import RegistryClient
data = open(sys.argv[1], "rb").read()
sent = [0]
def on_bytes(n):
    sent[0] += n
    if sent[0] >= 4 * (1 << 20):
        os.kill(os.getpid(), signal.SIGKILL)   # die mid-push, as a killed `mlops image push` would
client = RegistryClient(sys.argv[2], chunk_size=1 << 20, state_dir=sys.argv[3])
client.push_blob("resume/killed", sys.argv[4], lambda: io.BytesIO(data), len(data), on_bytes=on_bytes)
"""


def test_a_killed_push_resumes_where_the_registry_has_the_bytes(registry: Any, tmp_path: Path) -> None:
    data, digest = _blob(10 * MiB)
    (tmp_path / "blob").write_bytes(data)
    state = tmp_path / "state"
    done = subprocess.run([sys.executable, "-c", _KILLED_PUSH, str(tmp_path / "blob"), registry.host, str(state), digest],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr
    assert _open_sessions(registry, "resume/killed")  # the killed push left a session
    sent: list[int] = []
    client = RegistryClient(registry.host, chunk_size=MiB, state_dir=state)
    assert client.push_blob("resume/killed", digest, lambda: io.BytesIO(data), len(data), on_bytes=sent.append) == "uploaded"
    assert client.stats.resumes == 1
    print(f"\nkilled after 4 of 10 MiB; the next push sent {sum(sent) / MiB:.0f} MiB")
    assert sum(sent) == len(data) - 4 * MiB  # only what the registry did not have yet
    assert client.get_blob("resume/killed", digest) == data
    assert _open_sessions(registry, "resume/killed") == []


def test_an_abandoned_session_that_cannot_resume_is_cancelled(registry: Any, tmp_path: Path) -> None:
    data, digest = _blob(1000)
    client = RegistryClient(registry.host, state_dir=tmp_path)
    stale = client.start_upload("resume/stale")
    # Record a session for another digest's size: the status check finds it bigger than the blob -> cancel.
    path = client._state_path("uploads", "resume/stale", digest)
    big = RegistryClient(registry.host, chunk_size=4096)
    resp = big._session_request("PATCH", stale, what="seed", scope=big._scope("resume/stale", "pull,push"), ok=(202,),
                                data=b"x" * 4096, headers={"Content-Range": "0-4095", "Content-Length": "4096"})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"location": big._upload_location(resp, "resume/stale")}))
    assert client.push_blob("resume/stale", digest, lambda: io.BytesIO(data), len(data)) == "uploaded"
    assert client.stats.cancelled == 1
    assert _open_sessions(registry, "resume/stale") == []


def test_network_failures_are_network_errors_with_a_network_hint() -> None:
    client = RegistryClient(f"127.0.0.1:{free_port()}", retries=1, backoff=0.0)
    with pytest.raises(RegistryNetworkError) as err:
        client.ping()
    assert isinstance(err.value, BackendUnavailableError)
    assert "network" in (err.value.hint or "") and "repository name" not in (err.value.hint or "")


def test_blobs_are_mounted_from_another_repository_this_machine_pushed_to(registry: Any, tmp_path: Path) -> None:
    data, digest = _blob(50_000)
    client = RegistryClient(registry.host, state_dir=tmp_path)
    assert client.push_blob("mount/first", digest, lambda: io.BytesIO(data), len(data)) == "uploaded"
    again = RegistryClient(registry.host, state_dir=tmp_path)
    assert again.push_blob("mount/second", digest, lambda: io.BytesIO(data), len(data)) == "mounted"
    assert registry.completed_uploads("mount/second") == []


# ------------------------------------------------------------- tokens and credentials
def test_token_expiry_is_honoured_and_a_refused_token_is_refreshed(token_registry: Any) -> None:
    registry, tokens = token_registry
    now = [1000.0]
    client = RegistryClient(registry.host, username="alice", password="s3cret", clock=lambda: now[0])
    client.ping()
    first = len(tokens.requests)
    client.blob_exists("tok/a", "sha256:" + "0" * 64)
    asked = len(tokens.requests)
    client.blob_exists("tok/a", "sha256:" + "0" * 64)
    assert len(tokens.requests) == asked  # cached while valid
    now[0] += 301  # past the token's expires_in (300 s)
    client.blob_exists("tok/a", "sha256:" + "0" * 64)
    assert len(tokens.requests) == asked + 1  # renewed before the request, not after a failure
    assert asked > first
    # A token the registry refuses although it has not expired (revoked early): one fresh token, then success.
    tokens.poison_next = 1
    fresh = RegistryClient(registry.host, username="alice", password="s3cret")
    fresh.blob_exists("tok/b", "sha256:" + "0" * 64)
    assert tokens.poison_next == 0


def _helper(folder: Path, name: str, users: dict[str, tuple[str, str]]) -> None:
    """A real docker-credential-<name> program (the helper protocol: `get`, server URL on stdin, JSON out)."""
    script = folder / f"docker-credential-{name}"
    script.write_text(f"""#!{sys.executable}
import json, sys
users = {json.dumps({k: list(v) for k, v in users.items()})}
if sys.argv[1:] != ["get"]:
    sys.exit(2)
server = sys.stdin.read().strip()
if server not in users:
    print("credentials not found in native keychain")
    sys.exit(1)
print(json.dumps({{"ServerURL": server, "Username": users[server][0], "Secret": users[server][1]}}))
""")
    script.chmod(0o755)


def test_docker_credential_helpers_are_run(basic_registry: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _helper(bin_dir, "mlopstest", {basic_registry.host: ("alice", "s3cret")})
    _helper(bin_dir, "store", {"other.example:5000": ("bob", "pw")})
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    (tmp_path / "config.json").write_text(json.dumps({"credHelpers": {basic_registry.host: "mlopstest"},
                                                      "credsStore": "store"}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert docker_config_credentials(basic_registry.host) == ("alice", "s3cret")
    RegistryClient(basic_registry.host).ping()  # the helper's credentials open the registry
    assert docker_config_credentials("other.example:5000") == ("bob", "pw")  # credsStore
    assert docker_config_credentials("nobody.example") is None  # "credentials not found"
