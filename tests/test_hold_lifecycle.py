"""Holds end whatever the client does: trickled bodies, clients that leave while
the body is read, Responses and Anthropic streams, a store that goes away, and
schema migrations of an older store file."""

from __future__ import annotations

import socket
import sqlite3
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest

from credit_guard import CreditGuard, MemoryStore, PriceTable
from credit_guard.fake_llm import create_app
from credit_guard.stores import SQLiteStore, StoreUnavailable
from credit_guard.stores.sqlite import MIGRATIONS, SCHEMA_VERSION

from .servers import serve

pytestmark = pytest.mark.anyio

KEY = "sk-lifecycle-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
PRICES = PriceTable.default()


def guarded(**options: Any) -> tuple[CreditGuard, MemoryStore]:
    store = MemoryStore({"acct": "1.00"}, keys={KEY: "acct"})
    return CreditGuard(create_app(default_tokens=9), prices=PRICES, store=store, **options), store


def raw_request(port: int, body: bytes, *, trickle: bool = False, cut_after: int | None = None) -> bytes:
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        for i in range(len(body)):
            if cut_after is not None and i == cut_after:
                return b""  # the client goes away mid-body
            if trickle:
                sock.sendall(body[i : i + 1])
                time.sleep(0.002)
        if not trickle:
            sock.sendall(body)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        return reply


async def held_after(store: MemoryStore) -> Decimal:
    for _ in range(100):
        balance = await store.balance("acct")
        if balance.held == 0:
            break
        await anyio.sleep(0.02)
    return balance.held


async def test_a_body_trickled_byte_by_byte_is_priced_and_settled() -> None:
    app, store = guarded()
    body = orjson.dumps(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi " * 20}], "max_tokens": 9}
    )
    with serve(app) as url:
        port = int(url.rsplit(":", 1)[1])
        reply = await anyio.to_thread.run_sync(lambda: raw_request(port, body, trickle=True))
    assert reply.startswith(b"HTTP/1.1 200")
    assert await held_after(store) == 0
    assert (await store.balance("acct")).spent > 0


async def test_a_client_leaving_mid_body_leaves_no_hold_and_no_task() -> None:
    app, store = guarded()
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * 5000}]})
    with serve(app) as url:
        port = int(url.rsplit(":", 1)[1])
        for _ in range(5):
            await anyio.to_thread.run_sync(lambda: raw_request(port, body, trickle=True, cut_after=50))
        await anyio.sleep(0.3)
        # The server still serves, and nothing was held or spent.
        async with httpx.AsyncClient() as http:
            ok = await http.post(url + "/v1/chat/completions", content=body, headers=AUTH)
    assert ok.status_code == 200
    balance = await store.balance("acct")
    assert balance.held == 0
    assert balance.spent == Decimal("0.00000015") * ok.json()["usage"]["prompt_tokens"] + Decimal("0.0000006") * 9


@pytest.mark.parametrize(
    ("path", "body", "usage_of"),
    [
        (
            "/v1/responses",
            {"model": "gpt-4o-mini", "input": "Say hi", "max_output_tokens": 50, "stream": True},
            lambda events: [e for e in events if b"response.completed" in e][0],
        ),
        (
            "/v1/messages",
            {
                "model": "claude-haiku-4-5",
                "max_tokens": 50,
                "stream": True,
                "messages": [{"role": "user", "content": "Hi"}],
            },
            lambda events: [e for e in events if b"message_start" in e][0],
        ),
    ],
)
async def test_responses_and_anthropic_streams_settle_on_their_usage(
    path: str, body: dict[str, Any], usage_of: Any
) -> None:
    app, store = guarded()
    with serve(app) as url:
        async with httpx.AsyncClient() as http:
            async with http.stream("POST", url + path, json=body, headers=AUTH) as response:
                assert response.status_code == 200
                data = b"".join([chunk async for chunk in response.aiter_raw()])
    events = data.split(b"\n\n")
    assert len(events) > 9
    price = PRICES.resolve(body["model"])
    payload = orjson.loads(usage_of(events).split(b"data: ", 1)[1])
    usage = (payload.get("response") or payload.get("message"))["usage"]
    prompt = usage["input_tokens"]
    assert await held_after(store) == 0
    assert (await store.balance("acct")).spent == price.input_price * prompt + price.output_price * 9


class DownStore(MemoryStore):
    async def reserve(self, *args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("down")


async def test_fail_closed_by_default_and_open_when_asked() -> None:
    store = DownStore({"acct": "1"}, keys={KEY: "acct"})
    seen: list[str] = []
    inner = create_app()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope.get("path", ""))
        await inner(scope, receive, send)

    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}
    for fail_open, status in ((False, 503), (True, 200)):
        guard = CreditGuard(app, prices=PRICES, store=store, fail_open=fail_open)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as http:
            response = await http.post("/v1/chat/completions", json=body, headers=AUTH)
        assert response.status_code == status
        if status == 503:
            assert response.json()["error"]["type"] == "credit_store_unavailable"
            assert seen == []
    assert seen == ["/v1/chat/completions"]


async def test_an_older_store_file_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    MIGRATIONS[0](db)  # a file written by schema version 1
    db.execute("INSERT INTO schema_version VALUES (1)")
    db.execute("INSERT INTO accounts (id, granted, spent, held, created) VALUES ('acct', 50000000000, 0, 0, 0)")
    db.close()
    store = SQLiteStore(path)
    try:
        balance = await store.balance("acct")
        assert balance.granted == Decimal("5")
        await store.grant("acct", "1", note="after the migration")
        history = await store.history("acct")
        assert history[-1]["note"] == "after the migration"
    finally:
        await store.aclose()
    check = sqlite3.connect(path)
    assert check.execute("SELECT version FROM schema_version").fetchone()[0] == SCHEMA_VERSION == 3
    check.close()


async def test_a_metrics_hook_that_raises_after_the_hold_leaves_no_hold() -> None:
    """A hook must not raise; where one does, the request fails without
    reaching the app, and the hold it had is released at once."""
    from credit_guard.metrics import Metrics

    class Broken(Metrics):
        def hold_opened(self, model: str, amount: Decimal) -> None:
            raise RuntimeError("the metrics backend is gone")

    calls = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])

    store = MemoryStore({"acct": "1.00"}, keys={KEY: "acct"})
    guard = CreditGuard(app, prices=PRICES, store=store, metrics=Broken())
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 9})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as client:
        with pytest.raises(RuntimeError, match="metrics backend"):
            await client.post("/v1/chat/completions", content=body, headers=AUTH)
    after = await store.balance("acct")
    assert after.held == 0 and after.spent == 0 and after.available == Decimal("1.00")
    assert calls == []
