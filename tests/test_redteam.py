"""Hostile callers and strange upstreams against the whole gateway.

Each test is one way a caller could get compute it has not paid for, or the
gateway could bill below the provider, tried over real HTTP: the guard as
``credit-guard serve --upstream`` builds it (``cli.build_app``) in front of an
upstream that reads the bytes it receives with a lenient parser (Python's
``json``: the last of two equal keys wins) and bills what it reads.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from credit_guard import PriceTable
from credit_guard.cli import build_app
from credit_guard.usage import Usage

from .servers import serve
from .test_targets import KEY, UPSTREAM_KEY, Gateway, Recorder, port_of, prepare

PRICES = PriceTable.default()


@dataclass
class LenientUpstream:
    """An OpenAI-compatible upstream that reads the body as Python's ``json``
    does and streams a chat completion: the usage chunk only where the body it
    read asks for it, reporting ``usage`` (prompt, completion, reasoning)."""

    usage: dict[str, Any]
    text: str = "Hi"
    report_usage: bool = True
    seen: list[Any] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        data = b""
        while True:
            message = await receive()
            data += message.get("body", b"")
            if not message.get("more_body"):
                break
        body = json.loads(data)
        self.seen.append(body)
        options = body.get("stream_options") or {}
        delta = {"index": 0, "delta": {"content": self.text}}
        chunk = {"id": "c", "object": "chat.completion.chunk", "choices": [delta]}
        events = [b"data: " + orjson.dumps(chunk) + b"\n\n"]
        if options.get("include_usage") is True and self.report_usage:
            tail = {"id": "c", "object": "chat.completion.chunk", "choices": [], "usage": self.usage}
            events.append(b"data: " + orjson.dumps(tail) + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for event in events:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


@contextmanager
def gateway_to(tmp_path: Path, upstream: Any) -> Iterator[Gateway]:
    """``credit-guard serve --upstream`` in front of ``upstream``."""
    db = tmp_path / "credits.db"
    prepare(db)
    with serve(upstream) as up:
        app = build_app(
            upstream=up + "/v1", demo=False, store_url=f"sqlite:///{db}", prices=None, upstream_key=UPSTREAM_KEY
        )
        with serve(app, lifespan="on") as url:
            yield Gateway(url, port_of(url), Recorder(), Recorder(), 0, db)


def provider_bill(model: str, prompt: int, completion: int, reasoning: int = 0) -> Decimal:
    from credit_guard.quote import actual_cost, make_quote
    from credit_guard.shapes import parse

    ask = parse("chat", {"model": model, "messages": [{"role": "user", "content": "x"}], "max_tokens": 1})
    quote = make_quote(ask, PRICES.resolve(model), prompt)
    return actual_cost(quote, Usage(input_tokens=prompt, output_tokens=completion, reasoning_tokens=reasoning))


# -- a stream's usage is asked for in a way every parser reads ------------------------


@pytest.mark.parametrize(
    "body",
    [
        b'{"model":"o3-mini","messages":[{"role":"user","content":"Think hard"}],"max_tokens":4000,'
        b'"stream":true,"stream_options":null}',
        b'{"model":"o3-mini","messages":[{"role":"user","content":"Think hard"}],"max_tokens":4000,'
        b'"stream":true,"stream_opti\\u006fns":null}',
    ],
    ids=["null", "escaped-key-null"],
)
def test_a_null_stream_options_cannot_hide_a_streams_usage(tmp_path: Path, body: bytes) -> None:
    """The guard asks a stream for its usage; with ``"stream_options": null`` in
    the body, splicing its own ``stream_options`` in front left the caller's
    ``null`` after it, which a last-key-wins upstream reads: no usage, and a
    settlement on the visible text only (the reasoning went unbilled)."""
    usage = {
        "prompt_tokens": 10,
        "completion_tokens": 3000,
        "total_tokens": 3010,
        "completion_tokens_details": {"reasoning_tokens": 2999},
    }
    upstream = LenientUpstream(usage)
    with gateway_to(tmp_path, upstream) as gw:
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            answer = client.post("/v1/chat/completions", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        assert b'"usage"' not in answer.content  # the client did not ask for it
        figures = gw.settled()
    assert figures.spent >= provider_bill("o3-mini", 10, 3000, 2999), figures
    assert upstream.seen[0]["stream_options"] == {"include_usage": True}


def test_a_stream_without_usage_on_a_reasoning_model_costs_the_hold(tmp_path: Path) -> None:
    """An upstream that never reports usage (asked for it or not): the guard
    sees 'Hi' and settles one output token, while the provider bills the
    reasoning it did not show."""
    usage = {"prompt_tokens": 10, "completion_tokens": 3000, "completion_tokens_details": {"reasoning_tokens": 2999}}
    upstream = LenientUpstream(usage, report_usage=False)
    body = {"model": "o3-mini", "messages": [{"role": "user", "content": "Think hard"}], "max_tokens": 4000}
    with gateway_to(tmp_path, upstream) as gw:
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            answer = client.post("/v1/chat/completions", json={**body, "stream": True}, headers=headers)
        assert answer.status_code == 200, answer.text
        figures = gw.settled()
    assert figures.spent >= provider_bill("o3-mini", 10, 3000, 2999), figures


# -- every cache_control mark of a chat body is priced as a cache write ------------------

TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
ONE_HOUR = {"type": "ephemeral", "ttl": "1h"}


@pytest.mark.parametrize(
    "marked",
    [
        {"tools": [{**TOOL, "cache_control": ONE_HOUR}]},
        {"tools": [{**TOOL, "function": {**TOOL["function"], "cache_control": ONE_HOUR}}]},
        {"tools": [TOOL], "cache_control": ONE_HOUR},
    ],
    ids=["tool", "function", "body"],
)
def test_a_cache_mark_anywhere_in_a_chat_body_is_priced_as_a_write(tmp_path: Path, marked: dict[str, Any]) -> None:
    """A Claude model behind an OpenAI-compatible gateway (LiteLLM) writes
    the prompt to a 1-hour cache where a tool definition carries
    ``cache_control``, billed at twice the input price; the gateway's usage
    reports the writes without their TTL.  A mark the guard did not see was
    settled at the 5-minute price."""
    usage = {"prompt_tokens": 20_000, "completion_tokens": 10, "cache_creation_input_tokens": 20_000}
    upstream = Recorder(body=orjson.dumps({"id": "x", "object": "chat.completion", "choices": [], "usage": usage}))
    body = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10, **marked}
    with gateway_to(tmp_path, upstream) as gw:
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            answer = client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"})
        assert answer.status_code == 200, answer.text
        figures = gw.settled()
    price = PRICES.resolve("claude-sonnet-4-5")
    bill = 20_000 * price.input_price * 2 + 10 * price.output_price
    assert figures.spent >= bill, figures


# -- a LiteLLM map served with --prices leaves out what bills per call ------------------

LITELLM = Path("/work/shared/prices/litellm_model_prices.json")
PER_CALL = [
    "gpt-4o-search-preview",  # searches the web on every request, $25 per 1000 calls
    "gpt-4o-mini-search-preview-2025-03-11",
    "gpt-5-search-api",
    "openai/gpt-4o-search-preview",
    "perplexity/sonar",  # Perplexity searches on every request
    "sonar",  # the bare name must not fall back to another host's sonar
    "sonar-pro",
    "perplexity/sonar-small-online",  # $0.005 per request, input priced at 0 per token
    "perplexity/sonar-deep-research",  # citation tokens beside the usage
    "azure/model-router",  # billed as whichever model it routes to
    "model-router",
]


@pytest.mark.parametrize("model", PER_CALL)
def test_a_model_billed_per_call_is_refused_from_a_litellm_map(model: str) -> None:
    """``serve --prices model_prices_and_context_window.json`` loaded every
    entry with a token price, including models whose every request pays a fee
    beside its tokens: they were priced by their tokens alone (a Perplexity
    online model's input at $0)."""
    from credit_guard.prices import ModelNotPriced

    table = PriceTable.from_file(LITELLM)
    with pytest.raises(ModelNotPriced):
        table.resolve(model)
    with pytest.raises(ModelNotPriced):
        table.with_aliases({"x": "gpt-4o"}).resolve(model)


def test_names_near_a_per_call_model_still_resolve() -> None:
    table = PriceTable.from_file(LITELLM)
    assert table.resolve("gpt-4o").name == "gpt-4o"
    assert table.resolve("sonar-medium-chat").name == "perplexity/sonar-medium-chat"
    hermes = "deepinfra/NousResearch/Hermes-3-Llama-3.1-70B"  # "Research" is not a search model
    assert table.resolve(hermes).name == hermes


def test_a_search_model_never_reaches_the_upstream_through_serve(tmp_path: Path) -> None:
    db = tmp_path / "credits.db"
    prepare(db)
    upstream = Recorder()
    with serve(upstream) as up:
        app = build_app(
            upstream=up + "/v1", demo=False, store_url=f"sqlite:///{db}", prices=str(LITELLM), upstream_key="sk-u"
        )
        with serve(app, lifespan="on") as url, httpx.Client(base_url=url, timeout=30) as client:
            body = {"model": "gpt-4o-search-preview", "messages": [{"role": "user", "content": "news?"}]}
            answer = client.post("/v1/chat/completions", json={**body, "max_tokens": 5}, headers=_auth())
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["type"] == "model_not_priced"
    assert upstream.calls == []


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


# -- the hidden input of a model is that of the model priced, not of the name asked ------


def _quote_over_http(prices: PriceTable, body: dict[str, Any]) -> dict[str, Any]:
    """The 402's context for ``body`` (a zero balance), over real HTTP."""
    from credit_guard import CreditGuard, MemoryStore

    guard = CreditGuard(Recorder(), prices=prices, store=MemoryStore({"acct": "0"}), accounts={KEY: "acct"})
    with serve(guard) as url, httpx.Client(base_url=url, timeout=30) as client:
        answer = client.post("/v1/chat/completions", json=body, headers=_auth())
    assert answer.status_code == 402, answer.text
    context: dict[str, Any] = answer.json()["error"]["context"]
    return context


@pytest.mark.parametrize("alias", ["house-reasoner", "gpt-4o-house"])
def test_an_alias_of_a_reasoning_model_holds_its_hidden_input(alias: str) -> None:
    """An alias (``PriceTable.with_aliases``, as deployments add them) of o3:
    the hidden input OpenAI bills on o3 was decided by the name asked, so the
    alias held none of it and claimed an exact count."""
    prices = PRICES.with_aliases({alias: "o3"})
    body = {"model": "o3", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 10}
    direct = _quote_over_http(prices, body)
    aliased = _quote_over_http(prices, {**body, "model": alias})
    assert direct["input_tokens_exact"] is False
    assert aliased["input_tokens_exact"] is False
    assert aliased["input_tokens"] >= direct["input_tokens"]


# -- the SQLite group commit under cancellation ------------------------------------------


@pytest.mark.anyio
async def test_a_writer_cancelled_before_its_thread_strands_no_change(tmp_path: Path) -> None:
    """Group commit: the first waiter to wake drives the next batch, cutting it
    from the queue before its worker thread starts.  Cancelled at that point
    (``to_thread.run_sync`` checkpoints first), the batch was dropped: the
    other changes in it never ran, and their callers waited forever, each
    committing empty transactions in a loop."""
    import sqlite3

    import anyio

    from credit_guard.stores import SQLiteStore

    path = tmp_path / "credits.db"
    store = SQLiteStore(path)
    await store.grant("acct", "10")
    lock = sqlite3.connect(path, isolation_level=None, timeout=10, check_same_thread=False)
    lock.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    results: dict[str, Any] = {}
    cancel_b = anyio.CancelScope()

    async def first() -> None:
        results["x"] = await store.reserve("acct", Decimal("1"))
        cancel_b.cancel()  # lands after its batch is done, before B runs

    async def b() -> None:
        with cancel_b:
            results["b"] = await store.reserve("acct", Decimal("1"))

    async def a() -> None:
        results["a"] = await store.reserve("acct", Decimal("1"))

    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            group.start_soon(first)
            while not store._writing:
                await anyio.sleep(0.01)
            group.start_soon(b)
            while len(store._pending) < 1:
                await anyio.sleep(0.01)
            group.start_soon(a)
            while len(store._pending) < 2:
                await anyio.sleep(0.01)
            await anyio.to_thread.run_sync(lock.execute, "COMMIT")
    lock.close()
    assert "b" not in results and "a" in results
    balance = await store.balance("acct")
    assert balance.held == Decimal(2)  # x and a hold; b never ran
    assert balance.available + balance.held + balance.spent == balance.granted
    await store.aclose()


# -- usage whose parts exceed their totals is read as reported beside them -----------------


@pytest.mark.parametrize(
    ("usage", "bill"),
    [
        # Output reported without its reasoning (the reasoning beside it).
        (
            {"prompt_tokens": 10, "completion_tokens": 50, "completion_tokens_details": {"reasoning_tokens": 2000}},
            lambda p: 10 * p.input_price + 2050 * p.output_price,
        ),
        # Input reported without the cache reads.
        (
            {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 9000}},
            lambda p: 10 * p.input_price + 9000 * p.cached_input_price + 5 * p.output_price,
        ),
    ],
    ids=["reasoning-above-output", "cached-above-input"],
)
def test_usage_parts_above_their_totals_are_billed_beside_them(tmp_path: Path, usage: Any, bill: Any) -> None:
    """Settling ``min(part, total)`` billed 2000 reasoning tokens as 50, and
    9000 cache reads as 10: below any reading of the usage reported."""
    upstream = Recorder(body=orjson.dumps({"id": "x", "object": "chat.completion", "choices": [], "usage": usage}))
    body = {"model": "o3-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4000}
    with gateway_to(tmp_path, upstream) as gw:
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            answer = client.post("/v1/chat/completions", json=body, headers=_auth())
        assert answer.status_code == 200, answer.text
        figures = gw.settled()
    assert figures.spent >= bill(PRICES.resolve("o3-mini")), figures


# -- chat fields that generate more than the usage reports ---------------------------------


@pytest.mark.parametrize(("name", "value"), [("best_of", 20), ("use_beam_search", True)])
def test_chat_fields_generating_unreturned_sequences_are_refused(tmp_path: Path, name: str, value: object) -> None:
    """vLLM's chat endpoint takes ``best_of`` and ``use_beam_search``: it
    generates that many sequences, returns ``n`` and reports the usage of those
    only.  Counted as text, the field bought up to 20 times the compute."""
    upstream = Recorder()
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 50, name: value}
    with gateway_to(tmp_path, upstream) as gw:
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            answer = client.post("/v1/chat/completions", json=body, headers=_auth())
            off = client.post("/v1/chat/completions", json={**body, name: None}, headers=_auth())
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == name
    assert off.status_code == 200, off.text
    assert len(upstream.calls) == 1


# -- headers that switch on what bills apart -------------------------------------------------

CLAUDE_BODY = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}


@pytest.mark.parametrize(
    ("route", "beta"),
    [
        ("/v1/messages", "context-1m-2025-08-07"),  # input above 200k tokens at twice the price
        ("/v1/messages", "prompt-caching-2024-07-31, code-execution-2025-05-22"),
        ("/v1/chat/completions", "CONTEXT-1M-2025-08-07"),  # gateways pass it on for Claude
        ("/v1/messages", "mcp-client-2025-04-04"),
    ],
)
def test_an_anthropic_beta_billed_apart_is_refused(tmp_path: Path, route: str, beta: str) -> None:
    """The body policy refuses ``extra_headers``, but the proxy forwarded the
    caller's own headers: ``anthropic-beta: context-1m-2025-08-07`` bills a
    long prompt at twice the input price the table holds."""
    upstream = Recorder()
    with gateway_to(tmp_path, upstream) as gw:
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            headers = {**_auth(), "anthropic-beta": beta}
            answer = client.post(route, json=CLAUDE_BODY, headers=headers)
            free = {**_auth(), "anthropic-beta": "prompt-caching-2024-07-31,interleaved-thinking-2025-05-14"}
            fine = client.post(route, json=CLAUDE_BODY, headers=free)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "anthropic-beta"
    assert fine.status_code == 200, fine.text
    assert len(upstream.calls) == 1


# -- an exact count is claimed only for what published figures verify ----------------------


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None, "refusal": "I can't help"}],
        [{"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]}],
        [{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]}],
    ],
    ids=["refusal-field", "refusal-part", "two-text-parts"],
)
def test_unpublished_chat_constructs_are_not_claimed_exact(messages: list[Any]) -> None:
    """docs/accuracy.md verifies no refusal in the history and no message of
    several text parts (how they are joined is not published): the quote said
    ``input_tokens_exact: true`` for them."""
    context = _quote_over_http(PRICES, {"model": "gpt-4o", "messages": messages, "max_tokens": 10})
    assert context["input_tokens_exact"] is False
    joined = [{"role": "user", "content": "Hi\nthere"}]
    if messages[0]["content"] and isinstance(messages[0]["content"], list) and len(messages[0]["content"]) == 2:
        plain = _quote_over_http(PRICES, {"model": "gpt-4o", "messages": joined, "max_tokens": 10})
        assert context["input_tokens"] >= plain["input_tokens"]


@pytest.mark.parametrize(
    ("route", "field", "value"),
    [
        ("/v1/messages", "inference_geo", "us"),  # every token at 1.1x on Claude 4.6 and later
        ("/v1/messages", "speed", "fast"),
        ("/v1/chat/completions", "inference_geo", "us"),  # passed on by gateways
    ],
)
def test_anthropics_paid_variants_are_refused(tmp_path: Path, route: str, field: str, value: str) -> None:
    """Counted as text, ``inference_geo: "us"`` bought US-only inference at the
    global price (Anthropic bills it at 1.1x)."""
    upstream = Recorder()
    body = {**CLAUDE_BODY, "model": "claude-sonnet-4-6"}
    with gateway_to(tmp_path, upstream) as gw:
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            answer = client.post(route, json={**body, field: value}, headers=_auth())
            default = "global" if field == "inference_geo" else "standard"
            fine = client.post(route, json={**body, field: default}, headers=_auth())
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == field
    assert fine.status_code == 200, fine.text


# -- usage the guard cannot read costs the hold, not zero ----------------------------------


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": 10.0, "completion_tokens": 3000.0, "total_tokens": 3010.0},
        {"prompt_tokens": "10", "completion_tokens": "3000", "total_tokens": "3010"},
        {"prompt_tokens": 10, "total_tokens": 3010},
    ],
    ids=["floats", "strings", "no-completion-count"],
)
def test_usage_the_guard_cannot_read_is_not_zero(tmp_path: Path, usage: dict[str, Any]) -> None:
    upstream = Recorder(body=orjson.dumps({"id": "x", "object": "chat.completion", "choices": [], "usage": usage}))
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4000}
    with gateway_to(tmp_path, upstream) as gw:
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            answer = client.post("/v1/chat/completions", json=body, headers=_auth())
        assert answer.status_code == 200, answer.text
        figures = gw.settled()
    price = PRICES.resolve("gpt-4o")
    assert figures.spent >= 10 * price.input_price + 3000 * price.output_price, figures


def test_a_response_too_large_to_read_is_not_free_output(tmp_path: Path) -> None:
    """A caller asks for ``logprobs`` with ``top_logprobs: 20`` (free fields):
    each output token then takes over a kilobyte of JSON, and an answer of
    8000 tokens passes the 8 MiB the guard copies to read the usage at its end."""
    top = [{"token": "tok", "logprob": -2.345678, "bytes": [116, 111, 107]}] * 20
    logprob = {"token": "tok", "logprob": -0.012345, "bytes": [116, 111, 107], "top_logprobs": top}
    usage = {"prompt_tokens": 10, "completion_tokens": 8000, "total_tokens": 8010}
    content = {"content": [logprob] * 8000, "refusal": None}
    choice = {"index": 0, "message": {"role": "assistant", "content": "tok" * 8000}, "logprobs": content}
    reply = orjson.dumps({"id": "x", "object": "chat.completion", "choices": [choice], "usage": usage})
    assert len(reply) > 8 * 1024 * 1024
    upstream = Recorder(body=reply)
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8000}
    with gateway_to(tmp_path, upstream) as gw:
        with httpx.Client(base_url=gw.url, timeout=60) as client:
            asked = {**body, "logprobs": True, "top_logprobs": 20}
            answer = client.post("/v1/chat/completions", json=asked, headers=_auth())
        assert answer.status_code == 200
        figures = gw.settled()
    price = PRICES.resolve("gpt-4o")
    assert figures.spent >= 10 * price.input_price + 8000 * price.output_price, figures


@dataclass
class ResponsesStream:
    """A Responses upstream streaming 'Hi' and a ``response.completed`` event
    of ``size`` bytes carrying ``usage``."""

    usage: dict[str, Any]
    size: int

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        delta = {"type": "response.output_text.delta", "delta": "Hi"}
        message = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hi"}]}
        pad = {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "x" * self.size}]}
        done = {"type": "response.completed", "response": {"output": [message, pad], "usage": self.usage}}
        events = [b"data: " + orjson.dumps(e) + b"\n\n" for e in (delta, done)]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for event in events:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def test_a_responses_stream_whose_usage_event_is_too_large_is_not_cheap(tmp_path: Path) -> None:
    usage = {"input_tokens": 50, "output_tokens": 3000, "output_tokens_details": {"reasoning_tokens": 2990}}
    upstream = ResponsesStream(usage, 5 * 1024 * 1024)
    body = {"model": "o3-mini", "input": "Think", "max_output_tokens": 4000, "stream": True}
    with gateway_to(tmp_path, upstream) as gw:
        with httpx.Client(base_url=gw.url, timeout=60) as client:
            answer = client.post("/v1/responses", json=body, headers=_auth())
        assert answer.status_code == 200
        figures = gw.settled()
    price = PRICES.resolve("o3-mini")
    assert figures.spent >= 50 * price.input_price + 3000 * price.output_price, figures


# -- compressed bodies: the bytes priced are all the bytes an upstream decodes -----------


@pytest.mark.parametrize("tail", [b"member", b"garbage"])
def test_bytes_after_a_compressed_body_are_refused(tmp_path: Path, tail: bytes) -> None:
    """The guard decoded the first gzip member and ignored whatever followed
    it, while an upstream that decodes every member (Python's
    ``gzip.decompress``, Go's multistream reader) reads on: the bytes priced
    and the bytes served could differ."""
    import gzip

    body = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5})
    extra = gzip.compress(b'\n{"model":"gpt-4o","max_tokens":4096}') if tail == b"member" else b"\x00garbage"
    upstream = Recorder()
    with gateway_to(tmp_path, upstream) as gw:
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            headers = {**_auth(), "content-encoding": "gzip", "content-type": "application/json"}
            answer = client.post("/v1/chat/completions", content=gzip.compress(body) + extra, headers=headers)
            fine = client.post("/v1/chat/completions", content=gzip.compress(body), headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "body"
    assert fine.status_code == 200, fine.text
    assert len(upstream.calls) == 1


# -- field names that a case-insensitive upstream reads as priced fields ----------------------

CHEAP = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5}


@pytest.mark.parametrize(
    ("raw_body", "param"),
    [
        # Go's encoding/json: the last key matching the field without regard to case wins.
        (
            b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],"max_tokens":5,"Model":"gpt-4o"}',
            "Model",
        ),
        (
            b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],"max_tokens":5,"MAX_TOKENS":16000}',
            "MAX_TOKENS",
        ),
        (b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],"max_tokens":5,"N":128}', "N"),
        # Unicode simple folding: the long s is "s", the Kelvin sign is "k".
        (
            '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],"max_tokens":5,"\u017ftream":true}'.encode(),
            "\u017ftream",
        ),
        (
            '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],"max_to\u212aens":9000,"max_tokens":5}'.encode(),
            "max_to\u212aens",
        ),
        (
            b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi","Content":"x"}],"max_tokens":5}',
            "messages[0].Content",
        ),
        (
            b'{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"user","content":"Hi"}],'
            b'"Service_Tier":"priority"}',
            "Service_Tier",
        ),
        (
            b'{"model":"o3-mini","messages":[{"role":"user","content":"Hi"}],"max_tokens":5,"stream":true,'
            b'"stream_options":{"include_usage":true,"Include_Usage":false}}',
            "stream_options.Include_Usage",
        ),
    ],
    ids=["model", "max_tokens", "n", "long-s", "kelvin", "message-content", "service_tier", "stream_options"],
)
def test_a_field_spelled_in_another_case_is_refused(tmp_path: Path, raw_body: bytes, param: str) -> None:
    """Counted as unknown text by the guard, ``"Model": "gpt-4o"`` after
    ``"model": "gpt-4o-mini"`` is the model a Go gateway runs (its JSON
    decoder matches names without regard to case, the last key winning): a
    gpt-4o completion billed at gpt-4o-mini's price; ``"MAX_TOKENS"`` and
    ``"N"`` bought output beyond the hold."""
    upstream = Recorder()
    with gateway_to(tmp_path, upstream) as gw:
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            headers = {**_auth(), "content-type": "application/json"}
            answer = client.post("/v1/chat/completions", content=raw_body, headers=headers)
            fine = client.post("/v1/chat/completions", json=CHEAP, headers=headers)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param
    assert fine.status_code == 200, fine.text
    assert len(upstream.calls) == 1


def test_a_cache_mark_with_another_key_is_refused(tmp_path: Path) -> None:
    """``{"type": "ephemeral", "TTL": "1h"}`` was priced as a 5-minute write;
    a gateway decoding without regard to case writes for an hour, at twice
    the input price."""
    upstream = Recorder()
    mark = {"type": "ephemeral", "TTL": "1h"}
    body = {
        **CLAUDE_BODY,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": mark}]}],
    }
    with gateway_to(tmp_path, upstream) as gw:
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            for route in ("/v1/messages", "/v1/chat/completions"):
                answer = client.post(route, json=body, headers=_auth())
                assert answer.status_code == 400, answer.text
                assert answer.json()["error"]["param"] == "messages[0].content[0].cache_control"
    assert upstream.calls == []


@pytest.mark.parametrize(
    ("route", "body", "param"),
    [
        (
            "/v1/responses",
            {
                "model": "gpt-4o",
                "input": "Hi",
                "max_output_tokens": 5,
                "tools": [{"type": "function", "name": "f", "parameters": {}, "Type": "web_search"}],
            },
            "tools[0].Type",
        ),
        (
            "/v1/messages",
            {**CLAUDE_BODY, "tools": [{"name": "f", "input_schema": {}, "Type": "web_search_20250305"}]},
            "tools[0].Type",
        ),
        (
            "/v1/messages",
            {
                **CLAUDE_BODY,
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "tool_result", "tool_use_id": "t", "content": "x", "Type": "document"}],
                    }
                ],
            },
            "messages[0].content[0].Type",
        ),
    ],
    ids=["responses-tool", "anthropic-tool", "anthropic-tool-result"],
)
def test_a_tool_type_in_another_case_is_refused(tmp_path: Path, route: str, body: dict[str, Any], param: str) -> None:
    """A function tool with ``"Type": "web_search"`` beside its ``type``: a
    case-blind upstream keeps the last and runs the built-in tool, billed per
    call, which the guard refuses in its own spelling."""
    upstream = Recorder()
    with gateway_to(tmp_path, upstream) as gw:
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            answer = client.post(route, json=body, headers=_auth())
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == param
    assert upstream.calls == []


# -- an upstream that compresses its answer anyway -------------------------------------------


def test_a_compressed_answer_from_the_upstream_is_read_for_its_usage(tmp_path: Path) -> None:
    """The proxy asks for ``identity``, but an upstream (or a CDN before it)
    may gzip its answer anyway: the bytes passed on raw hid the usage from the
    guard, which settled on the input alone."""
    import gzip

    usage = {"prompt_tokens": 10, "completion_tokens": 3000, "total_tokens": 3010}
    reply = {"id": "x", "object": "chat.completion", "choices": [], "usage": usage}
    upstream = Recorder(body=gzip.compress(orjson.dumps(reply)), headers=[(b"content-encoding", b"gzip")])
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4000}
    with gateway_to(tmp_path, upstream) as gw:
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            answer = client.post("/v1/chat/completions", json=body, headers=_auth())
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"] == usage
        figures = gw.settled()
    price = PRICES.resolve("gpt-4o")
    assert figures.spent >= 10 * price.input_price + 3000 * price.output_price, figures


def test_an_app_that_compresses_its_answers_is_still_billed_for_output() -> None:
    """A FastAPI or Starlette app with ``GZipMiddleware`` of its own, guarded
    from outside: every client that sends ``Accept-Encoding: gzip`` (httpx and
    the openai SDK do) gets an answer whose usage the guard cannot read."""
    from starlette.middleware.gzip import GZipMiddleware

    from credit_guard import CreditGuard, MemoryStore

    usage = {"prompt_tokens": 10, "completion_tokens": 3000, "total_tokens": 3010}
    reply = orjson.dumps({"id": "x", "object": "chat.completion", "choices": [], "usage": usage, "pad": "p" * 600})
    app = GZipMiddleware(Recorder(body=reply), minimum_size=500)
    store = MemoryStore({"acct": "5"})
    guard = CreditGuard(app, prices=PRICES, store=store, accounts={KEY: "acct"})
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4000}
    with serve(guard) as url, httpx.Client(base_url=url, timeout=30) as client:
        answer = client.post("/v1/chat/completions", json=body, headers={**_auth(), "accept-encoding": "gzip"})
        assert answer.status_code == 200
        assert answer.headers["content-encoding"] == "gzip"
    import anyio

    spent = anyio.run(store.balance, "acct").spent
    price = PRICES.resolve("gpt-4o")
    assert spent >= 10 * price.input_price + 3000 * price.output_price, spent


@dataclass
class AnthropicStream:
    """An Anthropic Messages stream whose ``message_start`` carries zero usage
    and whose ``message_delta`` carries all of it (LiteLLM's adapter for other
    providers; Anthropic's own deltas are cumulative too)."""

    start_usage: dict[str, Any]
    delta_usage: dict[str, Any]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        message = {"id": "m", "type": "message", "role": "assistant", "content": [], "usage": self.start_usage}
        events = [
            {"type": "message_start", "message": message},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": self.delta_usage},
            {"type": "message_stop"},
        ]
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        for event in events:
            line = b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"
            await send({"type": "http.response.body", "body": line, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def test_input_reported_in_an_anthropic_message_delta_is_billed(tmp_path: Path) -> None:
    upstream = AnthropicStream({"input_tokens": 0, "output_tokens": 0}, {"input_tokens": 50_000, "output_tokens": 10})
    with gateway_to(tmp_path, upstream) as gw:
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            answer = client.post("/v1/messages", json={**CLAUDE_BODY, "stream": True}, headers=_auth())
        assert answer.status_code == 200
        figures = gw.settled()
    price = PRICES.resolve("claude-sonnet-4-5")
    assert figures.spent >= 50_000 * price.input_price + 10 * price.output_price, figures


# -- gateway settings in a body that make the provider bill what the guard releases ------------


@pytest.mark.parametrize(
    ("route", "field", "value"),
    [
        ("/v1/chat/completions", "timeout", 0.001),  # LiteLLM gives up; the provider finishes and bills
        ("/v1/chat/completions", "num_retries", 10),
        ("/v1/responses", "request_timeout", 1),
        ("/v1/messages", "max_retries", 5),
        ("/v1/chat/completions", "user_config", {"model_list": []}),
        ("/v1/embeddings", "api_base", "http://127.0.0.1:9/v1"),
    ],
)
def test_gateway_settings_that_bill_unpriced_attempts_are_refused(
    tmp_path: Path, route: str, field: str, value: object
) -> None:
    """LiteLLM reads ``timeout`` and ``num_retries`` from the body: a request
    it abandons is an error to the guard, which releases the hold, while the
    provider finishes it and bills it (each retry again)."""
    bodies = {
        "/v1/chat/completions": CHEAP,
        "/v1/responses": {"model": "gpt-4o-mini", "input": "Hi", "max_output_tokens": 5},
        "/v1/messages": CLAUDE_BODY,
        "/v1/embeddings": {"model": "text-embedding-3-small", "input": "hi"},
    }
    upstream = Recorder()
    with gateway_to(tmp_path, upstream) as gw:
        with httpx.Client(base_url=gw.url, timeout=30) as client:
            answer = client.post(route, json={**bodies[route], field: value}, headers=_auth())
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == field
    assert upstream.calls == []
