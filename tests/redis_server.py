"""A real redis-server for tests, on 127.0.0.1 and a free port.

Outside CI a missing ``redis-server`` skips the Redis tests with a reason; in CI
(``CI`` set) it fails them: `.ci/run` installs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from .servers import free_port, wait_for_port


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (.ci/run installs it from Debian's packages)")
        pytest.skip("redis-server is not installed")
    return binary


class RedisServer:
    def __init__(self, port: int | None = None) -> None:
        self.binary = redis_binary()
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                wait_for_port(self.port, timeout=0.05)
            except TimeoutError:
                return


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.kill()
