"""Walking around the guard: every way a hostile client might reach a priced
endpoint unpriced.  The app here records each request that reaches it and
whether a hold was open for the caller at that moment; each test asserts that
nothing reached it unheld and that every refusal is a contract error."""

from __future__ import annotations

import gzip
import zlib
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from credit_guard import CreditGuard, MemoryStore

from .test_middleware import PRICES

pytestmark = pytest.mark.anyio

KEY = "sk-bypass"
AUTH = {"Authorization": f"Bearer {KEY}"}
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
STATUSES = {400, 401, 402, 413, 415, 503}


class Watched:
    """A Starlette app that serves chat completions on many spellings, the way a
    lenient framework might, and records whether each call was held."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.calls: list[tuple[str, str, bool]] = []
        self.held: list[Decimal] = []

        async def chat(request: Request) -> JSONResponse:
            held = (await store.balance("acct")).held
            self.held.append(held)
            self.calls.append((request.method, request.url.path, held > 0))
            await request.body()
            return JSONResponse({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}})

        any_method = ["GET", "POST", "PUT", "PATCH", "DELETE"]
        routes = [
            Route("/v1/chat/completions", chat, methods=any_method),
            Route("/v1/chat/completions/", chat, methods=any_method),
            Route("/V1/Chat/Completions", chat, methods=any_method),
            Route("/v1/chat/completions/{rest:path}", chat, methods=any_method),
            Route("/chat/completions", chat, methods=any_method),
            Route("/v1/other", chat, methods=any_method),
            Mount("/api", routes=[Route("/v1/chat/completions", chat, methods=any_method)]),
        ]
        self.app = Starlette(routes=routes)

    def unheld(self) -> list[tuple[str, str, bool]]:
        return [call for call in self.calls if not call[2] and call[1] != "/v1/other"]


def setup(**options: Any) -> tuple[CreditGuard, Watched, MemoryStore]:
    store = MemoryStore({"acct": "1"})
    watched = Watched(store)
    guard = CreditGuard(watched.app, prices=PRICES, store=store, accounts={KEY: "acct"}, **options)
    return guard, watched, store


async def send(guard: CreditGuard, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as http:
        return await http.request(method, path, **kwargs)


def assert_contract_error(response: httpx.Response) -> None:
    assert response.status_code in STATUSES, response.text
    error = response.json()["error"]
    assert error["status"] == response.status_code
    assert {"type", "code", "message", "request_id"} <= error.keys()
    assert "Traceback" not in response.text
    assert KEY not in response.text


@pytest.mark.parametrize(
    "path",
    [
        "/v1/chat/completions/",
        "//v1//chat///completions",
        "/v1/chat/%63ompletions",
        "/v1/chat%2Fcompletions",
        "/v1/./chat/completions",
        "/v1/x/../chat/completions",
        "/V1/Chat/Completions",
        "/chat/completions",
        "/api/v1/chat/completions",
        "/v1/chat/completions?model=gpt-4o-mini",
        "/v1/chat/completions;jsessionid=1",
    ],
)
async def test_path_spellings_are_priced(path: str) -> None:
    guard, watched, store = setup()
    response = await send(guard, "POST", path, json=CHAT, headers=AUTH)
    assert response.status_code in {200, 404, 307} or response.status_code in STATUSES
    assert watched.unheld() == []
    if watched.calls:
        assert (await store.balance("acct")).spent > 0  # priced and settled


async def test_paths_below_a_priced_route_fail_closed() -> None:
    guard, watched, _ = setup()
    response = await send(guard, "POST", "/v1/chat/completions/extra", json=CHAT, headers=AUTH)
    assert_contract_error(response)
    assert response.json()["error"]["code"] == "ENDPOINT_NOT_PRICED"
    assert watched.calls == []


async def test_open_paths_below_a_priced_route_pass_when_configured() -> None:
    guard, watched, _ = setup(open_paths=("/v1/chat/completions/*/metadata",))
    response = await send(guard, "POST", "/v1/chat/completions/abc/metadata", json={}, headers=AUTH)
    assert response.status_code == 200
    assert watched.calls == [("POST", "/v1/chat/completions/abc/metadata", False)]


@pytest.mark.parametrize("method", ["PUT", "PATCH", "GET", "DELETE"])
async def test_other_methods_with_a_body_are_refused(method: str) -> None:
    guard, watched, _ = setup()
    response = await send(guard, method, "/v1/chat/completions", content=orjson.dumps(CHAT), headers=AUTH)
    assert_contract_error(response)
    assert watched.calls == []


async def test_get_without_a_body_passes_unpriced() -> None:
    guard, watched, _ = setup()
    response = await send(guard, "GET", "/v1/chat/completions", headers=AUTH)
    assert response.status_code == 200
    assert watched.calls == [("GET", "/v1/chat/completions", False)]


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"X-HTTP-Method-Override": "PUT"}, ""),
        ({"X-HTTP-Method": "GET"}, ""),
        ({"X-Method-Override": "PATCH"}, ""),
        ({}, "?_method=PUT"),
    ],
)
async def test_method_overrides_are_refused(headers: dict[str, str], query: str) -> None:
    guard, watched, _ = setup()
    response = await send(guard, "POST", "/v1/chat/completions" + query, json=CHAT, headers={**AUTH, **headers})
    assert_contract_error(response)
    assert watched.calls == []


async def test_root_path_of_a_mounted_guard() -> None:
    store = MemoryStore({"acct": "1"})
    watched = Watched(store)
    guard = CreditGuard(watched.app, prices=PRICES, store=store, accounts={KEY: "acct"})
    outer = Starlette(routes=[Mount("/gateway", app=guard)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=outer), base_url="http://t") as http:
        response = await http.post("/gateway/v1/chat/completions", json=CHAT, headers=AUTH)
    assert response.status_code in {200, 404}
    assert watched.unheld() == []


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("deflate", zlib.compress),
        ("gzip, gzip", lambda d: gzip.compress(gzip.compress(d))),
    ],
)
async def test_compressed_bodies_are_priced_decoded(coding: str, encode: Any) -> None:
    guard, watched, store = setup()
    body = orjson.dumps({**CHAT, "messages": [{"role": "user", "content": "word " * 2000}]})
    response = await send(
        guard,
        "POST",
        "/v1/chat/completions",
        content=encode(body),
        headers={**AUTH, "content-encoding": coding},
    )
    assert response.status_code == 200
    assert watched.unheld() == []
    # The 2000 words were priced as input (one token each at least), not the
    # few hundred compressed bytes.
    assert watched.held[0] >= Decimal("0.0000025") * 2000


async def test_decompression_bomb_is_413() -> None:
    guard, watched, _ = setup(max_body_bytes=100_000)
    bomb = gzip.compress(b'{"model":"gpt-4o","messages":[{"role":"user","content":"' + b"a" * 20_000_000 + b'"}]}')
    response = await send(
        guard, "POST", "/v1/chat/completions", content=bomb, headers={**AUTH, "content-encoding": "gzip"}
    )
    assert response.status_code == 413
    assert_contract_error(response)
    assert watched.calls == []


async def test_unknown_encoding_is_415() -> None:
    guard, watched, _ = setup()
    response = await send(
        guard, "POST", "/v1/chat/completions", content=b"\x00\x01", headers={**AUTH, "content-encoding": "br"}
    )
    assert response.status_code == 415
    assert_contract_error(response)
    assert watched.calls == []


async def test_chunked_body_without_length_is_priced() -> None:
    guard, watched, _ = setup()

    async def chunks() -> Any:
        data = orjson.dumps(CHAT)
        for i in range(0, len(data), 7):
            yield data[i : i + 7]

    response = await send(guard, "POST", "/v1/chat/completions", content=chunks(), headers=AUTH)
    assert response.status_code == 200
    assert watched.unheld() == []


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", orjson.dumps(CHAT)),
        ("application/x-www-form-urlencoded", b"model=gpt-4o&messages=hi&max_tokens=10"),
        (
            "multipart/form-data; boundary=x",
            b"--x\r\nContent-Disposition: form-data; name=model\r\n\r\ngpt-4o\r\n--x--",
        ),
        ("application/json", b"\xef\xbb\xbf" + orjson.dumps(CHAT)),
    ],
)
async def test_content_type_tricks(content_type: str, body: bytes) -> None:
    guard, watched, _ = setup()
    response = await send(
        guard, "POST", "/v1/chat/completions", content=body, headers={**AUTH, "content-type": content_type}
    )
    # JSON is priced whatever it is labelled; anything else is refused.
    if response.status_code != 200:
        assert_contract_error(response)
    assert watched.unheld() == []


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (
            b'{"model":"gpt-4o","max_tokens":10,"max_tokens":100000,"messages":[{"role":"user","content":"x"}]}',
            "max_tokens",
        ),
        (
            b'{"model":"gpt-4o","model":"o1","messages":[{"role":"user","content":"x"}],"max_tokens":1}',
            "model",
        ),
        (
            b'{"model":"gpt-4o","messages":[{"role":"user","content":"x","content":"a much longer text"}],"max_tokens":1}',  # noqa: E501
            "content",
        ),
        (b'{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"max_tokens":NaN}', "body"),
        (b'{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"max_tokens":Infinity}', "body"),
        (b'{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"max_tokens":1e400}', "body"),
        (b'{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"max_tokens":4096.0}', "max_tokens"),
        (b'{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"max_tokens":"4096"}', "max_tokens"),
        (b'{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"max_tokens":true}', "max_tokens"),
        (b'{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"max_tokens":0}', "max_tokens"),
        (b'{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"max_tokens":-5}', "max_tokens"),
        (b'{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"n":true}', "n"),
        (b'{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"n":2.0}', "n"),
        (b'{"model":"gpt-4o","messages":[{"role":"user","content":"x"}],"n":0}', "n"),
        (b'{"model":"gpt-4o","messages":[{"role":"user","content":"\xff\xfe"}]}', "body"),
        (b'{"model":"gpt-4o","messages":[{"role":"user","content":"\\ud800"}]}', "body"),
        (b'[{"model":"gpt-4o"}]', None),
        (b'"just a string"', None),
        (b'{"model":"gpt-4o","messages":' + b"[" * 5000 + b"]" * 5000 + b"}", None),
    ],
)
async def test_hostile_json_gets_a_clear_400(raw: bytes, param: str | None) -> None:
    guard, watched, _ = setup()
    response = await send(
        guard,
        "POST",
        "/v1/chat/completions",
        content=raw,
        headers={**AUTH, "content-type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert_contract_error(response)
    if param is not None:
        assert response.json()["error"]["param"] == param
    assert watched.calls == []


async def test_100000_messages_are_priced_exactly() -> None:
    guard, watched, store = setup()
    body = {**CHAT, "messages": [{"role": "user", "content": "hi"}] * 100_000}
    response = await send(guard, "POST", "/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code in (200, 402)
    assert watched.unheld() == []
    if response.status_code == 402:
        # 3 framing + 1 role + 1 content token per message, at least.
        assert response.json()["error"]["context"]["input_tokens"] >= 500_000


async def test_402_and_errors_never_carry_the_key_or_other_accounts() -> None:
    store = MemoryStore({"acct": "0.000001", "other": "1000"})
    watched = Watched(store)
    guard = CreditGuard(watched.app, prices=PRICES, store=store, accounts={KEY: "acct", "sk-other": "other"})
    response = await send(guard, "POST", "/v1/chat/completions", json=CHAT, headers=AUTH)
    assert response.status_code == 402
    assert KEY not in response.text
    assert "other" not in response.text
    assert "1000" not in response.text
    bad = await send(guard, "POST", "/v1/chat/completions", content=b"{", headers=AUTH)
    assert_contract_error(bad)


@pytest.mark.parametrize(
    ("policy", "method", "path", "headers", "status"),
    [
        ("pass", "GET", "/v1/other", {}, 200),
        ("pass", "POST", "/v1/other", {}, 200),
        ("authenticate", "GET", "/v1/other", {}, 401),
        ("authenticate", "POST", "/v1/other", AUTH, 200),
        ("refuse", "GET", "/v1/other", {}, 401),
        ("refuse", "GET", "/v1/other", AUTH, 200),
        ("refuse", "POST", "/v1/other", AUTH, 400),
        ("refuse", "DELETE", "/v1/other", AUTH, 400),
    ],
)
async def test_unpriced_routes_follow_the_policy(
    policy: str, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    guard, watched, _ = setup(unpriced=policy)
    response = await send(guard, method, path, headers=headers, content=b"{}" if method == "POST" else None)
    assert response.status_code == status
    if status != 200:
        assert_contract_error(response)
        assert watched.calls == []
    else:
        assert len(watched.calls) == 1


def test_unknown_unpriced_policy_is_refused_at_construction() -> None:
    with pytest.raises(ValueError):
        setup(unpriced="sometimes")
