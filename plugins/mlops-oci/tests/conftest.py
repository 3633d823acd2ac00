"""Real components for the mlops-oci tests, started on free loopback ports and stopped afterwards.

* ``registry``: Debian's ``docker-registry`` (CNCF distribution 2.8), filesystem storage in a temp dir;
  its access log lets tests count uploads independently of our client.
* ``basic_registry``: the same with htpasswd basic auth.
* ``token_registry``: the same with bearer-token auth, and a real HTTP token server in a thread
  issuing JWTs signed with a throw-away certificate the registry trusts.
* ``tiny_base``: a small multi-arch base image (index with amd64 + arm64) pushed with skopeo.

Tools that are missing make the tests that need them skip with the package to install.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

REGISTRY_BIN = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(tool: str, package: str) -> str:
    path = shutil.which(tool) or (tool if os.path.exists(tool) else None)
    if not path:
        pytest.skip(f"{tool} is not installed (apt-get install {package}; see scripts/system-packages.txt)")
    return path


def wait_http(url: str, timeout: float = 15.0) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up")
            time.sleep(0.05)


class Registry:
    """A running docker-registry process."""

    def __init__(self, root: Path, auth: dict[str, Any] | None = None) -> None:
        self.root = root
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host}"
        self.log = root / "registry.log"
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {"filesystem": {"rootdirectory": str(root / "data")}, "delete": {"enabled": True}},
            "http": {"addr": self.host, "secret": "test-secret"},
        }
        if auth:
            config["auth"] = auth
        # JSON is YAML: no YAML library needed.
        (root / "config.yml").write_text(json.dumps(config))
        self._log_file = open(self.log, "wb")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(root / "config.yml")],
                                     stdout=self._log_file, stderr=subprocess.STDOUT)
        wait_http(self.url + "/v2/")

    def access_lines(self) -> list[str]:
        return [line for line in self.log.read_text(errors="replace").splitlines() if '"' in line and "HTTP/1.1" in line]

    def completed_uploads(self, repository: str | None = None) -> list[str]:
        """Digests of blob uploads the registry completed (the final PUT ...?digest=), from its access log."""
        out = []
        for line in self.access_lines():
            m = re.search(r'"PUT /v2/(\S+)/blobs/uploads/\S*[?&]digest=(sha256(?::|%3A)[0-9a-f]{64})\S* HTTP/1.1" 201', line)
            if m and (repository is None or m.group(1) == repository):
                out.append(m.group(2).replace("%3A", ":"))
        return out

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log_file.close()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    need(REGISTRY_BIN, "docker-registry")
    reg = Registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    need(REGISTRY_BIN, "docker-registry")
    htpasswd = need("htpasswd", "apache2-utils")
    root = tmp_path_factory.mktemp("basic-registry")
    line = subprocess.run([htpasswd, "-Bbn", "alice", "s3cret"], check=True, capture_output=True, text=True).stdout
    (root / "htpasswd").write_text(line.strip() + "\n")
    reg = Registry(root, {"htpasswd": {"realm": "test", "path": str(root / "htpasswd")}})
    yield reg
    reg.stop()


# ------------------------------------------------------------- token auth
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """A real HTTP token service (Docker token auth spec) in a thread.

    Grants every requested scope to alice:s3cret, counts requests, and signs JWTs
    (ES256) with a certificate the registry trusts through ``rootcertbundle``.
    """

    def __init__(self, root: Path) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
        import datetime as dt

        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlops-test-token-issuer")])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=2)).sign(self.key, hashes.SHA256()))
        self.cert_der = cert.public_bytes(serialization.Encoding.DER)
        self.bundle = root / "token-ca.pem"
        self.bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.requests: list[dict[str, Any]] = []
        #: How many of the next tokens are issued already expired (the registry refuses them).
        self.poison_next = 0
        self.port = free_port()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                from urllib.parse import parse_qs, urlparse

                q = parse_qs(urlparse(self.path).query)
                auth = self.headers.get("Authorization", "")
                user = None
                if auth.startswith("Basic "):
                    u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
                    if (u, p) != ("alice", "s3cret"):
                        self.send_response(401)
                        self.end_headers()
                        return
                    user = u
                scopes = q.get("scope", [])
                server.requests.append({"user": user, "scopes": scopes, "service": q.get("service", [""])[0]})
                access = []
                for scope in scopes:
                    for part in scope.split(" "):
                        typ, _, rest = part.partition(":")
                        repo, _, actions = rest.rpartition(":")
                        # Anonymous users may only pull.
                        allowed = [a for a in actions.split(",") if user or a == "pull"]
                        access.append({"type": typ, "name": repo, "actions": allowed})
                poisoned = server.poison_next > 0
                server.poison_next -= poisoned
                token = server.sign({"iss": "mlops-test", "sub": user or "", "aud": q.get("service", [""])[0],
                                     "access": access}, expired=poisoned)
                body = json.dumps({"token": token, "expires_in": 300}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.realm = f"http://127.0.0.1:{self.port}/token"

    def sign(self, claims: dict[str, Any], *, expired: bool = False) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        now = int(time.time())
        claims = {**claims, "iat": now - 600 * expired, "nbf": now - 60 - 600 * expired,
                  "exp": now - 300 if expired else now + 300, "jti": os.urandom(8).hex()}
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(self.cert_der).decode()]}
        signing_input = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
        der = self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return signing_input + "." + _b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Registry, TokenServer]]:
    need(REGISTRY_BIN, "docker-registry")
    pytest.importorskip("cryptography", reason="the token server signs JWTs with cryptography (pip install cryptography)")
    root = tmp_path_factory.mktemp("token-registry")
    tokens = TokenServer(root)
    reg = Registry(root, {"token": {"realm": tokens.realm, "service": "mlops-test-registry",
                                    "issuer": "mlops-test", "rootcertbundle": str(tokens.bundle)}})
    yield reg, tokens
    reg.stop()
    tokens.stop()


# ------------------------------------------------------------- base images
@pytest.fixture(scope="session")
def tiny_base(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small multi-arch base (not runnable: no Python inside) pushed with skopeo; returns its reference."""
    skopeo = need("skopeo", "skopeo")
    from oci_testkit import write_multiarch_layout

    layout = tmp_path_factory.mktemp("tiny-base") / "layout"
    write_multiarch_layout(layout, "tiny")
    ref = f"{registry.host}/base/tiny:1"
    subprocess.run([skopeo, "copy", "--all", "--dest-tls-verify=false", f"oci:{layout}:tiny", f"docker://{ref}"],
                   check=True, capture_output=True)
    return ref


def skopeo_inspect(ref: str, *, raw: bool = False, config: bool = False) -> dict[str, Any]:
    skopeo = need("skopeo", "skopeo")
    args = [skopeo, "inspect", "--tls-verify=false"]
    if raw:
        args.append("--raw")
    if config:
        args.append("--config")
    out = subprocess.run(args + [f"docker://{ref}"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


# ------------------------------------------------------------- podman
class PodmanService:
    """``podman system service`` on a private socket, storage and insecure-registry config."""

    def __init__(self, root: Path, insecure: list[str]) -> None:
        self.root = root
        conf = root / "registries.conf"
        conf.write_text("".join(f'[[registry]]\nlocation = "{r}"\ninsecure = true\n' for r in insecure))
        self.env = {**os.environ, "CONTAINERS_REGISTRIES_CONF": str(conf)}
        self.flags = ["--root", str(root / "storage"), "--runroot", str(root / "run"), "--storage-driver", "vfs",
                      "--cgroup-manager", "cgroupfs", "--runtime", "runc"]
        self.socket = root / "podman.sock"
        self.base_url = f"unix://{self.socket}"
        self._log = open(root / "service.log", "wb")
        self.proc = subprocess.Popen(["podman", *self.flags, "system", "service", "--time=0", self.base_url],
                                     env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not self.socket.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"podman service did not start: {(root / 'service.log').read_text()}")
            time.sleep(0.1)

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(["podman", *self.flags, *args], env=self.env, check=check, capture_output=True, text=True)

    def stop(self) -> None:
        self.podman("rm", "--all", "--force", check=False)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


@pytest.fixture(scope="session")
def podman_service(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodmanService]:
    need("podman", "podman")
    need("runc", "runc")
    pytest.importorskip("docker", reason="the container deployer needs the docker SDK (pip install docker)")
    # podman refuses a runroot path longer than 50 characters, and pytest's temporary
    # folders under xdist are longer than that: use a short folder of our own.
    root = Path(tempfile.mkdtemp(prefix="mlops-pm-", dir="/tmp"))
    service = PodmanService(root, [registry.host])
    try:
        yield service
    finally:
        service.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def python_base(registry: Registry) -> str:
    """A runnable Debian bookworm + python3 base (debootstrap, in the shared base cache, see mlops_oci.localbase) in the registry."""
    need("debootstrap", "debootstrap")
    skopeo = need("skopeo", "skopeo")
    if os.geteuid() != 0:
        pytest.skip("debootstrap needs root to make the base image")
    from oci_testkit import debootstrap_base_layout

    layout = debootstrap_base_layout()
    ref = f"{registry.host}/base/python:bookworm"
    subprocess.run([skopeo, "copy", "--dest-tls-verify=false", f"oci:{layout}:python", f"docker://{ref}"],
                   check=True, capture_output=True)
    return ref
