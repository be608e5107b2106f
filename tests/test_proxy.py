"""The streaming reverse proxy, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import time
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from credit_guard.proxy import create_proxy

from .servers import free_port, serve

pytestmark = pytest.mark.anyio


def upstream_app(seen: list[dict[str, Any]]) -> Starlette:
    async def slow_stream(request: Request) -> Response:
        seen.append(dict(request.headers))

        async def events() -> Any:
            yield b"data: first\n\n"
            await anyio.sleep(1.0)
            yield b"data: second\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def status(request: Request) -> Response:
        seen.append(dict(request.headers))
        code = int(request.path_params["code"])
        return JSONResponse({"error": {"message": f"upstream says {code}"}}, status_code=code)

    async def sleepy(request: Request) -> Response:
        await anyio.sleep(3)
        return JSONResponse({})

    return Starlette(
        routes=[
            Route("/v1/stream", slow_stream, methods=["POST"]),
            Route("/v1/status/{code}", status, methods=["GET", "POST"]),
            Route("/v1/sleepy", sleepy, methods=["POST"]),
        ]
    )


async def test_streams_chunk_by_chunk_without_buffering() -> None:
    seen: list[dict[str, Any]] = []
    with serve(upstream_app(seen)) as upstream, serve(create_proxy(upstream + "/v1"), lifespan="on") as proxy:
        async with httpx.AsyncClient(timeout=10) as http:
            started = time.monotonic()
            async with http.stream("POST", proxy + "/v1/stream", content=b"{}") as response:
                chunks = response.aiter_raw()
                first = await chunks.__anext__()
                first_at = time.monotonic() - started
                rest = b"".join([chunk async for chunk in chunks])
                total = time.monotonic() - started
    assert first.startswith(b"data: first")
    assert b"second" in rest
    # The first event arrived well before the upstream finished.
    assert first_at < total - 0.5


async def test_upstream_errors_pass_through_and_keys_are_replaced() -> None:
    seen: list[dict[str, Any]] = []
    with (
        serve(upstream_app(seen)) as upstream,
        serve(create_proxy(upstream, api_key="sk-upstream"), lifespan="on") as proxy,
    ):
        async with httpx.AsyncClient() as http:
            for code in (429, 500):
                response = await http.post(
                    proxy + f"/v1/status/{code}",
                    content=b"{}",
                    headers={"Authorization": "Bearer sk-gateway-secret", "x-api-key": "sk-gateway-secret"},
                )
                assert response.status_code == code
                assert response.json() == {"error": {"message": f"upstream says {code}"}}
    for headers in seen:
        assert headers["authorization"] == "Bearer sk-upstream"
        assert "x-api-key" not in headers
        assert "sk-gateway-secret" not in str(headers)
        assert headers["accept-encoding"] == "identity"


async def test_upstream_down_is_502_and_slow_is_504() -> None:
    with serve(create_proxy(f"http://127.0.0.1:{free_port()}"), lifespan="on") as proxy:
        async with httpx.AsyncClient() as http:
            down = await http.post(proxy + "/v1/chat/completions", content=b"{}")
    assert down.status_code == 502
    assert down.json()["error"]["type"] == "upstream_error"
    seen: list[dict[str, Any]] = []
    with serve(upstream_app(seen)) as upstream, serve(create_proxy(upstream, timeout=0.5), lifespan="on") as proxy:
        async with httpx.AsyncClient(timeout=10) as http:
            slow = await http.post(proxy + "/v1/sleepy", content=b"{}")
    assert slow.status_code == 504
    assert slow.json()["error"]["type"] == "upstream_timeout"


def test_upstream_must_be_http() -> None:
    with pytest.raises(ValueError):
        create_proxy("ftp://example")
