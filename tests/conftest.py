"""Shared fixtures.  Async tests use anyio's pytest plugin on asyncio."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_url() -> object:
    """A real redis-server on 127.0.0.1, for the whole session."""
    from .redis_server import running_redis

    with running_redis() as server:
        yield server.url
