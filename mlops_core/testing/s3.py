"""A real S3 API for tests: moto's server in its own process on a free loopback port.

Storage plugins, batch engines and cloud stacks test against the S3 protocol itself
(multipart uploads, listings, errors over HTTP), not against a mock inside the test
process::

    from mlops_core.testing.s3 import moto_s3

    with moto_s3(tmp_path, "my-bucket") as s3:
        store = MyStore("s3://my-bucket/x", storage_options=s3.options)

Needs ``moto[server]`` and ``boto3`` (``requirements-test.txt``); ``s3fs`` to use
``s3.options`` with fsspec.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import attrs

from .waiting import wait_until

__all__ = ["MotoS3", "moto_s3"]

#: The credentials moto accepts (any work; these are the conventional ones).
KEY = SECRET = "testing"
REGION = "us-east-1"


@attrs.frozen
class MotoS3:
    """A running moto S3 server: its endpoint, the bucket made for the test and a boto3 client."""

    endpoint: str
    bucket: str
    client: Any

    @property
    def options(self) -> dict[str, Any]:
        """fsspec/s3fs storage options for this server."""
        return {"key": KEY, "secret": SECRET, "endpoint_url": self.endpoint, "client_kwargs": {"region_name": REGION}}


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        pass  # an HTTP error is an answer
    return True


@contextlib.contextmanager
def moto_s3(workdir: Path, bucket: str, *, timeout: float = 90.0) -> Iterator[MotoS3]:
    """Start moto's S3 server (log in ``workdir/moto.log``), create ``bucket``, stop the server on exit."""
    import boto3

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET}
    log = Path(workdir) / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        try:
            wait_until(lambda: _answers(endpoint + "/"), timeout, f"moto's S3 server at {endpoint}",
                       interval=0.1, proc=proc, ignore=(OSError,))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n---- {log} ----\n{log.read_text(errors='replace')[-2000:]}") from None
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                              region_name=REGION)
        client.create_bucket(Bucket=bucket)
        yield MotoS3(endpoint, bucket, client)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
