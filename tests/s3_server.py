"""An S3-compatible server for tests: ``moto`` in server mode (a real HTTP server, its own process) on
127.0.0.1 at a free port, reached through s3fs exactly as a production ``ATELIER_BLOB_URL=s3://…`` is.

Each test gets a bucket of its own (:meth:`MotoServer.new_bucket`), so blobs and checkpoints never leak between
tests sharing the server.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

S3_ENV = "ATELIER_TEST_S3"  # set to 1 to run the S3 variant (`-m s3`); CI does
# moto accepts any credentials; s3fs needs some (and a region) to sign requests.
CREDENTIALS = {"key": "testing", "secret": "testing", "client_kwargs": {"region_name": "us-east-1"}}


def s3_selected() -> bool:
    return os.environ.get(S3_ENV, "").strip().lower() in ("1", "true", "yes")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """``python -m moto.server`` on 127.0.0.1; :meth:`start` waits until it answers."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoint = ""

    def start(self, timeout: float = 60) -> str:
        for _ in range(3):  # the free port may be taken between probing and binding: try another
            port = _free_port()
            self.endpoint = f"http://127.0.0.1:{port}"
            log = open(self.log_path, "ab")  # noqa: SIM115 — handed to the child, closed when we return
            try:
                self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            finally:
                log.close()
            if self._wait_ready(timeout):
                return self.endpoint
            self.stop()
        raise RuntimeError(f"moto server did not start; see {self.log_path}:\n{self.log_path.read_text()[-2000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/data.json", timeout=2):
                    return True
            except OSError:
                time.sleep(0.2)
        return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def options(self) -> dict[str, Any]:
        """fsspec/s3fs storage options that reach this server (what ``ATELIER_BLOB_OPTIONS`` carries)."""
        return {"endpoint_url": self.endpoint, **CREDENTIALS}

    def new_bucket(self, prefix: str = "t") -> str:
        """Create an empty bucket; returns its name."""
        import boto3  # moto's own dependency

        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=CREDENTIALS["key"],
                     aws_secret_access_key=CREDENTIALS["secret"], region_name="us-east-1").create_bucket(Bucket=name)
        return name
