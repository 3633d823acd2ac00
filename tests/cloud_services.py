"""Real object-store servers on loopback for the cloud-stack tests: moto (S3) and Azurite (Azure Blob).

Each is started as its own process on a free port and stopped at the end. Azurite comes from
the npm registry; it is installed once into a cache folder (``$XDG_CACHE_HOME/mlops-core/azurite``)
under a file lock, so parallel test workers install it once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

AZURITE_VERSION = "3.37.0"
#: Azurite's documented development account (public, well-known: not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, log: Path, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not answer on {url}: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)


@contextlib.contextmanager
def _process(argv: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def moto_s3(workdir: Path, bucket: str) -> Iterator[dict]:
    """A moto S3 server with one bucket (the kit's :func:`mlops_core.testing.s3.moto_s3`); yields fsspec options."""
    from mlops_core.testing.s3 import moto_s3 as kit_moto_s3

    with kit_moto_s3(workdir, bucket) as s3:
        yield s3.options


def azurite_command() -> list[str]:
    """The azurite-blob launcher, installed from npm into the cache on first use."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlops-core" / f"azurite-{AZURITE_VERSION}"
    launcher = cache / "node_modules" / ".bin" / "azurite-blob"
    # The marker is written only after npm finished: an install cut short (timeout, killed run) is redone, not used.
    complete = cache / ".mlops-installed"
    if not complete.exists():
        if shutil.which("npm") is None:
            raise RuntimeError("npm is needed to install Azurite (apt-get install npm, or Node.js from nodejs.org)")
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(cache.parent / f".azurite-{AZURITE_VERSION}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not complete.exists():
                shutil.rmtree(cache, ignore_errors=True)
                cache.mkdir(parents=True)
                done = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(cache),
                                       f"azurite@{AZURITE_VERSION}"], capture_output=True, text=True, timeout=900)
                if done.returncode != 0 or not launcher.exists():
                    raise RuntimeError(f"npm install azurite failed: {done.stderr[-2000:]}")
                complete.write_text(AZURITE_VERSION)
    return [str(launcher)]


@contextlib.contextmanager
def azurite(workdir: Path, container: str) -> Iterator[dict]:
    """An Azurite blob server with one container; yields the fsspec (adlfs) storage options."""
    from azure.storage.blob import BlobServiceClient

    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    data = workdir / "azurite"
    data.mkdir(exist_ok=True)
    log = workdir / "azurite.log"
    argv = [*azurite_command(), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(data),
            "--skipApiVersionCheck", "--loose", "--silent"]
    with _process(argv, log) as proc:
        _wait_http(f"http://127.0.0.1:{port}/", proc, log, "azurite")
        connection = (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
                      f"BlobEndpoint={endpoint};")
        BlobServiceClient.from_connection_string(connection).create_container(container)
        yield {"connection_string": connection}
