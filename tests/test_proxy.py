"""The streaming reverse proxy, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import threading
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


def upstream_app(seen: list[dict[str, Any]], first_received: threading.Event | None = None) -> Starlette:
    async def slow_stream(request: Request) -> Response:
        seen.append(dict(request.headers))

        async def events() -> Any:
            yield b"data: first\n\n"
            # The rest comes only once the client holds the first event: a proxy
            # that buffered the stream would never deliver it.
            while first_received is not None and not first_received.is_set():
                await anyio.sleep(0.01)
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
    first_received = threading.Event()
    upstream_app_ = upstream_app(seen, first_received)
    with serve(upstream_app_) as upstream, serve(create_proxy(upstream + "/v1"), lifespan="on") as proxy:
        async with httpx.AsyncClient(timeout=30) as http:
            async with http.stream("POST", proxy + "/v1/stream", content=b"{}") as response:
                chunks = response.aiter_raw()
                with anyio.fail_after(20):  # a buffering proxy would wait here forever
                    first = await chunks.__anext__()
                first_received.set()
                rest = b"".join([chunk async for chunk in chunks])
    assert first.startswith(b"data: first")
    assert b"second" in rest


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


def account_app(status: int) -> Starlette:
    """An upstream that is itself a gateway: its own credit headers, and a
    refusal that shows its account's figures."""

    async def chat(request: Request) -> Response:
        headers = {"x-credits-remaining": "12.34", "server": "upstream-gateway", "x-ratelimit-limit-requests": "60"}
        body = {"error": {"message": "Account acct_ops has $12.34 left"}} if status >= 400 else {"choices": []}
        return JSONResponse(body, status_code=status, headers=headers)

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.mark.parametrize("status", [401, 402, 403])
async def test_upstream_refusals_of_the_gateway_are_502_without_the_upstream_body(status: int) -> None:
    with serve(account_app(status)) as upstream, serve(create_proxy(upstream), lifespan="on") as proxy:
        async with httpx.AsyncClient() as http:
            response = await http.post(proxy + "/v1/chat/completions", content=b"{}", headers={"x-request-id": "r-1"})
    assert response.status_code == 502
    assert response.json()["error"] | {"message": "-"} == {
        "type": "upstream_error",
        "code": "UPSTREAM_REJECTED",
        "status": 502,
        "param": None,
        "message": "-",
        "request_id": "r-1",
    }
    assert f"HTTP {status}" in response.json()["error"]["message"]
    assert "12.34" not in response.text and "12.34" not in str(response.headers)


async def test_upstream_credit_and_server_headers_are_dropped() -> None:
    with serve(account_app(200)) as upstream, serve(create_proxy(upstream), lifespan="on") as proxy:
        async with httpx.AsyncClient() as http:
            response = await http.post(proxy + "/v1/chat/completions", content=b"{}")
    assert response.status_code == 200
    assert "x-credits-remaining" not in response.headers
    assert response.headers.get_list("server") == ["uvicorn"]
    assert len(response.headers.get_list("date")) == 1
    assert response.headers["x-ratelimit-limit-requests"] == "60"


def test_upstream_must_be_a_plain_url() -> None:
    for upstream in ("http://user:pw@example", "http://example/v1?x=1", "http:///v1"):
        with pytest.raises(ValueError):
            create_proxy(upstream)
