"""How a hold ends, over real HTTP: a hold lives as long as its request, and
usage the guard cannot read costs the hold, in every shape an upstream sends it."""

from __future__ import annotations

import threading
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest

from credit_guard import CreditGuard, MemoryStore, PriceTable, shapes, tokens
from credit_guard.fake_llm import create_app
from credit_guard.metrics import Metrics
from credit_guard.quote import make_quote
from credit_guard.stores import SQLiteStore

from .servers import serve

pytestmark = pytest.mark.anyio

KEY = "sk-settlement-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
PRICES = PriceTable.default()
CHAT = "/v1/chat/completions"


class Recorder(Metrics):
    """Every hook call, for the test to read."""

    def __init__(self) -> None:
        self.finished: list[tuple[str, str, Decimal]] = []
        self.expired = 0
        self.unreadable: list[tuple[str, str]] = []

    def hold_finished(self, model: str, status: str, charged: Decimal, overrun: Decimal) -> None:
        self.finished.append((model, status, charged))

    def holds_expired(self, count: int) -> None:
        self.expired += count

    def usage_unreadable(self, model: str, reason: str) -> None:
        self.unreadable.append((model, reason))


def max_cost(body: dict[str, Any]) -> Decimal:
    ask = shapes.parse("chat", body)
    price = PRICES.resolve(ask.model)
    return make_quote(ask, price, tokens.count_input(ask, price).tokens).max_cost


def open_store(kind: str, tmp_path: Path, balance: Decimal) -> Any:
    if kind == "memory":
        return MemoryStore({"acct": balance}, keys={KEY: "acct"})
    store = SQLiteStore(tmp_path / "credits.db")
    return store


async def prepared(kind: str, tmp_path: Path, balance: Decimal) -> Any:
    store = open_store(kind, tmp_path, balance)
    if kind == "sqlite":
        await store.grant("acct", balance)
        await store.add_key(KEY, "acct")
    return store


async def settled(store: Any) -> Any:
    for _ in range(200):
        balance = await store.balance("acct")
        if balance.held == 0:
            return balance
        await anyio.sleep(0.02)
    return balance


# -- A hold lives as long as its request ------------------------------------


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_a_request_silent_past_the_ttl_keeps_its_hold(kind: str, tmp_path: Path) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 9}
    worst = max_cost(body)
    # Enough for one request's worst case, not two.
    granted = (worst * 3 / 2).quantize(Decimal("1e-10"))
    store = await prepared(kind, tmp_path, granted)
    entered = threading.Event()
    second_done = threading.Event()
    inner = create_app(default_tokens=9)

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not entered.is_set():
            entered.set()
            # Silent for several TTLs before the first byte (a long think, a
            # slow upstream), and at most 2 s.
            for _ in range(200):
                if second_done.is_set():
                    break
                await anyio.sleep(0.01)
        await inner(scope, receive, send)

    metrics = Recorder()
    guard = CreditGuard(slow, prices=PRICES, store=store, hold_ttl=0.5, metrics=metrics)
    try:
        with serve(guard) as url:
            async with httpx.AsyncClient(timeout=30) as http:
                async with anyio.create_task_group() as tg:
                    first: list[httpx.Response] = []

                    async def run_first() -> None:
                        first.append(await http.post(url + CHAT, json=body, headers=AUTH))

                    tg.start_soon(run_first)
                    await anyio.to_thread.run_sync(entered.wait, 20)
                    await anyio.sleep(1.5)  # three TTLs: an unextended hold has lapsed
                    second = await http.post(url + CHAT, json=body, headers=AUTH)
                    second_done.set()
        assert second.status_code == 402, second.text
        assert second.json()["error"]["context"]["reason"] == "in_flight_holds"
        assert first[0].status_code == 200
        usage = first[0].json()["usage"]
        balance = await settled(store)
        price = PRICES.resolve("gpt-4o-mini")
        assert balance.spent == price.input_price * usage["prompt_tokens"] + price.output_price * 9
        assert balance.held == 0
        assert balance.available + balance.held + balance.spent == granted
        assert [status for _, status, _ in metrics.finished] == ["settled"]
        assert metrics.expired == 0
    finally:
        await store.aclose()


def test_serve_refuses_a_hold_ttl_its_extends_cannot_keep_alive(capsys: pytest.CaptureFixture[str]) -> None:
    from credit_guard.cli import MIN_HOLD_TTL, main

    code = main(["serve", "--upstream", "http://127.0.0.1:9/v1", "--hold-ttl", str(MIN_HOLD_TTL / 2)])
    assert code == 2
    assert "--hold-ttl must be at least" in capsys.readouterr().err


# -- The upstream sees exactly one stream_options -----------------------------


def recording(seen: list[bytes]) -> Any:
    """The fake model behind an app that keeps each request body as it came."""
    inner = create_app(default_tokens=5)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        seen.append(body)
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await inner(scope, replay, send)

    return app


def keys_of(raw: bytes) -> list[str]:
    pairs: list[str] = []

    def hook(items: list[tuple[str, Any]]) -> dict[str, Any]:
        pairs.extend(k for k, _ in items)
        return dict(items)

    import json

    json.loads(raw, object_pairs_hook=hook)
    return pairs


@pytest.mark.parametrize(
    "options",
    ["absent", None, {"include_usage": False}, {}, {"include_usage": False, "continuous_usage_stats": False}],
)
async def test_the_upstream_sees_exactly_one_stream_options(options: Any) -> None:
    from credit_guard.proxy import create_proxy

    body: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 5,
    }
    if options != "absent":
        body["stream_options"] = options
    seen: list[bytes] = []
    store = MemoryStore({"acct": "1"}, keys={KEY: "acct"})
    with serve(recording(seen)) as upstream:
        guard = CreditGuard(create_proxy(upstream + "/v1"), prices=PRICES, store=store)
        with serve(guard, lifespan="on") as url:
            async with httpx.AsyncClient(timeout=30) as http:
                response = await http.post(url + CHAT, content=orjson.dumps(body), headers=AUTH)
    assert response.status_code == 200
    assert b'"usage"' not in response.content
    (raw,) = seen
    assert keys_of(raw).count("stream_options") == 1
    sent = orjson.loads(raw)
    assert sent["stream_options"]["include_usage"] is True
    if isinstance(options, dict):
        assert {k: v for k, v in sent["stream_options"].items() if k != "include_usage"} == {
            k: v for k, v in options.items() if k != "include_usage"
        }
    balance = await settled(store)
    price = PRICES.resolve("gpt-4o-mini")
    assert balance.spent > price.output_price * 5  # the upstream's usage, not zero
