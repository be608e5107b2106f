"""How a hold ends, over real HTTP: a hold lives as long as its request, and
usage the guard cannot read costs the hold, in every shape an upstream sends it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


class CountingStore(MemoryStore):
    """A memory store that records when each extend arrives."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.extends: list[float] = []

    async def extend(self, hold: Any, ttl: float) -> bool:
        self.extends.append(anyio.current_time())
        return await super().extend(hold, ttl)


async def raw_request(app: Any, body: dict[str, Any]) -> list[dict[str, Any]]:
    """One request as ASGI messages, with no server: the guard runs on the test's own loop."""
    raw = orjson.dumps(body)
    scope = {
        "type": "http",
        "method": "POST",
        "path": CHAT,
        "raw_path": CHAT.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"authorization", f"Bearer {KEY}".encode()), (b"content-type", b"application/json")],
    }
    sent: list[dict[str, Any]] = []
    replayed = False

    async def receive() -> dict[str, Any]:
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: Any) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


@pytest.mark.parametrize("keeper", ["loop timer", "task group"])
@pytest.mark.parametrize("outcome", ["answers", "raises", "answers at once"])
async def test_a_silent_app_keeps_its_hold_and_no_extend_follows_the_end(
    keeper: str, outcome: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from credit_guard import settlement

    if keeper == "task group":
        # The way taken on an event loop other than asyncio's.
        monkeypatch.setattr(settlement, "_asyncio_loop", lambda: None)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 9}
    store = CountingStore({"acct": "1"}, keys={KEY: "acct"})
    inner = create_app(default_tokens=9)
    held_while_silent: list[Decimal] = []

    class Broke(Exception):
        pass

    async def silent(scope: Any, receive: Any, send: Any) -> None:
        if outcome != "answers at once":
            await anyio.sleep(0.65)  # past two TTLs without a byte
        held_while_silent.append((await store.balance("acct")).held)
        if outcome == "raises":
            raise Broke
        await inner(scope, receive, send)

    guard = CreditGuard(silent, prices=PRICES, store=store, hold_ttl=0.3)
    if outcome == "raises":
        # The app's own exception, as it came (not wrapped in a group).
        with pytest.raises(Broke):
            await raw_request(guard, body)
    else:
        sent = await raw_request(guard, body)
        assert sent[0]["status"] == 200
    ended = anyio.current_time()
    assert held_while_silent[0] > 0
    # Extends every third of the TTL while the app works; none for a request
    # that ends before the first is due.
    assert len(store.extends) >= (0 if outcome == "answers at once" else 2)
    await anyio.sleep(0.25)  # past the next extend, had the timer outlived the request
    assert all(at <= ended for at in store.extends)
    balance = await store.balance("acct")
    assert balance.held == 0
    assert (balance.spent > 0) == (outcome != "raises")


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


# -- A scripted upstream: whatever bytes a test wants, in pieces ----------------


class Script:
    """One response the upstream sends: its body as raw bytes, sent in pieces."""

    def __init__(
        self,
        body: bytes,
        content_type: bytes = b"application/json",
        *,
        encoding: bytes | None = None,
        piece: int = 64 * 1024,
        pause: float = 0.0,
    ) -> None:
        self.body = body
        self.content_type = content_type
        self.encoding = encoding
        self.piece = piece
        self.pause = pause
        self.requests: list[bytes] = []


def scripted(scripts: dict[str, Script]) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        request = b""
        while True:
            message = await receive()
            request += message.get("body", b"")
            if not message.get("more_body", False):
                break
        case = dict(scope["headers"])[b"x-case"].decode()
        script = scripts[case]
        script.requests.append(request)
        headers = [(b"content-type", script.content_type)]
        if script.encoding:
            headers.append((b"content-encoding", script.encoding))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body = script.body
        for at in range(0, len(body), script.piece):
            await send({"type": "http.response.body", "body": body[at : at + script.piece], "more_body": True})
            if script.pause:
                await anyio.sleep(script.pause)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    return app


REQUEST = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say something."}], "max_tokens": 50}
USAGE = {"prompt_tokens": 11, "completion_tokens": 20, "total_tokens": 31}


def cost_of(usage: dict[str, int], model: str = "gpt-4o-mini") -> Decimal:
    price = PRICES.resolve(model)
    return price.input_price * usage["prompt_tokens"] + price.output_price * usage["completion_tokens"]


def dumps(obj: Any) -> bytes:
    """orjson's bytes; the standard library's for integers past 64 bits."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, separators=(",", ":")).encode()


def completion(content: str, usage: Any = "absent", *, usage_first: bool = False) -> bytes:
    body: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini"}
    if usage_first and usage != "absent":
        body["usage"] = usage
    body["choices"] = [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]
    if not usage_first and usage != "absent":
        body["usage"] = usage
    return dumps(body)


def sse(*payloads: Any) -> bytes:
    return b"".join(b"data: " + (p if isinstance(p, bytes) else dumps(p)) + b"\n\n" for p in payloads)


def delta(content: str, **extra: Any) -> dict[str, Any]:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": content}}]}
    chunk.update(extra)
    return chunk


class Run:
    """The guard in front of the scripted upstream, over uvicorn."""

    def __init__(self, scripts: dict[str, Script], balance: str = "1.00") -> None:
        self.store = MemoryStore({"acct": balance}, keys={KEY: "acct"})
        self.metrics = Recorder()
        self.guard = CreditGuard(scripted(scripts), prices=PRICES, store=self.store, metrics=self.metrics)

    async def spent_on(
        self, url: str, case: str, body: dict[str, Any] | None = None, path: str = CHAT
    ) -> tuple[bytes, Decimal]:
        """The raw bytes the client got, and what the request was charged."""
        before = (await self.store.balance("acct")).spent
        async with httpx.AsyncClient(timeout=60) as http:
            async with http.stream(
                "POST", url + path, content=orjson.dumps(body or REQUEST), headers={**AUTH, "x-case": case}
            ) as response:
                assert response.status_code == 200
                raw = b"".join([chunk async for chunk in response.aiter_raw()])
        balance = await settled(self.store)
        assert balance.available + balance.held + balance.spent == balance.granted
        return raw, balance.spent - before


BIG = "word " * (2_600_000)  # 13 MB of generated text: past every buffer


async def test_usage_is_read_from_a_json_answer_of_any_size() -> None:
    scripts = {
        "after": Script(completion(BIG, USAGE)),
        "before": Script(completion(BIG, USAGE, usage_first=True)),
        "small": Script(completion("hi", USAGE)),
    }
    run = Run(scripts)
    with serve(run.guard) as url:
        for case in scripts:
            raw, spent = await run.spent_on(url, case)
            assert raw == scripts[case].body
            assert spent == cost_of(USAGE), case
    assert run.metrics.unreadable == []


async def test_usage_is_read_from_an_event_of_any_size() -> None:
    # LiteLLM-style: the last chunk carries both a choice (here a huge one) and the usage.
    body = sse(delta("Hi"), delta(BIG, usage=USAGE), b"[DONE]")
    scripts = {"big": Script(body, b"text/event-stream")}
    run = Run(scripts)
    request = {**REQUEST, "stream": True, "stream_options": {"include_usage": True}}
    with serve(run.guard) as url:
        raw, spent = await run.spent_on(url, "big", request)
    assert raw == body
    assert spent == cost_of(USAGE)


@pytest.mark.parametrize("name", [b"content-type", b"Content-Type", b"CONTENT-TYPE"])
@pytest.mark.parametrize("iterable", [list, iter], ids=["list", "iterator"])
async def test_the_apps_headers_are_read_by_name_in_any_case(name: bytes, iterable: Any) -> None:
    """The ASGI spec asks apps for lowercase header names; one that sends
    capitals has its stream's usage read all the same (a stream taken for JSON
    would cost the hold), and its own request id is not given a second one.
    The spec lets the headers be any iterable: one that can be read only once
    reaches the client whole."""
    body = sse(delta("Hi"), {"choices": [], "usage": USAGE}, b"[DONE]")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        headers = [(b"X-Request-Id", b"req_from_the_app"), (b"vary", b"Origin"), (name, b"Text/Event-Stream")]
        await send({"type": "http.response.start", "status": 200, "headers": iterable(headers)})
        await send({"type": "http.response.body", "body": body})

    store = MemoryStore({"acct": "1.00"}, keys={KEY: "acct"})
    metrics = Recorder()
    guard = CreditGuard(app, prices=PRICES, store=store, metrics=metrics)
    request = {**REQUEST, "stream": True, "stream_options": {"include_usage": True}}
    with serve(guard) as url:
        async with httpx.AsyncClient(timeout=60) as http:
            async with http.stream("POST", url + CHAT, content=orjson.dumps(request), headers=AUTH) as response:
                raw = b"".join([chunk async for chunk in response.aiter_raw()])
                assert response.headers.get_list("x-request-id") == ["req_from_the_app"]
                assert (response.headers["vary"], response.headers["content-type"]) == ("Origin", "Text/Event-Stream")
    assert raw == body
    balance = await settled(store)
    assert (balance.spent, metrics.unreadable) == (cost_of(USAGE), [])


async def test_an_event_of_any_size_has_the_usage_the_client_did_not_ask_for_cut() -> None:
    asked = sse(delta("Hi", usage=None), {**delta(BIG, usage=USAGE), "id": "c2"}, b"[DONE]")
    unasked = sse(delta("Hi"), {**delta(BIG), "id": "c2"}, b"[DONE]")
    scripts = {"big": Script(asked, b"text/event-stream")}
    run = Run(scripts)
    with serve(run.guard) as url:
        raw, spent = await run.spent_on(url, "big", {**REQUEST, "stream": True})
    assert raw == unasked
    assert spent == cost_of(USAGE)


def gzipped(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


def deflated(data: bytes, *, raw: bool = False) -> bytes:
    import zlib

    packer = zlib.compressobj(wbits=-15 if raw else 15)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        (b"gzip", gzipped),
        (b"x-gzip", gzipped),
        (b"deflate", deflated),
        (b"deflate", lambda data: deflated(data, raw=True)),
        (b"identity", lambda data: data),
    ],
)
async def test_usage_is_read_through_the_content_encoding(encoding: bytes, encode: Any) -> None:
    stream = sse(delta("Hi", usage=None), delta(" there", usage=None), {"choices": [], "usage": USAGE}, b"[DONE]")
    scripts = {
        "json": Script(encode(completion("hi there", USAGE)), encoding=encoding, piece=7),
        "large": Script(encode(completion(BIG, USAGE)), encoding=encoding),
        "sse": Script(encode(stream), b"text/event-stream", encoding=encoding, piece=5),
    }
    run = Run(scripts)
    asked = {**REQUEST, "stream": True, "stream_options": {"include_usage": True}}
    with serve(run.guard) as url:
        for case in ("json", "large"):
            raw, spent = await run.spent_on(url, case)
            assert raw == scripts[case].body  # the client gets the bytes as encoded
            assert spent == cost_of(USAGE), case
        raw, spent = await run.spent_on(url, "sse", asked)
        assert raw == scripts["sse"].body
        assert spent == cost_of(USAGE)
    assert run.metrics.unreadable == []


async def test_a_stream_the_guard_rewrites_goes_out_decoded() -> None:
    stream = sse(delta("Hi", usage=None), delta(" there", usage=None), {"choices": [], "usage": USAGE}, b"[DONE]")
    scripts = {"sse": Script(gzipped(stream), b"text/event-stream", encoding=b"gzip", piece=9)}
    run = Run(scripts)
    with serve(run.guard) as url:
        async with httpx.AsyncClient(timeout=60) as http:
            async with http.stream(
                "POST", url + CHAT, json={**REQUEST, "stream": True}, headers={**AUTH, "x-case": "sse"}
            ) as response:
                assert "content-encoding" not in response.headers
                raw = b"".join([chunk async for chunk in response.aiter_raw()])
        assert raw == sse(delta("Hi"), delta(" there"), b"[DONE]")
        assert (await settled(run.store)).spent == cost_of(USAGE)


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        (b"br", b"\x1b\x03\x00\xf8\xa5@\x02\x00"),  # not decodable here: br needs a library we do not ship
        (b"zstd", b"(\xb5/\xfd\x00Xa\x00\x00{}"),
        (b"gzip, br", b"\x1f\x8b"),
        (b"gzip", b"not gzip at all"),
        (b"gzip", gzipped(completion("hi", USAGE))[:-12]),  # cut short
    ],
    ids=["br", "zstd", "chain", "not-gzip", "cut-short"],
)
async def test_an_encoding_the_guard_cannot_undo_costs_the_hold(encoding: bytes, body: bytes) -> None:
    scripts = {"enc": Script(body, encoding=encoding)}
    run = Run(scripts)
    with serve(run.guard) as url:
        raw, spent = await run.spent_on(url, "enc")
    assert raw == body
    assert spent == max_cost(REQUEST)
    assert [reason for _, reason in run.metrics.unreadable] == ["content_encoding"]


async def test_a_decompression_bomb_is_not_read_and_costs_the_hold() -> None:
    import zlib

    # 64 MiB of one byte in about 64 KiB: read no further than the ratio allows.
    packer = zlib.compressobj(wbits=31)
    bomb = packer.compress(b"{" + b" " * (64 * 1024 * 1024)) + packer.flush()
    scripts = {"bomb": Script(bomb, encoding=b"gzip")}
    run = Run(scripts)
    with serve(run.guard) as url:
        raw, spent = await run.spent_on(url, "bomb")
    assert raw == bomb
    assert spent == max_cost(REQUEST)
    assert [reason for _, reason in run.metrics.unreadable] == ["decompression_ratio"]


# -- Usage the guard cannot read is never free -------------------------------

UNREADABLE = [
    ({}, "malformed"),
    (None, "malformed"),
    ("31", "malformed"),
    ([11, 20], "malformed"),
    (True, "malformed"),
    ({"total_tokens": 31}, "malformed"),
    ({"prompt_tokens": 11}, "malformed"),
    ({"prompt_tokens": 11.0, "completion_tokens": 20.0}, "malformed"),
    ({"prompt_tokens": "11", "completion_tokens": "20"}, "malformed"),
    ({"prompt_tokens": -11, "completion_tokens": 20}, "malformed"),
    ({"prompt_tokens": 11, "completion_tokens": False}, "malformed"),
    ({"prompt_tokens": None, "completion_tokens": 20}, "malformed"),
    ({"prompt_tokens": 10**30, "completion_tokens": 20}, "malformed"),  # read as a float
    ({"prompt_tokens": 10**12, "completion_tokens": 20}, "absurd"),
    ({"prompt_tokens": 11, "completion_tokens": 2**64 - 1}, "absurd"),
    ({"prompt_tokens": 11, "completion_tokens": 20, "prompt_tokens_details": {"cached_tokens": 12}}, "absurd"),
]


@pytest.mark.parametrize(("usage", "reason"), UNREADABLE, ids=[repr(u)[:40] for u, _ in UNREADABLE])
async def test_usage_the_guard_cannot_read_costs_the_hold(
    usage: Any, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    body = completion("some words " * 5, usage)
    stream = sse(delta("some words", usage=None), {"choices": [], "usage": usage}, b"[DONE]")
    large = completion(BIG, usage)
    scripts = {
        "json": Script(body),
        "sse": Script(stream, b"text/event-stream", piece=3),
        "large": Script(large),
        "gzip": Script(gzipped(body), encoding=b"gzip"),
    }
    run = Run(scripts)
    asked = {**REQUEST, "stream": True, "stream_options": {"include_usage": True}}
    with serve(run.guard) as url:
        for case in scripts:
            raw, spent = await run.spent_on(url, case, asked if case == "sse" else None)
            assert raw == scripts[case].body
            assert spent == max_cost(REQUEST), case
    # A stream's "usage": null promised usage that never came.
    expected = [reason if case != "sse" or usage is not None else "missing" for case in scripts]
    assert [r for _, r in run.metrics.unreadable] == expected
    lines = [r.getMessage() for r in caplog.records if "usage_unreadable" in r.getMessage()]
    assert len(lines) == len(scripts) and all("request_id=req_" in line for line in lines)
    assert [status for _, status, _ in run.metrics.finished] == ["settled"] * len(scripts)


@pytest.mark.parametrize(
    ("content_type", "body", "charged"),
    [
        (b"application/octet-stream", b"\x00\x01binary", "hold"),
        (b"audio/mpeg", b"ID3\x04", "hold"),
        (b"application/json", b'{"choices": [{"message": {"content": "hi"}}', "hold"),  # cut short
        (b"application/json", b"[1, 2, 3]", "count"),  # read: no usage, no text
        (b"text/plain; charset=utf-8", b"Hello there, this is plain text.", "count"),
        (b"application/json", completion("Hello there"), "count"),
    ],
    ids=["binary", "audio", "broken-json", "json-array", "plain-text", "json-without-usage"],
)
async def test_a_response_without_usage_is_counted_only_where_it_was_read(
    content_type: bytes, body: bytes, charged: str
) -> None:
    scripts = {"x": Script(body, content_type, piece=4)}
    run = Run(scripts)
    with serve(run.guard) as url:
        raw, spent = await run.spent_on(url, "x")
    assert raw == body
    price = PRICES.resolve("gpt-4o-mini")
    ask = shapes.parse("chat", REQUEST)
    input_cost = price.input_price * tokens.count_input(ask, price).tokens
    if charged == "hold":
        assert spent == max_cost(REQUEST)
        assert len(run.metrics.unreadable) == 1
    else:
        text = body.decode() if content_type.startswith(b"text/") else "Hello there" if b"Hello" in body else ""
        assert spent == input_cost + price.output_price * tokens.count_output([text], price) if text else input_cost
        assert run.metrics.unreadable == []


# -- The client never sees usage it did not ask for ---------------------------

U = b'{"prompt_tokens":11,"completion_tokens":20,"total_tokens":31}'
US = b'{"prompt_tokens": 11, "completion_tokens": 20, "total_tokens": 31}'
STREAMS = {
    # (what the upstream sends when asked for usage, what it sends unasked)
    "openai": (
        [
            b'{"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"}}],"usage":null}',
            b'{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}',
            b'{"id":"c1","choices":[],"usage":' + U + b"}",
        ],
        [
            b'{"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"}}]}',
            b'{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}',
        ],
    ),
    "litellm": (
        [
            b'{"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"}}]}',
            b'{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":' + U + b"}",
        ],
        [
            b'{"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"}}]}',
            b'{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}',
        ],
    ),
    "spaced": (
        [
            b'{"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hi"}}], "usage": null}',
            b'{"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": ' + US + b"}",
        ],
        [
            b'{"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}',
            b'{"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}',
        ],
    ),
    "usage-before-choices": (
        [
            b'{"id":"c1","usage":null,"choices":[{"index":0,"delta":{"content":"Hi"}}]}',
            b'{"id":"c1","usage":' + U + b',"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}',
        ],
        [
            b'{"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"}}]}',
            b'{"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}',
        ],
    ),
    "usage-first": (
        [
            b'{"usage": null, "id": "c1", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}',
            b'{ "usage" : ' + US + b' , "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}',
        ],
        [
            b'{"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}',
            b'{ "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}',
        ],
    ),
    "usage-in-the-text": (
        [
            b'{"id":"c1","choices":[{"index":0,"delta":{"content":"\\"usage\\":null, {\\"usage\\":1}"}}],"usage":null}',
            b'{"id":"c1","choices":[],"usage":' + U + b"}",
        ],
        [b'{"id":"c1","choices":[{"index":0,"delta":{"content":"\\"usage\\":null, {\\"usage\\":1}"}}]}'],
    ),
    "escaped-key": (
        [
            b'{"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"}}],"us\\u0061ge":null}',
            b'{"id":"c1","choices":[],"\\u0075sage":' + U + b"}",
        ],
        [b'{"id":"c1","choices":[{"index":0,"delta":{"content":"Hi"}}]}'],
    ),
}


def events(payloads: list[bytes], *, prefix: bytes = b"data: ", end: bytes = b"\n\n") -> bytes:
    return b"".join(prefix + p + end for p in payloads) + prefix + b"[DONE]" + end


@pytest.mark.parametrize("framing", ["lf", "crlf", "no-space"])
@pytest.mark.parametrize("name", list(STREAMS))
async def test_the_client_never_sees_usage_it_did_not_ask_for(name: str, framing: str) -> None:
    asked, unasked = STREAMS[name]
    frame: dict[str, Any] = {"lf": {}, "crlf": {"end": b"\r\n\r\n"}, "no-space": {"prefix": b"data:"}}[framing]
    scripts = {name: Script(events(asked, **frame), b"text/event-stream", piece=3)}
    run = Run(scripts)
    with serve(run.guard) as url:
        raw, spent = await run.spent_on(url, name, {**REQUEST, "stream": True})
    assert orjson.loads(scripts[name].requests[0])["stream_options"] == {"include_usage": True}
    assert raw == events(unasked, **frame)
    for payload in unasked:
        orjson.loads(payload)  # valid JSON, always
    assert spent == cost_of(USAGE)


# -- A client that leaves a stream ---------------------------------------------


def slow_stream() -> Any:
    """A streaming upstream (Starlette's StreamingResponse, which stops when the
    client goes away) that never reports usage before its end."""
    from starlette.responses import StreamingResponse

    async def app(scope: Any, receive: Any, send: Any) -> None:
        async def chunks() -> Any:
            for i in range(500):
                yield sse(delta(f" word{i}", usage=None))
                await anyio.sleep(0.02)
            yield sse({"choices": [], "usage": USAGE}, b"[DONE]")

        await StreamingResponse(chunks(), media_type="text/event-stream")(scope, receive, send)

    return app


@pytest.mark.parametrize(("model", "reasoning"), [("o3-mini", True), ("gpt-5-mini", True), ("gpt-4o-mini", False)])
async def test_a_client_leaving_a_reasoning_stream_is_charged_the_hold(model: str, reasoning: bool) -> None:
    assert PRICES.resolve(model).reasoning is reasoning
    store = MemoryStore({"acct": "10"}, keys={KEY: "acct"})
    metrics = Recorder()
    guard = CreditGuard(slow_stream(), prices=PRICES, store=store, metrics=metrics)
    body = {**REQUEST, "model": model, "stream": True, "stream_options": {"include_usage": True}}
    if reasoning:
        body = {**body, "max_completion_tokens": 50}
        body.pop("max_tokens")
    ask = shapes.parse("chat", body)
    price = PRICES.resolve(model)
    quote = make_quote(ask, price, tokens.count_input(ask, price).tokens)
    with serve(guard) as url:
        async with httpx.AsyncClient(timeout=30) as http:
            async with http.stream("POST", url + CHAT, json=body, headers=AUTH) as response:
                assert response.status_code == 200
                seen = 0
                async for line in response.aiter_lines():
                    seen += line.startswith("data:")
                    if seen >= 3:
                        break
        balance = await settled(store)
    assert balance.available + balance.held + balance.spent == balance.granted
    if reasoning:
        # It reasoned in tokens nobody saw: what it billed is unknown, up to the hold.
        assert balance.spent == quote.max_cost
        assert [reason for _, reason in metrics.unreadable] == ["hidden_reasoning"]
    else:
        # What it was sent, no more.
        assert quote.input_cost + price.output_price * 3 <= balance.spent < quote.max_cost
        assert metrics.unreadable == []


# -- Any usage an upstream may send, over the real middleware --------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_COUNT = st.integers(min_value=0, max_value=10**6)
_JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.integers(max_value=-1),
    st.integers(min_value=10**9 + 1, max_value=2**63 - 1),
    st.lists(st.integers(), max_size=2),
)


@st.composite
def usages(draw: st.DrawFn) -> tuple[str, Any]:
    """("valid" | "unreadable" | "absent", the usage member's value)."""
    kind = draw(st.sampled_from(["valid", "valid", "partial", "junk-field", "junk", "absurd", "absent"]))
    if kind == "absent":
        return "absent", None
    if kind == "junk":
        return "unreadable", draw(st.one_of(_JUNK, st.just({}), st.just({"total_tokens": 5})))
    prompt, completion = draw(_COUNT), draw(_COUNT)
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
    usage["total_tokens"] = prompt + completion
    if draw(st.booleans()):
        usage["prompt_tokens_details"] = {"cached_tokens": draw(st.integers(0, prompt))}
    if draw(st.booleans()):
        usage["completion_tokens_details"] = {"reasoning_tokens": draw(st.integers(0, completion))}
    if kind == "partial":
        usage.pop(draw(st.sampled_from(["prompt_tokens", "completion_tokens"])))
        return "unreadable", usage
    if kind == "junk-field":
        usage[draw(st.sampled_from(["prompt_tokens", "completion_tokens"]))] = draw(_JUNK)
        return "unreadable", usage
    if kind == "absurd":
        usage["prompt_tokens_details"] = {"cached_tokens": prompt + 1 + draw(_COUNT)}
        return "unreadable", usage
    return "valid", usage


def billed(usage: dict[str, Any]) -> Decimal:
    """What the provider bills for valid usage: cached input at the cached price."""
    price = PRICES.resolve("gpt-4o-mini")
    assert price.cached_input_price is not None and price.reasoning_output_price is None
    cached: int = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    prompt: int = usage["prompt_tokens"]
    completion: int = usage["completion_tokens"]
    return price.input_price * (prompt - cached) + price.cached_input_price * cached + price.output_price * completion


@pytest.fixture(scope="module")
def scripted_guard() -> Any:
    scripts: dict[str, Script] = {}
    run = Run(scripts, balance="100000")
    with serve(run.guard) as url:
        yield url, scripts, run


_CASES = iter(range(10**9))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    usage=usages(),
    shape=st.sampled_from(["json", "sse-asked", "sse-unasked", "sse-litellm"]),
    spaced=st.booleans(),
    encoding=st.sampled_from([b"identity", b"gzip", b"deflate"]),
    piece=st.integers(min_value=1, max_value=64),
)
async def test_any_upstream_usage_is_charged_at_least_what_the_provider_bills(
    scripted_guard: Any, usage: tuple[str, Any], shape: str, spaced: bool, encoding: bytes, piece: int
) -> None:
    url, scripts, run = scripted_guard
    verdict, value = usage
    member = {} if verdict == "absent" else {"usage": value}

    def dumps_(obj: Any) -> bytes:
        return json.dumps(obj, separators=(", ", ": ") if spaced else (",", ":")).encode()

    if shape == "json":
        request = REQUEST
        body = dumps_({"id": "c1", "choices": [{"index": 0, "message": {"content": "Hi there"}}], **member})
    else:
        request = {**REQUEST, "stream": True}
        if shape == "sse-asked":
            request["stream_options"] = {"include_usage": True}
        first = {"id": "c1", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}
        last = {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        if shape == "sse-litellm":
            chunks = [first, {**last, **member}]
        else:
            chunks = [first, last] + ([{"id": "c1", "choices": [], **member}] if member else [])
        body = b"".join(b"data: " + dumps_(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    encoded = {b"identity": lambda b: b, b"gzip": gzipped, b"deflate": deflated}[encoding](body)
    case = str(next(_CASES))
    content_type = b"application/json" if shape == "json" else b"text/event-stream"
    scripts[case] = Script(encoded, content_type, encoding=encoding, piece=piece)
    unreadable_before = len(run.metrics.unreadable)

    raw, spent = await run.spent_on(url, case, request)  # asserts 200 and the ledger identity

    hold = max_cost(request)
    if verdict == "valid":
        assert spent == billed(value)
    elif verdict == "unreadable":
        assert spent == hold
        assert len(run.metrics.unreadable) == unreadable_before + 1
    else:
        ask = shapes.parse("chat", request)
        price = PRICES.resolve("gpt-4o-mini")
        assert spent >= price.input_price * tokens.count_input(ask, price).tokens
    assert not [r for _, r in run.metrics.unreadable if r in ("pricing_error",)]
    if shape == "json" or shape == "sse-asked":
        assert raw == encoded  # what the client asked for, untouched
    else:
        # Asked by the guard: the client sees the stream without any usage, valid JSON.
        import zlib

        text = zlib.decompress(raw, 47) if encoding != b"identity" and raw[:1] != b"d" else raw
        for line in text.split(b"\n"):
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                assert "usage" not in orjson.loads(line[6:])


# -- A settle never raises ------------------------------------------------------


async def test_a_pricing_error_costs_the_hold_and_the_answer_still_arrives(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from credit_guard import settlement

    def broken(*args: Any) -> Decimal:
        raise ArithmeticError("a price the table cannot apply")

    monkeypatch.setattr(settlement, "actual_cost", broken)
    scripts = {"ok": Script(completion("hi", USAGE))}
    run = Run(scripts)
    with serve(run.guard) as url:
        raw, spent = await run.spent_on(url, "ok")
    assert raw == scripts["ok"].body
    assert spent == max_cost(REQUEST)
    assert [reason for _, reason in run.metrics.unreadable] == ["pricing_error"]
    assert [status for _, status, _ in run.metrics.finished] == ["settled"]
    assert any("credit_guard.pricing_error" in r.getMessage() for r in caplog.records)


async def test_prometheus_counts_unreadable_usage_by_model_and_reason() -> None:
    from prometheus_client import CollectorRegistry

    from credit_guard.metrics import PrometheusMetrics

    registry = CollectorRegistry()
    scripts = {"bad": Script(completion("hi", {"total_tokens": 31})), "bin": Script(b"\x00", b"image/png")}
    store = MemoryStore({"acct": "1"}, keys={KEY: "acct"})
    guard = CreditGuard(scripted(scripts), prices=PRICES, store=store, metrics=PrometheusMetrics(registry))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as http:
        for case in scripts:
            response = await http.post(CHAT, json=REQUEST, headers={**AUTH, "x-case": case})
            assert response.status_code == 200
    for reason in ("malformed", "content_type"):
        labels = {"model": "gpt-4o-mini", "reason": reason}
        assert registry.get_sample_value("credit_guard_usage_unreadable_total", labels) == 1
    assert (await store.balance("acct")).spent == 2 * max_cost(REQUEST)


@st.composite
def io_usages(draw: st.DrawFn) -> tuple[str, Any]:
    """Responses/Anthropic usage: ("valid" | "unreadable" | "absent", value)."""
    kind = draw(st.sampled_from(["valid", "valid", "partial", "junk-field", "junk", "absent"]))
    if kind == "absent":
        return "absent", None
    if kind == "junk":
        return "unreadable", draw(st.one_of(_JUNK, st.just({}), st.just({"total_tokens": 5})))
    usage: dict[str, Any] = {"input_tokens": draw(_COUNT), "output_tokens": draw(_COUNT)}
    if kind == "partial":
        usage.pop(draw(st.sampled_from(["input_tokens", "output_tokens"])))
        return "unreadable", usage
    if kind == "junk-field":
        usage[draw(st.sampled_from(["input_tokens", "output_tokens"]))] = draw(_JUNK)
        return "unreadable", usage
    return "valid", usage


ANTHROPIC = {"model": "claude-haiku-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]}
RESPONSES = {"model": "gpt-4o-mini", "input": "Say something.", "max_output_tokens": 50}


def quote_of(kind: str, body: dict[str, Any]) -> Any:
    ask = shapes.parse(kind, body)
    price = PRICES.resolve(ask.model)
    return make_quote(ask, price, tokens.count_input(ask, price).tokens)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    usage=io_usages(),
    api=st.sampled_from(["anthropic", "responses"]),
    stream=st.booleans(),
    encoding=st.sampled_from([b"identity", b"gzip"]),
    piece=st.integers(min_value=1, max_value=64),
)
async def test_any_responses_or_anthropic_usage_is_charged_at_least_what_the_provider_bills(
    scripted_guard: Any, usage: tuple[str, Any], api: str, stream: bool, encoding: bytes, piece: int
) -> None:
    url, scripts, run = scripted_guard
    verdict, value = usage
    member = {} if verdict == "absent" else {"usage": value}
    text = {"type": "output_text", "text": "Hi there"}
    if api == "anthropic":
        path, request = "/v1/messages", {**ANTHROPIC, "stream": stream}
        if not stream:
            body = dumps({"type": "message", "content": [{"type": "text", "text": "Hi there"}], **member})
        else:
            # The input comes in message_start, the output in message_delta: both carry the shape drawn.
            start = {"type": "message_start", "message": {"type": "message", "content": [], **member}}
            events = [
                ("message_start", start),
                ("content_block_delta", {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "Hi"}}),
                ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, **member}),
                ("message_stop", {"type": "message_stop"}),
            ]
            body = b"".join(b"event: " + n.encode() + b"\ndata: " + dumps(e) + b"\n\n" for n, e in events)
    else:
        path, request = "/v1/responses", {**RESPONSES, "stream": stream}
        response = {"object": "response", "output": [{"type": "message", "content": [text]}], **member}
        if not stream:
            body = dumps(response)
        else:
            events = [
                ("response.output_text.delta", {"type": "response.output_text.delta", "delta": "Hi there"}),
                ("response.completed", {"type": "response.completed", "response": response}),
            ]
            body = b"".join(b"event: " + n.encode() + b"\ndata: " + dumps(e) + b"\n\n" for n, e in events)
    encoded = gzipped(body) if encoding == b"gzip" else body
    case = str(next(_CASES))
    content_type = b"text/event-stream" if stream else b"application/json"
    scripts[case] = Script(encoded, content_type, encoding=encoding, piece=piece)
    unreadable_before = len(run.metrics.unreadable)

    raw, spent = await run.spent_on(url, case, request, path)  # asserts 200 and the ledger identity

    quote = quote_of(api, request)
    assert raw == encoded
    if verdict == "valid":
        price = quote.price
        assert spent == price.input_price * value["input_tokens"] + price.output_price * value["output_tokens"]
    elif verdict == "unreadable":
        assert spent == quote.max_cost
        assert len(run.metrics.unreadable) == unreadable_before + 1
    else:
        assert spent >= quote.input_cost


# -- the end of a hold, whatever cancels the request meanwhile ---------------------------


class SlowSettles(MemoryStore):
    """A memory store whose settle and release wait (as a network store's do)
    before they apply: a cancellation can reach the request there."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.waiting = anyio.Event()
        self.ends = 0

    async def settle(self, hold: Any, actual: Decimal, *, record: Any = None) -> Any:
        self.ends += 1
        self.waiting.set()
        await anyio.sleep(0.05)
        return await super().settle(hold, actual, record=record)

    async def release(self, hold: Any, *, record: Any = None) -> Any:
        self.ends += 1
        self.waiting.set()
        await anyio.sleep(0.05)
        return await super().release(hold, record=record)


async def _answer(scope: Any, receive: Any, send: Any) -> None:
    await receive()
    body = orjson.dumps({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}})
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def _scope_for(body: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "method": "POST",
        "path": CHAT,
        "raw_path": CHAT.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"authorization", f"Bearer {KEY}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }


@pytest.mark.parametrize("how", ["cancel scope", "task.cancel"])
async def test_a_request_cancelled_while_its_hold_ends_still_ends_it(how: str) -> None:
    store = SlowSettles({"acct": "1"}, keys={KEY: "acct"})
    guard = CreditGuard(_answer, store=store, prices=PRICES)
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})
    scope = _scope_for(body)
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    if how == "cancel scope":
        async with anyio.create_task_group() as group:
            group.start_soon(guard, scope, receive, send)
            await store.waiting.wait()
            group.cancel_scope.cancel()
    else:
        import asyncio

        task = asyncio.ensure_future(guard(scope, receive, send))
        await store.waiting.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    balance = await store.balance("acct")
    price = PRICES.resolve("gpt-4o-mini")
    assert balance.held == 0
    assert balance.spent == price.input_price * 9 + price.output_price * 3
    assert balance.available + balance.held + balance.spent == balance.granted
    assert sent[0]["status"] == 200


async def test_the_app_reads_the_body_in_the_pieces_it_came_in_then_the_client() -> None:
    store = MemoryStore({"acct": "1"}, keys={KEY: "acct"})
    got: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            got.append(message)
            if not message.get("more_body"):
                break
        got.append(await receive())  # the client's own, once the body is read
        answer = orjson.dumps({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})

    guard = CreditGuard(app, store=store, prices=PRICES)
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})
    sent_pieces = [body[:7], b"", body[7:30], bytearray(body[30:31]), body[31:]]
    client = [{"type": "http.request", "body": piece, "more_body": True} for piece in sent_pieces]
    client[-1]["more_body"] = False
    client.append({"type": "http.disconnect"})
    answers: list[Any] = []

    async def receive() -> Any:
        return client.pop(0)

    async def send(message: Any) -> None:
        answers.append(message)

    await guard(_scope_for(body), receive, send)
    assert answers[0]["status"] == 200
    # Every piece as it came (an empty one is not a piece), as bytes, the last
    # one marked; then the client's disconnect.
    assert [(m["body"], type(m["body"]), m["more_body"]) for m in got[:-1]] == [
        (body[:7], bytes, True),
        (body[7:30], bytes, True),
        (body[30:31], bytes, True),
        (body[31:], bytes, False),
    ]
    assert got[-1] == {"type": "http.disconnect"}
    [record] = await store.usage_records()
    assert record.outcome == "client_left"  # it left before its answer ended
    balance = await store.balance("acct")
    assert balance.held == 0 and balance.available + balance.spent == balance.granted


@pytest.mark.parametrize("how", ["returns", "raises", "body first", "keeps receive and send"])
async def test_an_app_that_answers_nothing_or_out_of_turn_ends_its_hold(how: str) -> None:
    """The response's tap is made at the app's first message: an app that
    sends none, raises before any, sends a body before its start, or keeps
    the guard's receive and send and calls them after its request ended,
    still has its hold ended once, and the ledger holds."""
    store = MemoryStore({"acct": "1"}, keys={KEY: "acct"})
    kept: list[Any] = []
    answer = orjson.dumps({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}})

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        if how == "raises":
            raise RuntimeError("the app failed before answering")
        if how == "body first":
            await send({"type": "http.response.body", "body": answer})
        if how == "keeps receive and send":
            kept.extend((receive, send))
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": answer})

    guard = CreditGuard(app, store=store, prices=PRICES)
    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5})
    client = [{"type": "http.request", "body": body, "more_body": False}, {"type": "http.disconnect"}]
    answers: list[Any] = []

    async def receive() -> Any:
        return client.pop(0)

    async def send(message: Any) -> None:
        answers.append(message)

    if how == "raises":
        with pytest.raises(RuntimeError):
            await guard(_scope_for(body), receive, send)
    else:
        await guard(_scope_for(body), receive, send)
    ended = await store.balance("acct")
    assert ended.held == 0 and ended.available + ended.spent == ended.granted
    [record] = await store.usage_records()
    if how == "keeps receive and send":
        assert record.outcome == "settled" and ended.spent > 0
        # Called after the request: the client's own message, passed on; what
        # the app sends goes to the server as it came (its to refuse).
        late_receive, late_send = kept
        assert await late_receive() == {"type": "http.disconnect"}
        await late_send({"type": "http.response.body", "body": b"late"})
        assert answers[-1] == {"type": "http.response.body", "body": b"late"}
        assert await store.balance("acct") == ended  # nothing charged or held again
    else:
        # No answer the guard could read as one: nothing charged for it, or
        # (a body with no start: what it cannot read) at most the hold.
        assert ended.spent <= max_cost(orjson.loads(body))
        assert record.outcome in ("released", "settled")


# Run in a process of its own: in the test process, other tests' servers and
# threads make objects of their own meanwhile.
_ALIVE_AT_THE_APP = """
import asyncio, gc, json, sys, orjson
from credit_guard import CreditGuard, MemoryStore, PriceTable

KEY = "sk-settlement-0123456789"
BODY = sys.argv[1].encode()
ANSWER = orjson.dumps({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}})
SCOPE = {
    "type": "http", "method": "POST", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
    "query_string": b"", "root_path": "", "state": {},
    "headers": [(b"authorization", b"Bearer " + KEY.encode()), (b"content-type", b"application/json")],
}


async def alive_at_the_app(wrap):
    seen, before = [], None

    async def app(scope, receive, send):
        if before is not None:
            seen.append([type(o).__qualname__ for o in gc.get_objects() if id(o) not in before])
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": ANSWER})

    top = wrap(app)
    messages = []

    async def receive():
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message):
        pass

    for _ in range(4):  # the first requests fill caches, once; the last is measured
        if _ == 3:
            gc.collect()
            gc.disable()
            kept = gc.get_objects()  # held, so that no id is reused meanwhile
            before = {id(o) for o in kept}
        messages[:] = [{"type": "http.request", "body": BODY, "more_body": False}]
        await top(SCOPE, receive, send)
    return sorted(seen[0])


async def main():
    bare = await alive_at_the_app(lambda app: app)
    store = MemoryStore({"acct": "100"}, keys={KEY: "acct"})
    prices = PriceTable.default()
    guarded = await alive_at_the_app(lambda app: CreditGuard(app, store=store, prices=prices))
    print(json.dumps([bare, guarded]))


asyncio.run(main())
"""


_ONE_MESSAGE = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
# Each turn's content a list of parts: a list and a dict per message that the
# collector tracks, in the parsed body.
_CONVERSATION = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": ("user", "assistant")[turn % 2], "content": [{"type": "text", "text": f"turn {turn}"}]}
        for turn in range(40)
    ],
    "max_tokens": 5,
}


@pytest.mark.parametrize("body", [_ONE_MESSAGE, _CONVERSATION], ids=["one message", "40 turns"])
def test_few_of_the_guards_objects_live_while_the_app_runs(body: dict[str, Any]) -> None:
    """Every object of the guard's alive while the app runs is one more for the
    host's garbage collector to carry: an app that works for milliseconds and
    allocates meanwhile (an LLM proxy) sees those objects survive its young
    collections and fill its oldest generation, bringing its full collections
    sooner.  The guard keeps what settling needs (its ask, quote, hold and
    settlement, the settlement's send, its own frames) and no more: at most 12
    more objects than the bare app's call, however many messages the body
    has, of which the tuples hold only strings and numbers (the collector
    stops tracking those at its first pass).  The exchange, the response's
    tap and a class instance per live hold in the memory store made it 15;
    the body replayed by a closure, the exchange's frame kept alive under the
    app and an object per request for the keep-alive timer 27; the parsed
    body, which only Mistral's count reads, kept 97 for a conversation of 40
    turns."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", _ALIVE_AT_THE_APP, json.dumps(body)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    bare, guarded = json.loads(out.stdout)
    added = list(guarded)
    for name in bare:
        added.remove(name)
    assert len(added) <= 12, added
    # What settling needs is among them; the exchange ended before the app
    # started, the tap is made at the response's first message, and the
    # settlement is the app's receive itself (one bound method: its send).
    assert {"Settlement", "Hold", "Quote", "Ask"} <= set(added)
    assert not {"Exchange", "UsageTap", "_Live"} & set(added), added
    assert added.count("method") <= 1, added
