"""Bearer-token authentication and TLS / mutual TLS, against real server processes and real clients
(requests, tritonclient), with certificates made by `cryptography` for each run."""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

import pytest
import requests

from mlops_server_testkit import run_server

pytestmark = pytest.mark.slow

INFER = {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [1, 4], "data": [5.1, 3.5, 1.4, 0.2]}]}
TOKEN = "s3cret-token-for-tests"


# ------------------------------------------------------------------ certificates
def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, key, cert) -> None:
    from cryptography.hazmat.primitives import serialization

    path.with_suffix(".key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _cert(subject: str, key, issuer_name, issuer_key, *, ca: bool = False, server: bool = False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca = _cert("test CA", ca_key, None, None, ca=True)
    _write(root / "ca", ca_key, ca)
    for who, server in (("server", True), ("client", False)):
        key = _key()
        _write(root / who, key, _cert(f"test {who}", key, ca.subject, ca_key, server=server))
    other_key = _key()  # a client certificate from a CA the server does not trust
    _write(root / "stranger", other_key, _cert("stranger", other_key, None, None))
    return {p.stem + p.suffix.replace(".", "_"): p for p in root.iterdir()}


# ------------------------------------------------------------------ bearer token
def test_bearer_token_guards_every_route_including_health(tmp_path, iris_bundle):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with run_server([iris_bundle], tmp=tmp_path, env={"MLOPS_SERVER_AUTH_TOKEN": TOKEN}, headers=auth) as server:
        bare = requests.Session()
        for path in ("/v2/health/ready", "/v2/health/live", "/ping", "/metrics", "/v2/models/iris"):
            r = bare.get(server.url + path, timeout=30)
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert "Authorization: Bearer" in r.json()["error"]
        r = bare.post(server.url + "/v2/models/iris/infer", json=INFER, timeout=30,
                      headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        r = bare.post(server.url + "/v2/models/iris/infer", json=INFER, timeout=30,
                      headers={"Authorization": f"bearer {TOKEN}"})  # the scheme is case-insensitive
        assert r.status_code == 200, r.text
        assert server.post("/invocations", json={"inputs": [[5.1, 3.5, 1.4, 0.2]]}).status_code == 200
        assert TOKEN not in " ".join(server.proc.args)  # never on the command line


def test_public_health_leaves_only_health_open(tmp_path, iris_bundle):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with run_server([iris_bundle], "--auth-token-file", str(token_file), "--public-health", tmp=tmp_path) as server:
        bare = requests.Session()
        for path in ("/v2/health/ready", "/v2/health/live", "/ping", "/health"):
            assert bare.get(server.url + path, timeout=30).status_code == 200, path
        assert bare.get(server.url + "/metrics", timeout=30).status_code == 401
        assert bare.post(server.url + "/v2/models/iris/infer", json=INFER, timeout=30).status_code == 401


def test_token_from_the_stack_file_reaches_every_worker(tmp_path, iris_bundle):
    (tmp_path / "token.txt").write_text(TOKEN)
    stack = tmp_path / "mlops.toml"
    stack.write_text('[server]\nauth_token_file = "token.txt"\npublic_health = true\n')
    env = {"MLOPS_CONFIG": str(stack), "MLOPS_HOME": str(tmp_path / "home")}
    with run_server([iris_bundle], "--workers", "2", tmp=tmp_path, env=env) as server:
        for _ in range(20):  # new connections, spread over both workers
            with requests.Session() as s:
                assert s.post(server.url + "/v2/models/iris/infer", json=INFER, timeout=30).status_code == 401
                r = s.post(server.url + "/v2/models/iris/infer", json=INFER, timeout=30,
                           headers={"Authorization": f"Bearer {TOKEN}"})
                assert r.status_code == 200, r.text


def test_unreadable_token_file_is_a_clear_error(tmp_path, iris_bundle):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "mlops_server", "--bundle", str(iris_bundle),
                        "--auth-token-file", str(tmp_path / "missing")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "cannot read the auth token file" in r.stderr and "hint:" in r.stderr


# ------------------------------------------------------------------ TLS
def test_tls_with_requests_and_tritonclient(tmp_path, iris_bundle, pki):
    args = ["--tls-certfile", str(pki["server_crt"]), "--tls-keyfile", str(pki["server_key"])]
    with run_server([iris_bundle], *args, tmp=tmp_path, scheme="https", verify=str(pki["ca_crt"])) as server:
        r = server.post("/v2/models/iris/infer", json=INFER)
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [0]
        with pytest.raises(requests.exceptions.SSLError):  # not trusted without the CA
            requests.get(server.url + "/v2/health/live", timeout=30)
        with pytest.raises(requests.exceptions.ConnectionError):  # plain HTTP is not served
            requests.get(f"http://127.0.0.1:{server.port}/v2/health/live", timeout=30)

        httpclient = pytest.importorskip("tritonclient.http")
        import numpy as np

        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}", ssl=True,
                                                  ssl_options={"ca_certs": str(pki["ca_crt"])})
        assert client.is_server_ready()
        inp = httpclient.InferInput("input-0", [1, 4], "FP64")
        inp.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]]), binary_data=True)
        result = client.infer("iris", [inp])
        assert result.as_numpy("output-0").tolist() == [0]
        client.close()


def test_mutual_tls_refuses_clients_without_a_trusted_certificate(tmp_path, iris_bundle, pki):
    args = ["--tls-certfile", str(pki["server_crt"]), "--tls-keyfile", str(pki["server_key"]),
            "--tls-client-ca", str(pki["ca_crt"])]
    client_cert = (str(pki["client_crt"]), str(pki["client_key"]))
    with run_server([iris_bundle], *args, tmp=tmp_path, scheme="https", verify=str(pki["ca_crt"]),
                    cert=client_cert) as server:
        assert server.post("/v2/models/iris/infer", json=INFER).status_code == 200
        for cert in (None, (str(pki["stranger_crt"]), str(pki["stranger_key"]))):
            with pytest.raises(requests.exceptions.ConnectionError):  # SSLError is one
                requests.get(server.url + "/v2/health/live", timeout=30, verify=str(pki["ca_crt"]), cert=cert)
        assert server.get("/v2/health/ready").status_code == 200  # and the server is still fine


def test_tls_settings_are_checked_before_serving(tmp_path, iris_bundle, pki):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "mlops_server", "--bundle", str(iris_bundle),
                        "--tls-certfile", str(pki["server_crt"])], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "both a certificate file and a key file" in r.stderr
    r = subprocess.run([sys.executable, "-m", "mlops_server", "--bundle", str(iris_bundle),
                        "--tls-client-ca", str(pki["ca_crt"])], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "need TLS" in r.stderr
    assert os.environ.get("MLOPS_SERVER_AUTH_TOKEN") is None
