"""The registry client against a real docker-registry: reads, uploads, mounts, auth, errors, retries."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from conftest import free_port
from mlops_core.errors import BackendUnavailableError
from mlops_oci.layers import CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, canonical_json
from mlops_oci.registry import RegistryAuthError, RegistryClient, RegistryError, RegistryNotFoundError


def _blob(n: int, seed: bytes = b"") -> tuple[bytes, str]:
    data = (seed + os.urandom(32)) * (n // 32 + 1)
    data = data[:n]
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def _push_small_image(client: RegistryClient, repo: str, tag: str) -> tuple[str, str]:
    layer, layer_digest = _blob(1000)
    client.upload_blob(repo, layer_digest, lambda: io.BytesIO(layer), len(layer))
    config = canonical_json({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer_digest]}})
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    client.upload_blob(repo, config_digest, lambda: io.BytesIO(config), len(config))
    manifest = canonical_json({"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
                               "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": config_digest, "size": len(config)},
                               "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                           "digest": layer_digest, "size": len(layer)}]})
    return client.put_manifest(repo, tag, manifest, MANIFEST_MEDIA_TYPE), layer_digest


def test_monolithic_and_chunked_uploads_round_trip(registry: Any) -> None:
    client = RegistryClient(registry.host, chunk_size=64 * 1024)
    client.ping()
    small, small_digest = _blob(10_000)
    big, big_digest = _blob(300_000)  # 5 PATCH chunks of 64 KiB
    assert not client.blob_exists("client/up", small_digest)
    client.upload_blob("client/up", small_digest, lambda: io.BytesIO(small), len(small))
    before = client.stats.requests
    client.upload_blob("client/up", big_digest, lambda: io.BytesIO(big), len(big))
    assert client.stats.requests - before == 1 + 5 + 1  # POST, PATCH x5, PUT
    assert client.blob_exists("client/up", small_digest) and client.blob_exists("client/up", big_digest)
    assert client.get_blob("client/up", big_digest) == big
    assert sorted(registry.completed_uploads("client/up")) == sorted([small_digest, big_digest])
    # A blob already there is not uploaded again.
    assert client.push_blob("client/up", big_digest, lambda: io.BytesIO(big), len(big)) == "existing"


def test_cross_repository_mount_and_manifests(registry: Any) -> None:
    client = RegistryClient(registry.host)
    digest, layer_digest = _push_small_image(client, "client/src", "1")
    assert client.push_blob("client/dst", layer_digest, None, 1000, mount_from="client/src") == "mounted"
    assert layer_digest not in registry.completed_uploads("client/dst")
    raw, media_type, got = client.get_manifest("client/src", "1")
    assert (media_type, got) == (MANIFEST_MEDIA_TYPE, digest)
    assert client.get_manifest("client/src", digest)[2] == digest
    assert client.manifest_exists("client/src", "1") == digest
    assert client.manifest_exists("client/src", "nope") is None
    assert "1" in client.list_tags("client/src")


def test_multi_arch_index_is_read(registry: Any, tiny_base: str) -> None:
    from mlops_oci.reference import ImageReference

    ref = ImageReference.parse(tiny_base)
    raw, media_type, _ = RegistryClient(ref.registry).get_manifest(ref.repository, ref.tag)
    assert media_type == "application/vnd.oci.image.index.v1+json"
    assert {m["platform"]["architecture"] for m in json.loads(raw)["manifests"]} == {"amd64", "arm64"}


def test_registry_errors_become_clear_messages(registry: Any) -> None:
    client = RegistryClient(registry.host)
    with pytest.raises(RegistryNotFoundError, match="MANIFEST_UNKNOWN|NAME_UNKNOWN") as err:
        client.get_manifest("client/missing", "latest")
    assert err.value.status == 404 and err.value.codes
    data, digest = _blob(100)
    wrong = "sha256:" + "0" * 64
    with pytest.raises(RegistryError, match="DIGEST_INVALID") as err:
        client.upload_blob("client/bad", wrong, lambda: io.BytesIO(data), len(data))
    assert "hint" in str(err.value)
    with pytest.raises(RegistryError, match="MANIFEST_BLOB_UNKNOWN|BLOB_UNKNOWN|MANIFEST_INVALID"):
        client.put_manifest("client/bad", "x", canonical_json({
            "schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": wrong, "size": 2}, "layers": []}), MANIFEST_MEDIA_TYPE)


def test_unreachable_registry_is_retried_then_reported() -> None:
    delays: list[float] = []
    client = RegistryClient(f"127.0.0.1:{free_port()}", retries=3, backoff=0.01, sleep=delays.append)
    with pytest.raises(BackendUnavailableError, match="unreachable"):
        client.ping()
    assert delays == [0.01, 0.02, 0.04]  # exponential backoff


def test_retry_after_and_5xx_are_retried() -> None:
    """A real HTTP server that fails twice (503 with Retry-After, then 500) before answering."""
    calls: list[str] = []

    class Flaky(BaseHTTPRequestHandler):
        def log_message(self, *a: Any) -> None:
            pass

        def do_GET(self) -> None:
            calls.append(self.path)
            if len(calls) == 1:
                self.send_response(503)
                self.send_header("Retry-After", "2")
            elif len(calls) == 2:
                self.send_response(500)
            else:
                self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        delays: list[float] = []
        client = RegistryClient(f"127.0.0.1:{server.server_address[1]}", backoff=0.01, sleep=delays.append)
        client.ping()
        assert len(calls) == 3 and delays == [2.0, 0.02]
    finally:
        server.shutdown()


def test_basic_auth(basic_registry: Any) -> None:
    with pytest.raises(RegistryAuthError, match="401") as err:
        RegistryClient(basic_registry.host, username="alice", password="wrong").ping()
    assert "credentials" in (err.value.hint or "")
    with pytest.raises(RegistryAuthError):
        RegistryClient(basic_registry.host).get_manifest("x/y", "1")
    client = RegistryClient(basic_registry.host, username="alice", password="s3cret")
    digest, _ = _push_small_image(client, "auth/basic", "1")
    assert client.get_manifest("auth/basic", "1")[2] == digest


def test_docker_config_credentials_are_used(basic_registry: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import base64

    (tmp_path / "config.json").write_text(json.dumps({"auths": {basic_registry.host: {
        "auth": base64.b64encode(b"alice:s3cret").decode()}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    RegistryClient(basic_registry.host).ping()


def test_bearer_token_flow(token_registry: Any) -> None:
    registry, tokens = token_registry
    client = RegistryClient(registry.host, username="alice", password="s3cret")
    digest, layer_digest = _push_small_image(client, "auth/token", "1")
    assert client.get_manifest("auth/token", "1")[2] == digest
    assert any("repository:auth/token:pull,push" in " ".join(r["scopes"]) for r in tokens.requests)
    assert all(r["user"] == "alice" for r in tokens.requests)
    # Mount needs pull on the source too: the token is asked for both scopes.
    assert client.push_blob("auth/other", layer_digest, None, 1000, mount_from="auth/token") == "mounted"
    # Tokens are cached per scope: pushing again does not ask the token server again.
    asked = len(tokens.requests)
    client.blob_exists("auth/token", layer_digest)
    assert len(tokens.requests) == asked
    # Anonymous clients get pull-only tokens: reading works, pushing is refused clearly.
    anon = RegistryClient(registry.host)
    assert anon.get_manifest("auth/token", "1")[2] == digest
    with pytest.raises(RegistryAuthError, match="401|403|UNAUTHORIZED|DENIED"):
        anon.start_upload("auth/token")
    with pytest.raises(RegistryAuthError, match="refused the credentials"):
        RegistryClient(registry.host, username="alice", password="nope").ping()
