"""S3 test fixtures: one local ``moto_server`` per test session.

``tests/conftest.py`` registers them for every test module:

    from conftest_s3 import moto_s3, s3_prefix  # noqa: F401

The server process is a module-level singleton, so importing the fixtures into
further modules still starts ONE server; it is stopped at the end of the session
(and, as a safety net, at interpreter exit).  The
fixture points the standard variables at it (``AWS_ENDPOINT_URL``, dummy
credentials, region) for the session, exactly as a user would, so the code
under test goes through its normal configuration path.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Iterator

import pytest

BUCKET = "dropedit-test"
_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never probe the instance-metadata service
}
_server: "MotoServer | None" = None


@dataclass
class MotoServer:
    endpoint: str
    bucket: str
    process: subprocess.Popen

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start() -> MotoServer:
    port = _free_port()
    exe = shutil.which("moto_server", path=os.path.dirname(sys.executable))
    cmd = [exe] if exe else [sys.executable, "-m", "moto.server"]
    proc = subprocess.Popen(
        cmd + ["-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **_ENV},
    )
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with code {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto_server did not start listening within 30 s")
            time.sleep(0.1)
    server = MotoServer(endpoint=f"http://127.0.0.1:{port}", bucket=BUCKET, process=proc)
    atexit.register(_stop, proc)
    return server


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[MotoServer]:
    """A running moto S3 server with bucket ``dropedit-test``; env points at it."""
    global _server
    if _server is None or _server.process.poll() is not None:
        _server = _start()
        with pytest.MonkeyPatch.context() as mp:
            for k, v in {**_ENV, "AWS_ENDPOINT_URL": _server.endpoint}.items():
                mp.setenv(k, v)
            for k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
                mp.delenv(k, raising=False)
            _server.client().create_bucket(Bucket=BUCKET)
            yield _server
        _stop(_server.process)
        _server = None
    else:  # a second registration of this fixture (imported in two places)
        yield _server


@pytest.fixture
def s3_prefix(moto_s3: MotoServer, request: pytest.FixtureRequest) -> str:
    """A fresh ``s3://bucket/<test>-<uuid>`` prefix for one test (no trailing slash)."""
    name = "".join(c if c.isalnum() else "-" for c in request.node.name)[:40]
    return moto_s3.uri(f"{name}-{uuid.uuid4().hex[:8]}")
