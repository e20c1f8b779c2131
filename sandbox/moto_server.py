"""moto's server as a child process on 127.0.0.1, for tests, the sandbox and benchmarks.

A separate process rather than moto's in-process decorators: the code under
test talks to AWS over real HTTP exactly as it would in AWS, and a busy moto
does not steal the GIL from the code being measured.
"""

from __future__ import annotations

import os
import secrets
import subprocess  # nosec B404 # starts moto with fixed arguments
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from sandbox.postgres import free_port

REGION = "ap-south-1"  # Mumbai: where Kite's servers are, so where this service runs
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class AwsEndpoint:
    """Where and as whom to call the emulated AWS APIs."""

    url: str
    region: str
    access_key_id: str
    secret_access_key: str

    def env(self) -> dict[str, str]:
        """Environment variables that point the AWS SDKs at this endpoint."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``boto3.client(...)``."""
        return {
            "endpoint_url": self.url,
            "region_name": self.region,
            "aws_access_key_id": self.access_key_id,
            "aws_secret_access_key": self.secret_access_key,
        }


class MotoServer:
    """A moto server process; ``reset()`` wipes every emulated resource."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        # Fresh fake credentials per server: moto accepts any, and none are committed.
        self.endpoint = AwsEndpoint(
            self.url, REGION, "AKID" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)
        )

    def start(self) -> AwsEndpoint:
        """Start the server and wait until it answers."""
        if self._process and self._process.poll() is None:
            return self.endpoint
        env = {**os.environ, "MOTO_PORT": str(self.port)}
        self._process = subprocess.Popen(  # nosec B603 # fixed arguments
            # moto's server, with Kinesis calls serialised (see sandbox.moto_app).
            [sys.executable, "-m", "sandbox.moto_app", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self._process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1):  # noqa: S310 # nosec B310 # loopback
                    return self.endpoint
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server not ready after {START_TIMEOUT_S}s")

    def reset(self) -> None:
        """Delete every emulated resource (moto slows as it accumulates data)."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 # nosec B310 # loopback
            pass

    def stop(self) -> None:
        """Stop the server process."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
