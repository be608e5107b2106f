"""Every request priced as the provider bills it, over HTTP: dated snapshots at
their own price, Anthropic cache writes (5-minute and 1-hour) and reads,
context tiers, service tiers; and the settles that charge them exactly.

Prices are the providers' published ones, written out here (not read back
from the table under test): gpt-4o-2024-05-13 $5/$15, gpt-4o $2.50/$10
(cached $1.25), claude-sonnet-4-5 $3/$15 (5-minute write $3.75, 1-hour $6,
read $0.30), gemini-2.5-pro $1.25/$10 and above 200k input $2.50/$15,
gemini-1.5-pro $1.25/$5 and above 128k $2.50/$10, gpt-5 $1.25/$10 (flex
$0.625/$5, priority $2.50/$20), per 1M tokens.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from credit_guard import CreditGuard, MemoryStore, PriceTable
from credit_guard.prices import ModelNotPriced, TierNotPriced, _clean

from .servers import serve

LITELLM = Path(__file__).resolve().parents[2] / "shared" / "prices" / "litellm_model_prices.json"
needs_litellm = pytest.mark.skipif(not LITELLM.exists(), reason="LiteLLM's price map is not beside the repo")

KEY = "sk-pricing-1"
AUTH = {"Authorization": f"Bearer {KEY}"}
M = Decimal(1_000_000)
BUNDLED = PriceTable.default()


def per_m(value: str) -> Decimal:
    return Decimal(value) / M


class Upstream:
    """An ASGI app that answers every request with one body (JSON or SSE) and
    records the bodies that reached it."""

    def __init__(self, payload: bytes, content_type: bytes = b"application/json") -> None:
        self.payload = payload
        self.content_type = content_type
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", self.content_type)]})
        await send({"type": "http.response.body", "body": self.payload})


def chat_reply(usage: dict[str, Any], **extra: Any) -> bytes:
    return orjson.dumps({"choices": [{"message": {"role": "assistant", "content": "ok"}}], "usage": usage, **extra})


def guarded(app: Any, balance: str) -> tuple[CreditGuard, MemoryStore]:
    store = MemoryStore({"acct": balance})
    return CreditGuard(app, store=store, accounts={KEY: "acct"}), store


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://guard.test")


async def refused(path: str, body: dict[str, Any], balance: str = "0.000001") -> dict[str, Any]:
    """The error object the guard answers ``body`` with (the app never runs)."""
    upstream = Upstream(chat_reply({"prompt_tokens": 1, "completion_tokens": 1}))
    app, _ = guarded(upstream, balance)
    async with client(app) as http:
        response = await http.post(path, json=body, headers=AUTH)
    assert upstream.bodies == []
    error: dict[str, Any] = response.json()["error"]
    assert response.status_code == error["status"]
    return error


def required(error: dict[str, Any]) -> Decimal:
    assert error["status"] == 402, error
    return Decimal(str(error["context"]["required_credits"]))


def chat(model: str, text: str = "Say hello to the world, briefly.", **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 1000, **fields}


def claude(cache: list[dict[str, Any] | None], **fields: Any) -> dict[str, Any]:
    """A Messages request whose system blocks carry ``cache`` marks."""
    system = []
    for index, mark in enumerate(cache):
        block: dict[str, Any] = {"type": "text", "text": f"Reference document {index}. " * 40}
        if mark is not None:
            block["cache_control"] = mark
        system.append(block)
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 2000,
        "system": system,
        "messages": [{"role": "user", "content": "Summarise the documents."}],
        **fields,
    }


# -- the 402 shows the provider's price ------------------------------------------------


@pytest.mark.anyio
async def test_a_dated_snapshot_is_held_at_its_own_price_not_its_aliases() -> None:
    old = await refused("/v1/chat/completions", chat("gpt-4o-2024-05-13"))
    new = await refused("/v1/chat/completions", chat("gpt-4o"))
    tokens = old["context"]["input_tokens"]
    assert tokens == new["context"]["input_tokens"] and old["context"]["input_tokens_exact"] is True
    assert old["context"]["priced_model"] == "gpt-4o-2024-05-13"
    assert required(old) == per_m("5") * tokens + per_m("15") * 1000
    assert required(new) == per_m("2.50") * tokens + per_m("10") * 1000
    assert Decimal(str(old["context"]["input_cost"])) == 2 * Decimal(str(new["context"]["input_cost"]))


@pytest.mark.anyio
async def test_an_unlisted_snapshot_is_refused_with_the_closest_priced_names() -> None:
    error = await refused("/v1/chat/completions", chat("gpt-4o-2031-01-01"))
    assert (error["status"], error["type"], error["param"]) == (400, "model_not_priced", "model")
    assert "gpt-4o" in error["alternatives"]
    assert "closest priced" in error["message"] and "gpt-4o" in error["message"]
    # An Azure name never borrows OpenAI's price either.
    azure = await refused("/v1/chat/completions", chat("azure/gpt-4o-2031-01-01"))
    assert azure["type"] == "model_not_priced"


@pytest.mark.anyio
async def test_claude_cache_writes_are_held_at_the_write_price_of_the_longest_ttl() -> None:
    plain = await refused("/v1/messages", claude([None, None]))
    five = await refused("/v1/messages", claude([{"type": "ephemeral"}, None]))
    explicit_five = await refused("/v1/messages", claude([None, {"type": "ephemeral", "ttl": "5m"}]))
    hour = await refused("/v1/messages", claude([{"type": "ephemeral", "ttl": "1h"}, {"type": "ephemeral"}]))
    tokens = plain["context"]["input_tokens"]
    assert all(e["context"]["input_tokens"] == tokens for e in (five, explicit_five, hour))
    output = per_m("15") * 2000
    assert required(plain) == per_m("3") * tokens + output
    assert required(five) == required(explicit_five) == per_m("3.75") * tokens + output
    assert required(hour) == per_m("6") * tokens + output
    assert "1h prompt-cache write" in hour["detail"] and "cache" not in plain["detail"]


@pytest.mark.anyio
async def test_cache_control_on_tools_messages_and_the_request_counts_too() -> None:
    plain = await refused("/v1/messages", claude([None]))
    tokens_plain = plain["context"]["input_tokens"]
    on_message = claude([None])
    on_message["messages"][0]["content"] = [
        {"type": "text", "text": "Summarise the documents.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ]
    error = await refused("/v1/messages", on_message)
    assert required(error) == per_m("6") * error["context"]["input_tokens"] + per_m("15") * 2000
    automatic = await refused("/v1/messages", claude([None], cache_control={"type": "ephemeral"}))
    assert required(automatic) == per_m("3.75") * tokens_plain + per_m("15") * 2000
    tool = claude([None])
    tool["tools"] = [{"name": "f", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}]
    error = await refused("/v1/messages", tool)
    assert required(error) == per_m("3.75") * error["context"]["input_tokens"] + per_m("15") * 2000
    nested = claude([None])
    nested["messages"] = [
        {"role": "user", "content": "Look it up."},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [
                        {"type": "text", "text": "result", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
                    ],
                }
            ],
        },
    ]
    error = await refused("/v1/messages", nested)
    assert required(error) == per_m("6") * error["context"]["input_tokens"] + per_m("15") * 2000


@pytest.mark.anyio
@pytest.mark.parametrize(
    "mark", [{"type": "ephemeral", "ttl": "24h"}, {"type": "persistent"}, "ephemeral", {"ttl": "1h"}]
)
async def test_a_cache_control_that_cannot_be_priced_is_refused(mark: object) -> None:
    error = await refused("/v1/messages", claude([mark]))
    assert (error["status"], error["param"]) == (400, "system[0].cache_control")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("model", "threshold", "low", "high"),
    [
        ("gemini-2.5-pro", 200_000, ("1.25", "10"), ("2.50", "15")),
        ("gemini-1.5-pro", 128_000, ("1.25", "5"), ("2.50", "10")),
    ],
)
async def test_a_long_gemini_prompt_is_held_at_the_context_tier_it_reaches(
    model: str, threshold: int, low: tuple[str, str], high: tuple[str, str]
) -> None:
    short = await refused("/v1/chat/completions", chat(model))
    assert short["context"]["input_tokens"] < threshold
    assert required(short) == per_m(low[0]) * short["context"]["input_tokens"] + per_m(low[1]) * 1000
    # Gemini's tokenizer is not public: the count is a bound of at least one
    # token per byte, so this text reaches the tier whatever it tokenizes to.
    long = await refused("/v1/chat/completions", chat(model, "a " * (threshold // 2 + 1000)))
    tokens = long["context"]["input_tokens"]
    assert tokens > threshold and long["context"]["input_tokens_exact"] is False
    assert required(long) == per_m(high[0]) * tokens + per_m(high[1]) * 1000
    assert Decimal(str(long["context"]["max_output_cost"])) == per_m(high[1]) * 1000
    assert f"input above {threshold} tokens" in long["detail"] and "above" not in short["detail"]


@pytest.mark.anyio
@pytest.mark.parametrize(("tier", "prices"), [("flex", ("0.625", "5")), ("priority", ("2.50", "20"))])
async def test_a_service_tier_is_held_at_its_own_price(tier: str, prices: tuple[str, str]) -> None:
    error = await refused("/v1/chat/completions", chat("gpt-5", service_tier=tier))
    tokens = error["context"]["input_tokens"]
    assert required(error) == per_m(prices[0]) * tokens + per_m(prices[1]) * 1000
    assert f"{tier} service tier" in error["detail"]
    standard = await refused("/v1/chat/completions", chat("gpt-5", service_tier="default"))
    assert required(standard) == per_m("1.25") * tokens + per_m("10") * 1000


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("model", "tier"),
    [("gpt-4o", "flex"), ("o1-mini", "priority"), ("gpt-5", "scale"), ("gpt-5", "turbo"), ("gpt-5", "")],
)
async def test_a_service_tier_the_table_does_not_price_is_refused(model: str, tier: str) -> None:
    error = await refused("/v1/chat/completions", chat(model, service_tier=tier), balance="100")
    assert (error["status"], error["type"], error["param"]) == (400, "invalid_request_error", "service_tier")


@pytest.mark.anyio
async def test_flex_above_a_context_tier_the_table_does_not_price_is_refused() -> None:
    # gemini-2.5-pro has a flex price, but none for flex above 200k input tokens.
    error = await refused(
        "/v1/chat/completions", chat("gemini-2.5-pro", "a " * 101_000, service_tier="flex"), balance="100"
    )
    assert (error["status"], error["param"]) == (400, "service_tier")
    fits = await refused("/v1/chat/completions", chat("gemini-2.5-pro", service_tier="flex"))
    assert required(fits) == per_m("0.625") * fits["context"]["input_tokens"] + per_m("5") * 1000


# -- settles charge what the usage reports ----------------------------------------------


async def settle(path: str, body: dict[str, Any], payload: bytes, content_type: bytes = b"application/json") -> Decimal:
    upstream = Upstream(payload, content_type)
    app, store = guarded(upstream, "10")
    async with client(app) as http:
        response = await http.post(path, json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    assert len(upstream.bodies) == 1
    balance = await store.balance("acct")
    assert balance.held == 0 and balance.available + balance.spent == Decimal("10")
    return balance.spent


ANTHROPIC_USAGE = {
    "input_tokens": 100,
    "cache_read_input_tokens": 5000,
    "cache_creation_input_tokens": 3000,
    "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000},
    "output_tokens": 50,
}
ANTHROPIC_COST = per_m("3") * 100 + per_m("0.30") * 5000 + per_m("3.75") * 1000 + per_m("6") * 2000 + per_m("15") * 50


def anthropic_message(usage: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": "ok"}],
            "usage": usage,
        }
    )


def anthropic_stream(usage: dict[str, Any]) -> bytes:
    start = {"type": "message_start", "message": {"id": "msg_1", "usage": {**usage, "output_tokens": 1}}}
    events = [
        ("message_start", start),
        ("content_block_delta", {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "ok"}}),
        ("message_delta", {"type": "message_delta", "usage": {"output_tokens": usage["output_tokens"]}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    return b"".join(b"event: %s\ndata: %s\n\n" % (name.encode(), orjson.dumps(data)) for name, data in events)


@pytest.mark.anyio
async def test_anthropic_cache_writes_and_reads_settle_at_their_prices() -> None:
    body = claude([{"type": "ephemeral", "ttl": "1h"}, {"type": "ephemeral"}])
    assert await settle("/v1/messages", body, anthropic_message(ANTHROPIC_USAGE)) == ANTHROPIC_COST
    streamed = await settle(
        "/v1/messages", {**body, "stream": True}, anthropic_stream(ANTHROPIC_USAGE), b"text/event-stream"
    )
    assert streamed == ANTHROPIC_COST
    # Before this, writes cost the plain input price: 25% and 100% under.
    assert ANTHROPIC_COST - (per_m("3") * 3100 + per_m("0.30") * 5000 + per_m("15") * 50) == (
        per_m("0.75") * 1000 + per_m("3") * 2000
    )


@pytest.mark.anyio
async def test_writes_the_usage_does_not_split_cost_the_longest_ttl_asked() -> None:
    usage = {"input_tokens": 10, "cache_creation_input_tokens": 4000, "output_tokens": 20}
    hour = claude([{"type": "ephemeral", "ttl": "1h"}])
    five = claude([{"type": "ephemeral"}])
    assert await settle("/v1/messages", hour, anthropic_message(usage)) == (
        per_m("3") * 10 + per_m("6") * 4000 + per_m("15") * 20
    )
    assert await settle("/v1/messages", five, anthropic_message(usage)) == (
        per_m("3") * 10 + per_m("3.75") * 4000 + per_m("15") * 20
    )


@pytest.mark.anyio
async def test_openai_cached_tokens_settle_at_the_cached_price() -> None:
    usage = {"prompt_tokens": 2000, "completion_tokens": 100, "prompt_tokens_details": {"cached_tokens": 1536}}
    spent = await settle("/v1/chat/completions", chat("gpt-4o"), chat_reply(usage))
    assert spent == per_m("2.50") * 464 + per_m("1.25") * 1536 + per_m("10") * 100
    # A report of more cached tokens than input: the input was reported
    # without the reads, never a credit and never reads billed as nothing.
    odd = {"prompt_tokens": 10, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 99}}
    expected = per_m("2.50") * 10 + per_m("1.25") * 99 + per_m("10")
    assert await settle("/v1/chat/completions", chat("gpt-4o"), chat_reply(odd)) == expected


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        (200_000, per_m("1.25") * 200_000 + per_m("10") * 1000),
        (200_001, per_m("2.50") * 200_001 + per_m("15") * 1000),
        (
            300_000,
            # 100k of them read from the cache, at the tier's cached price.
            per_m("2.50") * 200_000 + per_m("0.25") * 100_000 + per_m("15") * 1000,
        ),
    ],
)
async def test_a_gemini_settle_uses_the_tier_the_reported_input_reached(prompt: int, expected: Decimal) -> None:
    usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": 1000}
    if prompt == 300_000:
        usage["prompt_tokens_details"] = {"cached_tokens": 100_000}
    spent = await settle("/v1/chat/completions", chat("gemini-2.5-pro"), chat_reply(usage))
    assert spent == expected


@pytest.mark.anyio
@pytest.mark.parametrize(("tier", "prices"), [("flex", ("0.625", "5")), ("priority", ("2.50", "20"))])
async def test_a_service_tier_settles_at_its_price(tier: str, prices: tuple[str, str]) -> None:
    usage = {"prompt_tokens": 1234, "completion_tokens": 567}
    spent = await settle("/v1/chat/completions", chat("gpt-5", service_tier=tier), chat_reply(usage))
    assert spent == per_m(prices[0]) * 1234 + per_m(prices[1]) * 567


def test_over_real_http_the_snapshot_and_the_cache_writes_are_priced() -> None:
    upstream = Upstream(anthropic_message(ANTHROPIC_USAGE))
    store = MemoryStore({"acct": "0.05"})
    app = CreditGuard(upstream, store=store, accounts={KEY: "acct"})
    with serve(app) as base, httpx.Client(base_url=base) as http:
        snapshot = http.post("/v1/chat/completions", json=chat("gpt-4o-2024-05-13", max_tokens=4096), headers=AUTH)
        assert snapshot.status_code == 402
        context = snapshot.json()["error"]["context"]
        assert Decimal(str(context["required_credits"])) == (per_m("5") * context["input_tokens"] + per_m("15") * 4096)
        hour = claude([{"type": "ephemeral", "ttl": "1h"}], max_tokens=1000)
        refusal = http.post("/v1/messages", json={**hour, "max_tokens": 64000}, headers=AUTH)
        assert refusal.status_code == 402
        tokens = refusal.json()["error"]["context"]["input_tokens"]
        assert Decimal(str(refusal.json()["error"]["context"]["required_credits"])) == (
            per_m("6") * tokens + per_m("15") * 64000
        )
        passed = http.post("/v1/messages", json=hour, headers=AUTH)
        assert passed.status_code == 200
    assert len(upstream.bodies) == 1
    import anyio

    balance = anyio.run(store.balance, "acct")
    assert balance.spent == ANTHROPIC_COST and balance.held == 0


# -- the tables ---------------------------------------------------------------------


def test_rates_pick_the_context_and_service_tier() -> None:
    pro = BUNDLED.resolve("gemini-2.5-pro")
    assert pro.rates(None, 200_000).input == per_m("1.25")
    assert pro.rates(None, 200_001).input == per_m("2.50")
    assert pro.rates("priority", 200_001).output == per_m("27")
    with pytest.raises(TierNotPriced):
        pro.rates("flex", 200_001)
    # Usage already incurred: the dearer of flex and the standard tier above 200k.
    assert pro.rates("flex", 200_001, strict=False).input == per_m("2.50")
    with pytest.raises(TierNotPriced):
        BUNDLED.resolve("gpt-4o").rates("flex")
    sonnet = BUNDLED.resolve("claude-sonnet-4-5").rates()
    assert (sonnet.cache_write, sonnet.cache_write_1h, sonnet.cached_input) == (
        per_m("3.75"),
        per_m("6"),
        per_m("0.30"),
    )


@pytest.mark.parametrize(
    ("name", "entry", "prices"),
    [
        ("gpt-4o-2024-05-13", "gpt-4o-2024-05-13", ("5", "15")),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet-20241022", ("3", "15")),
        ("claude-3-5-sonnet-latest", "claude-3-5-sonnet-20241022", ("3", "15")),
        ("claude-3-7-sonnet-20250219", "claude-3-7-sonnet-20250219", ("3", "15")),
        ("claude-3-5-haiku-20241022", "claude-3-5-haiku-20241022", ("0.80", "4")),
        ("claude-3-opus-20240229", "claude-3-opus-20240229", ("15", "75")),
        ("claude-3-haiku-20240307", "claude-3-haiku-20240307", ("0.25", "1.25")),
        ("gemini-1.5-pro", "gemini-1.5-pro", ("1.25", "5")),
        ("gemini-1.5-flash", "gemini-1.5-flash", ("0.075", "0.30")),
        ("gemini-2.0-flash", "gemini-2.0-flash", ("0.10", "0.40")),
        ("gemini/gemini-2.5-pro", "gemini-2.5-pro", ("1.25", "10")),
        ("o1-mini", "o1-mini", ("1.10", "4.40")),
        ("chatgpt-4o-latest", "chatgpt-4o-latest", ("5", "15")),
        ("gpt-35-turbo", "gpt-35-turbo", ("0.50", "1.50")),
        ("azure/gpt-4o", "azure/gpt-4o", ("2.50", "10")),
        ("mistral/mistral-large-latest", "mistral-large-latest", ("0.50", "1.50")),
    ],
)
def test_the_bundled_table_prices_the_models_still_called(name: str, entry: str, prices: tuple[str, str]) -> None:
    price = BUNDLED.resolve(name)
    assert price.name == entry
    assert (price.input_price, price.output_price) == (per_m(prices[0]), per_m(prices[1]))
    if price.provider == "anthropic":
        assert price.cache_write_price is not None and price.cache_write_price >= price.input_price * Decimal("1.2")
        assert price.cache_write_1h_price == price.input_price * 2


@pytest.mark.parametrize(
    "name",
    [
        "gpt-4o-2024-05-14",
        "claude-3-5-sonnet-20990101",
        "gemini-1.5-pro-999",
        "o1-mini-x",
        "openai/azure/gpt-4o",
        "anthropic/gpt-4o",
        "gpt-4o\x00",
        "gpt-4o ",
        "azure/../gpt-4o-mini",
        "openai/GPT-4O-2024-05-14",
    ],
)
def test_no_unlisted_name_borrows_a_price(name: str) -> None:
    with pytest.raises(ModelNotPriced) as caught:
        BUNDLED.resolve(name)
    assert all(alt in BUNDLED for alt in caught.value.alternatives)
    if "/" not in name:
        assert caught.value.alternatives, name


@needs_litellm
def test_every_litellm_entry_resolves_to_its_own_prices() -> None:
    raw = json.loads(LITELLM.read_text(), parse_float=Decimal)
    table = PriceTable.from_dict(raw)
    checked = tiers = 0
    for name, entry in raw.items():
        price = table.get(name)
        if price is None:
            continue
        resolved = table.resolve(name)
        assert resolved is price, name
        assert resolved.input_price == _clean(entry["input_cost_per_token"], name), name
        if entry.get("output_cost_per_token") is not None:
            assert resolved.output_price == _clean(entry["output_cost_per_token"], name), name
        # Its tiers are its own too: each service tier, and each context tier
        # from the first token above its threshold.
        for key in entry:
            match = re.fullmatch(r"input_cost_per_token(?:_above_(\d+)k_tokens)?(?:_(flex|priority))?", key)
            if match is None or (match[1] is None and match[2] is None):
                continue
            if entry.get(key.replace("input_", "output_", 1)) is None:
                continue  # a tier without an output price is not loaded (and refused)
            above = int(match[1]) * 1000 if match[1] else 0
            if match[2] and entry.get(f"input_cost_per_token_{match[2]}") is None:
                continue
            rates = resolved.rates(match[2], above + 1)
            assert rates.input == _clean(entry[key], key), (name, key)
            assert rates.output == _clean(entry[key.replace("input_", "output_", 1)], key), (name, key)
            tiers += 1
        checked += 1
    assert checked > 3000 and tiers > 500


@needs_litellm
def test_bare_names_resolve_to_their_provider_prefixed_key_when_unambiguous() -> None:
    table = PriceTable.from_file(LITELLM)
    assert table.resolve("mistral-large-latest").name == "mistral/mistral-large-latest"
    assert table.resolve("gemini-2.5-flash").name == "gemini-2.5-flash"  # an exact entry wins
    data = {
        "x/m": {"mode": "chat", "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06},
        "y/m": {"mode": "chat", "input_cost_per_token": 3e-06, "output_cost_per_token": 2e-06},
        "z/n": {"mode": "chat", "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06},
    }
    small = PriceTable.from_dict(json.loads(json.dumps(data), parse_float=Decimal))
    with pytest.raises(ModelNotPriced, match="ambiguous") as caught:
        small.resolve("m")
    assert caught.value.alternatives == ("x/m", "y/m")
    assert small.resolve("n").name == "z/n"


@needs_litellm
def test_every_openai_snapshot_of_the_map_is_bundled_at_the_maps_price() -> None:
    raw = json.loads(LITELLM.read_text(), parse_float=Decimal)
    dated = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")
    checked = 0
    for name, entry in raw.items():
        if not isinstance(entry, dict) or entry.get("litellm_provider") not in ("openai", "text-completion-openai"):
            continue
        if not dated.search(name) or entry.get("mode") not in ("chat", "completion", "responses", "embedding"):
            continue
        if (
            re.search(r"search|deep-research|realtime|transcribe|-tts", name)
            or entry.get("input_cost_per_token") is None
        ):
            continue
        price = BUNDLED.get(name)
        assert price is not None, name
        assert price.input_price == _clean(entry["input_cost_per_token"], name), name
        if price.kind != "embedding":
            assert price.output_price == _clean(entry["output_cost_per_token"], name), name
        cached = entry.get("cache_read_input_token_cost")
        assert price.cached_input_price == (None if cached is None else _clean(cached, name)), name
        for tier in ("flex", "priority"):
            if entry.get(f"input_cost_per_token_{tier}") is not None:
                assert price.rates(tier).input == _clean(entry[f"input_cost_per_token_{tier}"], name), name
            else:
                assert tier not in price.service_tiers(), name
        checked += 1
    assert checked > 40


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("asked", "served", "prices"),
    [
        ("auto", "priority", ("2.50", "20")),  # a project whose default tier is priority
        ("priority", "default", ("1.25", "10")),  # served below the tier asked: billed as served
        ("flex", "flex", ("0.625", "5")),
        ("flex", "scale", ("0.625", "5")),  # a tier the table does not price: the one asked
    ],
)
async def test_the_tier_the_response_reports_is_the_one_charged(
    asked: str, served: str, prices: tuple[str, str]
) -> None:
    usage = {"prompt_tokens": 1000, "completion_tokens": 100}
    reply = chat_reply(usage, service_tier=served)
    spent = await settle("/v1/chat/completions", chat("gpt-5", service_tier=asked), reply)
    assert spent == per_m(prices[0]) * 1000 + per_m(prices[1]) * 100


@pytest.mark.anyio
async def test_caching_asked_and_not_reported_is_charged_as_written() -> None:
    # A gateway that drops Anthropic's cache fields: every uncached input
    # token may have been written, at the TTL asked.
    usage = {"input_tokens": 1200, "output_tokens": 30}
    hour = claude([{"type": "ephemeral", "ttl": "1h"}])
    spent = await settle("/v1/messages", hour, anthropic_message(usage))
    assert spent == per_m("6") * 1200 + per_m("15") * 30
    # Reported as none written: none charged as written.
    none_written = {**usage, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    assert await settle("/v1/messages", hour, anthropic_message(none_written)) == (per_m("3") * 1200 + per_m("15") * 30)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        # prompt_tokens holds the writes and reads (LiteLLM's and most gateways' convention).
        (
            {
                "prompt_tokens": 3100,
                "completion_tokens": 10,
                "cache_creation_input_tokens": 2000,
                "prompt_tokens_details": {"cached_tokens": 1000},
            },
            per_m("3") * 100 + per_m("6") * 2000 + per_m("0.30") * 1000 + per_m("15") * 10,
        ),
        # Writes that cannot fit in prompt_tokens were reported beside it.
        (
            {"prompt_tokens": 100, "completion_tokens": 10, "cache_creation_input_tokens": 2000},
            per_m("3") * 100 + per_m("6") * 2000 + per_m("15") * 10,
        ),
    ],
)
async def test_claude_behind_a_chat_gateway_settles_its_cache_writes(usage: dict[str, Any], expected: Decimal) -> None:
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Long context.", "cache_control": {"type": "ephemeral", "ttl": "1h"}}
                ],
            }
        ],
    }
    assert await settle("/v1/chat/completions", body, chat_reply(usage)) == expected
