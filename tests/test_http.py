"""The guard over real HTTP (uvicorn on 127.0.0.1): streaming settlement, the
stream the client sees, disconnects, and admission under concurrency."""

from __future__ import annotations

import asyncio
import threading
import time
from decimal import Decimal
from typing import Any

import anyio
import httpx
import orjson
import pytest

from credit_guard import CreditGuard, MemoryStore, PriceTable
from credit_guard.fake_llm import create_app

from .servers import serve

pytestmark = pytest.mark.anyio

KEY = "sk-http-1"
AUTH = {"Authorization": f"Bearer {KEY}"}
IN = Decimal("0.15") / 1_000_000
OUT = Decimal("0.60") / 1_000_000
PRICES = PriceTable.from_dict(
    {
        "format": "credit_guard/prices@1",
        "currency": "USD",
        "as_of": "2026-11-01",
        "source": "test",
        "models": {
            "gpt-4o-mini": {
                "kind": "chat",
                "provider": "openai",
                "input": "0.15",
                "output": "0.60",
                "max_output_tokens": 16384,
                "encoding": "o200k_base",
            },
        },
    }
)
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say something."}], "max_tokens": 50}


def guarded(balance: str = "1.00", **options: Any) -> tuple[CreditGuard, MemoryStore]:
    store = MemoryStore({"acct": balance})
    app = CreditGuard(
        create_app(default_tokens=12, deterministic=True),
        prices=PRICES,
        store=store,
        accounts={KEY: "acct"},
        **options,
    )
    return app, store


async def settled(store: MemoryStore, account: str = "acct") -> Any:
    """The balance once every hold has ended (settlement runs after the last byte)."""
    for _ in range(200):
        balance = await store.balance(account)
        if balance.held == 0:
            return balance
        await anyio.sleep(0.01)
    raise AssertionError(f"a hold never ended: {balance}")


async def input_tokens(base: str, body: dict[str, Any]) -> int:
    """The input count the guard priced, read from its 402 for the same body."""
    async with httpx.AsyncClient(base_url=base) as http:
        refused = await http.post("/v1/chat/completions", json={**body, "n": 128, "max_tokens": 16384}, headers=AUTH)
    assert refused.status_code == 402
    return int(refused.json()["error"]["context"]["input_tokens"])


async def stream_bytes(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[bytes, int]:
    async with httpx.AsyncClient(base_url=url) as http:
        async with http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response:
            chunks = [chunk async for chunk in response.aiter_raw()]
            return b"".join(chunks), response.status_code


@pytest.mark.parametrize("include_usage", [True, False])
async def test_stream_reaches_the_client_as_without_the_guard_and_settles_exactly(
    include_usage: bool,
) -> None:
    body: dict[str, Any] = {**CHAT, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    app, store = guarded()
    with serve(create_app(default_tokens=12, deterministic=True)) as bare_url, serve(app) as guard_url:
        bare, _ = await stream_bytes(bare_url, body, {})
        through, status = await stream_bytes(guard_url, body, AUTH)
        tokens = await input_tokens(guard_url, CHAT)
    assert status == 200
    assert through == bare
    assert (b'"usage":' in through) is include_usage
    balance = await settled(store)
    assert balance.spent == IN * tokens + OUT * 12


async def test_stream_without_any_usage_is_settled_on_the_counted_output() -> None:
    app, store = guarded()
    with serve(app) as url:
        data, status = await stream_bytes(url, {**CHAT, "stream": True}, {**AUTH, "x-fake-no-usage": "1"})
        tokens = await input_tokens(url, CHAT)
    assert status == 200
    assert b"[DONE]" in data
    balance = await settled(store)
    assert balance.spent == IN * tokens + OUT * 12


async def test_overrun_is_charged_in_full() -> None:
    app, store = guarded()
    with serve(app) as url:
        _, status = await stream_bytes(
            url,
            {**CHAT, "stream": True, "max_tokens": 10},
            {**AUTH, "x-fake-extra-usage": "500"},
        )
        tokens = await input_tokens(url, CHAT)
    assert status == 200
    balance = await settled(store)
    # The upstream reported 510 output tokens against a hold for 10: all are charged.
    assert balance.spent == IN * tokens + OUT * 510
    assert balance.available == Decimal("1.00") - balance.spent


async def test_client_disconnect_mid_stream_settles_what_was_produced() -> None:
    app, store = guarded()
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            async with http.stream(
                "POST",
                "/v1/chat/completions",
                json={**CHAT, "stream": True, "max_tokens": 2000},
                headers={**AUTH, "x-fake-tokens": "2000", "x-fake-delay-ms": "5"},
            ) as response:
                assert response.status_code == 200
                seen = 0
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        seen += 1
                    if seen >= 5:
                        break
        balance = await settled(store)
        tokens = await input_tokens(url, CHAT)
    # At least what the client read was charged, far less than the whole reply.
    assert balance.spent >= IN * tokens + OUT * 3
    assert balance.spent < IN * tokens + OUT * 2000
    assert balance.available + balance.held + balance.spent == balance.granted


async def test_402_over_real_http() -> None:
    app, store = guarded("0.0001")
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            response = await http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 4096}, headers=AUTH)
    assert response.status_code == 402
    error = response.json()["error"]
    assert error["context"]["affordable_max_tokens"] is not None
    assert response.headers["x-request-id"] == error["request_id"]


def _exactly_ten_balance(tokens: int) -> Decimal:
    return (IN * tokens + OUT * CHAT["max_tokens"]) * 10  # type: ignore[operator]


def _gated(app: CreditGuard, gate: threading.Event) -> None:
    """Admitted requests wait at the app until ``gate`` is set, so every hold is
    still open while the rest of the flood is decided."""
    inner = app.app

    async def waiting(scope: Any, receive: Any, send: Any) -> None:
        while not gate.is_set():
            await anyio.sleep(0.005)
        await inner(scope, receive, send)

    app.app = waiting


async def _flood_until_refused(http: httpx.AsyncClient, count: int, admit: int, gate: threading.Event) -> list[int]:
    done: list[int] = []

    async def one() -> int:
        response = await http.post("/v1/chat/completions", json=CHAT, headers=AUTH)
        done.append(response.status_code)
        return response.status_code

    async def open_gate() -> None:
        deadline = time.monotonic() + 60
        while len(done) < count - admit and time.monotonic() < deadline:
            await anyio.sleep(0.01)
        gate.set()

    opener = asyncio.ensure_future(open_gate())
    statuses = list(await asyncio.gather(*(one() for _ in range(count))))
    await opener
    return statuses


async def _priced_tokens() -> int:
    probe, _ = guarded("0")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=probe), base_url="http://t") as http:
        refused = await http.post("/v1/chat/completions", json={**CHAT, "n": 128, "max_tokens": 16384}, headers=AUTH)
    return int(refused.json()["error"]["context"]["input_tokens"])


async def test_1000_concurrent_requests_admit_exactly_what_the_balance_covers_asgi() -> None:
    app, store = guarded(str(_exactly_ten_balance(await _priced_tokens())))
    gate = threading.Event()
    _gated(app, gate)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http:
        statuses = await _flood_until_refused(http, 1000, 10, gate)
    assert statuses.count(200) == 10
    assert statuses.count(402) == 990
    balance = await settled(store)
    assert balance.available + balance.held + balance.spent == balance.granted
    assert balance.spent > 0


async def test_1000_concurrent_requests_over_real_http() -> None:
    app, store = guarded(str(_exactly_ten_balance(await _priced_tokens())))
    gate = threading.Event()
    _gated(app, gate)
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
    with serve(app, backlog=2048) as url:
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
            statuses = await _flood_until_refused(http, 1000, 10, gate)
        balance = await settled(store)
    assert statuses.count(200) == 10, sorted(set(statuses))
    assert statuses.count(402) == 990
    assert balance.available + balance.held + balance.spent == balance.granted
    assert balance.available >= 0


async def test_stream_outliving_the_ttl_keeps_its_hold() -> None:
    app, store = guarded(hold_ttl=0.3)
    with serve(app) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            async with http.stream(
                "POST",
                "/v1/chat/completions",
                json={**CHAT, "stream": True, "max_tokens": 100},
                headers={**AUTH, "x-fake-tokens": "100", "x-fake-delay-ms": "10"},
            ) as response:
                held_during = []
                async for _ in response.aiter_lines():
                    held_during.append((await store.balance("acct")).held)
    # A second after start the hold (TTL 0.3 s) was still there.
    assert held_during[-10] > 0
    balance = await settled(store)
    assert balance.spent > 0
    assert balance.available + balance.spent == balance.granted


async def test_response_json_body_is_unchanged() -> None:
    app, _ = guarded()
    with serve(create_app(default_tokens=12, deterministic=True)) as bare_url, serve(app) as guard_url:
        async with httpx.AsyncClient() as http:
            bare = await http.post(bare_url + "/v1/chat/completions", json=CHAT)
            through = await http.post(guard_url + "/v1/chat/completions", json=CHAT, headers=AUTH)
    assert through.content == bare.content
    assert orjson.loads(through.content)["usage"]["completion_tokens"] == 12
