"""The rule for every field of a request: priced, known free, refused with a
400 naming it, or counted (its JSON text as input, a bound).

Refusals and counts are checked through the real middleware (a MemoryStore
with no credit, so every priced request ends in a 402 whose context carries
the quoted input), and over real HTTP where the wire matters."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import anyio
import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credit_guard import CreditGuard, MemoryStore, PriceTable, shapes, tokens
from credit_guard.errors import InvalidRequest
from credit_guard.prices import ModelPrice, TokenBound
from credit_guard.shapes import anthropic, chat, completions, responses
from credit_guard.shapes.fields import FieldPolicy

from .servers import serve
from .test_middleware import Recorder

TABLE = PriceTable.default()
KEY = "sk-fields"
O200K = tokens.get_encoding("o200k_base")
CL100K = tokens.get_encoding("cl100k_base")
PNG_1X1 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="

# One body per shape: (route, kind, body).
SHAPES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "chat": (
        "/v1/chat/completions",
        "chat",
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 50},
    ),
    "chat-claude": (
        "/v1/chat/completions",
        "chat",
        {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 50},
    ),
    "completion": (
        "/v1/completions",
        "completion",
        {"model": "gpt-3.5-turbo-instruct", "prompt": "Say hello", "max_tokens": 20},
    ),
    "embedding": ("/v1/embeddings", "embedding", {"model": "text-embedding-3-small", "input": "hello world"}),
    "responses": (
        "/v1/responses",
        "responses",
        {"model": "gpt-4o", "input": [{"role": "user", "content": "Hello there"}], "max_output_tokens": 50},
    ),
    "anthropic": (
        "/v1/messages",
        "anthropic",
        {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "Hello there"}]},
    ),
}
POLICIES: dict[str, FieldPolicy] = {
    "chat": chat.BODY,
    "completion": completions.COMPLETION,
    "embedding": completions.EMBEDDING,
    "responses": responses.BODY,
    "anthropic": anthropic.BODY,
}
MESSAGE_POLICIES: dict[str, FieldPolicy] = {
    "chat": chat.MESSAGE,
    "responses": responses.MESSAGE,
    "anthropic": anthropic.MESSAGE,
}


async def post(route: str, body: object, balance: str = "0") -> tuple[httpx.Response, Recorder]:
    """``body`` through CreditGuard to a recording app; a zero balance makes
    every priced request a 402 carrying its quote."""
    app = Recorder()
    store = MemoryStore({"acct": balance})
    guard = CreditGuard(app, prices=TABLE, store=store, accounts={KEY: "acct"})
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as http:
        response = await http.post(route, content=raw, headers={"authorization": f"Bearer {KEY}"})
    balance_after = await store.balance("acct")
    assert balance_after.held == 0
    assert response.status_code != 500
    return response, app


def quoted(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 402, response.text
    context: dict[str, Any] = response.json()["error"]["context"]
    return context


def text_tokens(model: str, text: str) -> int:
    """What ``text`` costs at least on ``model``: its tokens where the model
    has an encoding, its UTF-8 bytes where it is bounded by them."""
    encoding = tokens.encoding_for(TABLE.resolve(model))
    if encoding is None:
        return len(text.encode("utf-8", "surrogatepass"))
    return len(encoding.encode_ordinary(text))


def field_text(name: str, value: object) -> str:
    return orjson.dumps({name: value}).decode()


def with_message_field(kind: str, body: dict[str, Any], name: str, value: object) -> dict[str, Any]:
    key = "input" if kind == "responses" else "messages"
    first = {**body[key][0], name: value}
    return {**body, key: [first, *body[key][1:]]}


# -- refused ---------------------------------------------------------------------

CHAT = SHAPES["chat"][2]
RESP = SHAPES["responses"][2]
CLAUDE = SHAPES["anthropic"][2]


def chat_part(part: dict[str, Any]) -> dict[str, Any]:
    return {**CHAT, "messages": [{"role": "user", "content": [part]}]}


def resp_part(part: dict[str, Any]) -> dict[str, Any]:
    return {**RESP, "input": [{"role": "user", "content": [part]}]}


def claude_block(block: dict[str, Any]) -> dict[str, Any]:
    return {**CLAUDE, "messages": [{"role": "user", "content": [block]}]}


def image_url(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


REFUSED: list[tuple[str, dict[str, Any], str]] = [
    # Web search in every form, the empty object included.
    ("/v1/chat/completions", {**CHAT, "web_search_options": {}}, "web_search_options"),
    ("/v1/chat/completions", {**CHAT, "web_search_options": {"search_context_size": "low"}}, "web_search_options"),
    ("/v1/chat/completions", {**CHAT, "web_search_options": []}, "web_search_options"),
    ("/v1/chat/completions", {**CHAT, "web_search_options": False}, "web_search_options"),
    ("/v1/chat/completions", {**CHAT, "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ("/v1/responses", {**RESP, "tools": [{"type": "web_search"}]}, "tools[0]"),
    ("/v1/responses", {**RESP, "tools": [{"type": "web_search_preview"}]}, "tools[0]"),
    ("/v1/messages", {**CLAUDE, "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
    (
        "/v1/messages",
        claude_block({"type": "web_search_tool_result", "tool_use_id": "x", "content": []}),
        "messages[0].content[0]",
    ),
    ("/v1/messages", claude_block({"type": "server_tool_use", "id": "x", "name": "web_search"}), "messages[0]"),
    # Audio.
    ("/v1/chat/completions", {**CHAT, "audio": {"voice": "alloy", "format": "wav"}}, "audio"),
    ("/v1/chat/completions", {**CHAT, "audio": {}}, "audio"),
    ("/v1/chat/completions", {**CHAT, "modalities": ["text", "audio"]}, "modalities"),
    ("/v1/chat/completions", {**CHAT, "modalities": "audio"}, "modalities"),
    (
        "/v1/chat/completions",
        {**CHAT, "messages": [{"role": "assistant", "content": None, "audio": {"id": "audio_1"}}]},
        "messages[0].audio",
    ),
    (
        "/v1/chat/completions",
        chat_part({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}),
        "messages[0].content[0]",
    ),
    ("/v1/responses", resp_part({"type": "input_audio", "input_audio": {"data": "AAAA"}}), "input[0].content[0]"),
    # Files and documents, also inline as a data URL that is not an image.
    ("/v1/chat/completions", chat_part({"type": "file", "file": {"file_id": "file-1"}}), "messages[0].content[0]"),
    ("/v1/chat/completions", chat_part(image_url("data:application/pdf;base64,JVBERi0=")), "messages[0].content[0]"),
    ("/v1/chat/completions", chat_part(image_url("DATA:audio/wav;base64,UklGRg==")), "messages[0].content[0]"),
    ("/v1/chat/completions", chat_part(image_url("data:,just text")), "messages[0].content[0]"),
    ("/v1/chat/completions", chat_part(image_url("data:text/plain;base64,aGk=")), "messages[0].content[0]"),
    ("/v1/responses", resp_part({"type": "input_file", "file_id": "file-1"}), "input[0].content[0]"),
    (
        "/v1/responses",
        resp_part({"type": "input_image", "image_url": "data:application/pdf;base64,JVBERi0="}),
        "input[0].content[0]",
    ),
    (
        "/v1/responses",
        resp_part({"type": "input_image", "image_url": f"data:image/png;base64,{PNG_1X1}", "file_id": "file-1"}),
        "input[0].content[0].file_id",
    ),
    (
        "/v1/responses",
        {
            **RESP,
            "input": [
                {
                    "type": "function_call_output",
                    "call_id": "c",
                    "output": [{"type": "input_file", "file_data": "JVBERi0=", "filename": "a.pdf"}],
                }
            ],
        },
        "input[0].output[0]",
    ),
    (
        "/v1/messages",
        claude_block({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "J"}}),
        "messages[0].content[0]",
    ),
    (
        "/v1/messages",
        claude_block({"type": "image", "source": {"type": "base64", "media_type": "application/pdf", "data": "J"}}),
        "messages[0].content[0]",
    ),
    (
        "/v1/messages",
        claude_block(
            {
                "type": "tool_result",
                "tool_use_id": "t",
                "content": [{"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}],
            }
        ),
        "messages[0].content[0].content[0]",
    ),
    (
        "/v1/messages",
        claude_block(
            {
                "type": "tool_result",
                "tool_use_id": "t",
                "content": [{"type": "image", "source": {"type": "file", "file_id": "file_1"}}],
            }
        ),
        "messages[0].content[0].content[0]",
    ),
    # MCP servers, containers, code execution, built-in tools.
    (
        "/v1/messages",
        {**CLAUDE, "mcp_servers": [{"type": "url", "url": "http://127.0.0.1/", "name": "m"}]},
        "mcp_servers",
    ),
    ("/v1/messages", {**CLAUDE, "mcp_servers": {}}, "mcp_servers"),
    ("/v1/messages", {**CLAUDE, "container": "container_1"}, "container"),
    ("/v1/messages", {**CLAUDE, "tools": [{"type": "code_execution_20250522", "name": "code_execution"}]}, "tools[0]"),
    ("/v1/messages", {**CLAUDE, "tools": [{"type": "bash_20250124", "name": "bash"}]}, "tools[0]"),
    ("/v1/messages", {**CLAUDE, "tools": [{"type": "mcp", "name": "m", "input_schema": {}}]}, "tools[0]"),
    ("/v1/messages", claude_block({"type": "container_upload", "file_id": "f"}), "messages[0].content[0]"),
    ("/v1/messages", claude_block({"type": "mcp_tool_use", "id": "x", "name": "m", "input": {}}), "messages[0]"),
    ("/v1/messages", {**CLAUDE, "service_tier": "priority"}, "service_tier"),
    ("/v1/responses", {**RESP, "tools": [{"type": "mcp", "server_label": "m", "server_url": "http://x"}]}, "tools[0]"),
    ("/v1/responses", {**RESP, "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}]}, "tools[0]"),
    ("/v1/responses", {**RESP, "tools": [{"type": "file_search", "vector_store_ids": ["v"]}]}, "tools[0]"),
    ("/v1/responses", {**RESP, "tools": {}}, "tools"),
    ("/v1/chat/completions", {**CHAT, "tools": [{"type": "mcp", "server_url": "http://x"}]}, "tools[0].type"),
    # State the request does not carry, and templates that can repeat it.
    ("/v1/responses", {**RESP, "previous_response_id": "resp_1"}, "previous_response_id"),
    ("/v1/responses", {**RESP, "conversation": {"id": "conv_1"}}, "conversation"),
    ("/v1/responses", {**RESP, "prompt": {}}, "prompt"),
    ("/v1/responses", {**RESP, "background": True}, "background"),
    ("/v1/responses", {**RESP, "background": 0}, "background"),
    ("/v1/chat/completions", {**CHAT, "prediction": {"type": "content", "content": "x"}}, "prediction"),
    (
        "/v1/chat/completions",
        {**CHAT, "chat_template": "{% for m in messages %}{{ m.content * 999 }}{% endfor %}"},
        "chat_template",
    ),
    # A tier the price table has no price for (priority and flex are priced where it has them).
    ("/v1/chat/completions", {**CHAT, "service_tier": "scale"}, "service_tier"),
    # Fields a gateway (LiteLLM) acts on before the provider sees the request.
    ("/v1/chat/completions", {**CHAT, "extra_body": {"web_search_options": {}}}, "extra_body"),
    ("/v1/responses", {**RESP, "extra_body": {"tools": [{"type": "web_search"}]}}, "extra_body"),
    ("/v1/messages", {**CLAUDE, "extra_headers": {"anthropic-beta": "context-1m-2025-08-07"}}, "extra_headers"),
    ("/v1/completions", {**SHAPES["completion"][2], "fallbacks": ["gpt-4"]}, "fallbacks"),
    ("/v1/embeddings", {**SHAPES["embedding"][2], "extra_body": {"input_type": "x"}}, "extra_body"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("route", "body", "param"), REFUSED, ids=[f"{r[2]}-{i}" for i, r in enumerate(REFUSED)])
async def test_fields_that_bill_beyond_the_price_table_are_refused(
    route: str, body: dict[str, Any], param: str
) -> None:
    response, app = await post(route, body, balance="100")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] is not None and error["param"].startswith(param), error
    assert app.calls == []


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/v1/chat/completions", {**CHAT, "web_search_options": None, "audio": None, "prediction": None}),
        ("/v1/chat/completions", {**CHAT, "modalities": ["text"]}),
        ("/v1/responses", {**RESP, "background": False, "previous_response_id": None}),
        ("/v1/messages", {**CLAUDE, "mcp_servers": [], "container": None, "service_tier": "standard_only"}),
        ("/v1/chat/completions", chat_part(image_url(f"data:image/png;base64,{PNG_1X1}"))),
    ],
)
async def test_the_values_that_mean_off_pass_and_change_nothing(route: str, body: dict[str, Any]) -> None:
    response, app = await post(route, body, balance="100")
    assert response.status_code == 200, response.text
    assert len(app.calls) == 1


# -- free and counted ------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("shape", list(SHAPES))
async def test_free_fields_leave_the_quote_as_it_was(shape: str) -> None:
    route, kind, body = SHAPES[shape]
    base = quoted((await post(route, body))[0])
    free = {name: "x" for name in POLICIES[kind].free}
    assert free  # every shape has some
    same = quoted((await post(route, {**body, **free}))[0])
    assert (same["input_tokens"], same["input_tokens_exact"]) == (base["input_tokens"], base["input_tokens_exact"])


UNKNOWN = {
    "chat_template_kwargs": {"enable_thinking": True, "note": "rendered by the template"},
    "documents": [{"title": "Annex", "text": "A long annex " * 30}],
}


@pytest.mark.anyio
@pytest.mark.parametrize("shape", list(SHAPES))
async def test_unknown_top_level_fields_are_counted_as_their_json_text(shape: str) -> None:
    route, kind, body = SHAPES[shape]
    base = quoted((await post(route, body))[0])
    more = quoted((await post(route, {**body, **UNKNOWN}))[0])
    model = body["model"]
    text = sum(text_tokens(model, field_text(name, value)) for name, value in UNKNOWN.items())
    assert more["input_tokens"] >= base["input_tokens"] + text
    assert more["input_tokens_exact"] is False


@pytest.mark.anyio
@pytest.mark.parametrize("shape", ["chat", "chat-claude", "responses", "anthropic"])
async def test_unknown_message_fields_are_counted_as_their_json_text(shape: str) -> None:
    route, kind, body = SHAPES[shape]
    base = quoted((await post(route, body))[0])
    value = "Thinking it over: " * 20
    more = quoted((await post(route, with_message_field(kind, body, "reasoning_content", value)))[0])
    assert more["input_tokens"] >= base["input_tokens"] + text_tokens(
        body["model"], field_text("reasoning_content", value)
    )
    assert more["input_tokens_exact"] is False


@pytest.mark.parametrize(
    ("kind", "body", "extra"),
    [
        ("chat", chat_part({"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}), "cache_control"),
        (
            "chat",
            chat_part({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_1X1}", "fmt": "x" * 40}}),
            "fmt",
        ),
        ("responses", resp_part({"type": "input_text", "text": "hi", "annotations": ["x" * 40]}), "annotations"),
        ("anthropic", claude_block({"type": "text", "text": "hi", "citations": ["y" * 40]}), "citations"),
    ],
)
def test_unknown_keys_of_content_parts_are_counted(kind: str, body: dict[str, Any], extra: str) -> None:
    price = TABLE.resolve(body["model"])
    counted = tokens.count_input(shapes.parse(kind, body), price)
    key = "input" if kind == "responses" else "messages"
    part = dict(body[key][0]["content"][0])
    holder = part
    if extra not in part:
        holder = part["image_url"] = dict(part["image_url"])
    value = holder.pop(extra)
    plain = tokens.count_input(shapes.parse(kind, {**body, key: [{**body[key][0], "content": [part]}]}), price)
    assert counted.tokens >= plain.tokens + text_tokens(body["model"], field_text(extra, value))
    assert counted.exact is False


def test_unknown_content_part_types_stay_refused() -> None:
    for kind, body in (
        ("chat", chat_part({"type": "video_url", "video_url": {"url": "x"}})),
        ("responses", resp_part({"type": "input_video"})),
        ("anthropic", claude_block({"type": "search_result", "content": []})),
    ):
        with pytest.raises(InvalidRequest) as caught:
            shapes.parse(kind, body)
        assert caught.value.param is not None and caught.value.param.endswith("content[0]")


@pytest.mark.parametrize("kind_value", [["text"], {"a": 1}, 5, None, True])
def test_part_types_that_are_not_strings_are_a_400(kind_value: object) -> None:
    for kind, body in (
        ("chat", chat_part({"type": kind_value, "text": "x"})),
        ("responses", resp_part({"type": kind_value, "text": "x"})),
        ("anthropic", claude_block({"type": kind_value, "text": "x"})),
        (
            "anthropic",
            claude_block({"type": "tool_result", "tool_use_id": "t", "content": [{"type": kind_value}]}),
        ),
        (
            "responses",
            {**RESP, "input": [{"type": "function_call_output", "call_id": "c", "output": [{"type": kind_value}]}]},
        ),
    ):
        with pytest.raises(InvalidRequest) as caught:
            shapes.parse(kind, body)
        assert caught.value.param is not None and caught.value.param.endswith("[0]")


def test_an_unknown_field_makes_an_exact_count_a_bound() -> None:
    price = TABLE.resolve("gpt-4o")
    exact = tokens.count_input(shapes.parse("chat", CHAT), price)
    assert exact.exact is True
    bound = tokens.count_input(shapes.parse("chat", {**CHAT, "top_k": 5}), price)
    assert bound.exact is False
    assert bound.tokens >= exact.tokens + len(O200K.encode_ordinary('{"top_k":5}'))


def test_a_json_value_orjson_cannot_write_is_still_counted() -> None:
    # A lenient parser (the CLI reads bodies with the standard library) can
    # hand over integers beyond 64 bits.
    ask = shapes.parse("chat", {**CHAT, "seed_x": 2**80})
    assert str(2**80) in "".join(ask.texts)


def test_the_402_over_http_says_the_input_count_is_a_bound() -> None:
    store = MemoryStore({"acct": "0.00001"})
    guard = CreditGuard(Recorder(), prices=TABLE, store=store, accounts={KEY: "acct"})
    with serve(guard) as url:
        auth = {"authorization": f"Bearer {KEY}"}
        plain = httpx.post(f"{url}/v1/chat/completions", json=CHAT, headers=auth, timeout=30)
        extra = httpx.post(
            f"{url}/v1/chat/completions", json={**CHAT, "documents": ["x" * 400]}, headers=auth, timeout=30
        )
    assert plain.status_code == extra.status_code == 402
    assert plain.json()["error"]["context"]["input_tokens_exact"] is True
    context = extra.json()["error"]["context"]
    assert context["input_tokens_exact"] is False
    assert context["input_tokens"] > plain.json()["error"]["context"]["input_tokens"] + 400 // 8


def test_the_openai_sdk_sees_the_refusal_and_the_bound() -> None:
    import openai

    store = MemoryStore({"acct": "0.00001"})
    guard = CreditGuard(Recorder(), prices=TABLE, store=store, accounts={KEY: "acct"})
    with serve(guard) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
        messages: Any = CHAT["messages"]
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="gpt-4o", messages=messages, max_tokens=5, web_search_options={})
        assert refused.value.body["param"] == "web_search_options"  # type: ignore[index]
        with pytest.raises(openai.APIStatusError) as short:
            client.chat.completions.create(
                model="gpt-4o",
                messages=messages,
                max_tokens=5,
                extra_body={"chat_template_kwargs": {"enable_thinking": True}},
            )
    assert short.value.status_code == 402
    assert short.value.body["context"]["input_tokens_exact"] is False  # type: ignore[index]


# -- output caps ---------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("newer", "legacy"), [(7, 900), (900, 7), (300, 300)])
async def test_both_caps_hold_the_larger(newer: int, legacy: int) -> None:
    body = {**CHAT, "max_completion_tokens": newer, "max_tokens": legacy}
    context = quoted((await post("/v1/chat/completions", body))[0])
    assert context["requested_max_tokens"] == max(newer, legacy)
    assert Decimal(str(context["max_output_cost"])) == Decimal("10.00") / 1_000_000 * max(newer, legacy)


@pytest.mark.anyio
async def test_auto_fit_lowers_both_caps() -> None:
    app = Recorder()
    store = MemoryStore({"acct": "0.002"})
    guard = CreditGuard(app, prices=TABLE, store=store, accounts={KEY: "acct"}, auto_fit=True)
    body = {**CHAT, "max_completion_tokens": 5, "max_tokens": 5000}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as http:
        response = await http.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"})
    assert response.status_code == 200, response.text
    sent = orjson.loads(app.calls[0]["body"])
    fitted = sent["max_tokens"]
    assert 5 <= fitted < 5000
    assert sent["max_completion_tokens"] == fitted


@pytest.mark.anyio
async def test_completions_on_a_chat_model_hold_its_maximum_output() -> None:
    body = {"model": "gpt-4o", "prompt": "Say hello"}
    context = quoted((await post("/v1/completions", body))[0])
    assert context["requested_max_tokens"] is None
    assert Decimal(str(context["max_output_cost"])) == Decimal("10.00") / 1_000_000 * 16384
    response, _ = await post("/v1/completions", body)
    assert "maximum output of 16384" in response.json()["error"]["detail"]
    # With a cap, the cap; on a completions model, the API's default of 16.
    assert quoted((await post("/v1/completions", {**body, "max_tokens": 40}))[0])["requested_max_tokens"] == 40
    instruct = quoted((await post("/v1/completions", {**body, "model": "gpt-3.5-turbo-instruct"}))[0])
    assert instruct["requested_max_tokens"] == 16


# -- tool definitions on models without a tokenizer --------------------------------

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a record up.",
            "parameters": {
                "type": "object",
                "properties": {
                    "where": {
                        "type": "object",
                        # Nested descriptions and `examples` are dropped by the
                        # TypeScript rendering, but an upstream for Claude or
                        # Gemini receives them.
                        "properties": {"id": {"type": "string", "description": "An identifier. " * 40}},
                        "examples": [{"id": "x" * 300}],
                    }
                },
            },
        },
    }
]


@pytest.mark.parametrize("model", ["claude-sonnet-4-5", "gemini-2.5-flash"])
def test_tools_on_a_model_without_a_tokenizer_are_bounded_by_their_json_text(model: str) -> None:
    body = {**CHAT, "model": model, "tools": TOOLS, "tool_choice": "auto"}
    price = TABLE.resolve(model)
    ask = shapes.parse("chat", body)
    count = tokens.count_input(ask, price)
    without = tokens.count_input(shapes.parse("chat", {**CHAT, "model": model}), price)
    sent = orjson.dumps({"tools": TOOLS, "tool_choice": "auto"})
    assert count.tokens >= without.tokens + len(sent)
    assert count.exact is False
    assert tokens.input_bounds(ask, price)[1] >= count.tokens
    # A model with a tokenizer is still counted on the rendering OpenAI's
    # models see; only the bound takes the JSON text in its place.
    assert "namespace functions" in "".join(ask.texts)
    assert ask.bound_texts is not None and "namespace functions" not in "".join(ask.bound_texts)


def test_tools_on_a_ratio_bounded_model_count_the_json_text() -> None:
    price = ModelPrice(
        name="mistral-large",
        kind="chat",
        input_price=Decimal("2e-6"),
        output_price=Decimal("6e-6"),
        max_output_tokens=4096,
        token_bound=TokenBound(o200k_ratio=Decimal("1.2"), margin=8),
    )
    body = {**CHAT, "model": "mistral-large", "functions": [TOOLS[0]["function"]]}
    count = tokens.count_input(shapes.parse("chat", body), price)
    assert count.tokens >= len(O200K.encode_ordinary(orjson.dumps({"functions": body["functions"]}).decode()))


# -- random extra fields -----------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=15,
)
KNOWN_NAMES = sorted(
    set().union(*(p.priced | p.free | set(p.refused) for p in (*POLICIES.values(), *MESSAGE_POLICIES.values())))
)
names = st.one_of(st.sampled_from(KNOWN_NAMES), st.text(min_size=1, max_size=12))
extras = st.dictionaries(names, json_values, min_size=1, max_size=4)

_BASE: dict[str, dict[str, Any]] = {}


async def base_quote(shape: str) -> dict[str, Any]:
    if shape not in _BASE:
        route, _, body = SHAPES[shape]
        _BASE[shape] = quoted((await post(route, body))[0])
    return _BASE[shape]


async def check_extras(shape: str, top: dict[str, Any], inner: dict[str, Any]) -> None:
    route, kind, body = SHAPES[shape]
    base = await base_quote(shape)
    sent = {**body, **top}
    policies = [(POLICIES[kind], top)]
    key = "input" if kind == "responses" else "messages"
    messages = sent.get(key)
    if inner and kind in MESSAGE_POLICIES and isinstance(messages, list) and messages and isinstance(messages[0], dict):
        sent = {**sent, key: [{**messages[0], **inner}, *messages[1:]]}
        policies.append((MESSAGE_POLICIES[kind], inner))
    response, app = await post(route, sent)
    assert app.calls == []
    if response.status_code == 400:
        assert response.json()["error"]["param"]
        return
    assert response.status_code == 402, response.text
    context = response.json()["error"]["context"]
    if any(name in policy.priced or name == "role" for policy, fields in policies for name in fields):
        return  # a priced field replaced: another request, not a larger one
    counted = [
        (name, value)
        for policy, fields in policies
        for name, value in fields.items()
        if name not in policy.free and name not in policy.refused
    ]
    if not counted:
        assert context["input_tokens"] == base["input_tokens"]
        return
    text = sum(text_tokens(body["model"], field_text(name, value)) for name, value in counted)
    assert context["input_tokens"] >= base["input_tokens"] + text
    assert context["input_tokens_exact"] is False


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.sampled_from(list(SHAPES)), top=extras, inner=st.one_of(st.just({}), extras))
def test_random_extra_fields_are_refused_or_counted_never_free_by_accident(
    shape: str, top: dict[str, Any], inner: dict[str, Any]
) -> None:
    anyio.run(check_extras, shape, top, inner)


def test_unknown_keys_of_a_chat_tool_definition_are_counted() -> None:
    price = TABLE.resolve("gpt-4o")
    body = {**CHAT, "tools": TOOLS}
    plain = tokens.count_input(shapes.parse("chat", body), price)
    note = {"x-notes": "Rendered by templates that dump the whole definition. " * 10}
    tool = {**TOOLS[0], **note, "function": {**TOOLS[0]["function"], **note}}
    counted = tokens.count_input(shapes.parse("chat", {**body, "tools": [tool]}), price)
    assert counted.tokens >= plain.tokens + 2 * len(O200K.encode_ordinary(orjson.dumps(note).decode()))


PART_TYPES = [
    "text", "image_url", "input_text", "input_image", "input_file", "input_audio", "file", "document", "image",
    "tool_result", "tool_use", "refusal", "output_text", "search_result", "thinking", "container_upload",
]  # fmt: skip
parts = st.dictionaries(
    st.one_of(st.sampled_from(["type", "text", "image_url", "source", "content", "refusal"]), st.text(max_size=8)),
    json_values,
    max_size=4,
).flatmap(lambda rest: st.one_of(json_values, st.sampled_from(PART_TYPES)).map(lambda kind: {**rest, "type": kind}))


async def check_part(shape: str, part: dict[str, Any]) -> None:
    route, kind, body = SHAPES[shape]
    key = "input" if kind == "responses" else "messages"
    sent = {**body, key: [{**body[key][0], "content": [part]}]}
    response, app = await post(route, sent)
    assert app.calls == []
    assert response.status_code in (400, 402), response.text
    if response.status_code == 400:
        assert response.json()["error"]["param"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(shape=st.sampled_from(["chat", "chat-claude", "responses", "anthropic"]), part=parts)
def test_random_content_parts_are_priced_or_refused_never_a_500(shape: str, part: dict[str, Any]) -> None:
    anyio.run(check_part, shape, part)


def test_each_field_of_an_ask_is_the_one_its_shape_read() -> None:
    """``_Builder.ask`` makes the ``Ask`` by position: every field, set to a
    value no other field has, lands where its name says."""
    from credit_guard import shapes

    chat = shapes.parse(
        "chat",
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Hi", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            "max_completion_tokens": 7,
            "n": 3,
            "stream": True,
            "stream_options": {"include_usage": False},
            "service_tier": "flex",
            "seed_of_nothing": 1,
        },
    )
    assert (chat.kind, chat.model, chat.output_tokens, chat.output_param, chat.choices) == (
        "chat",
        "gpt-4o-mini",
        7,
        "max_completion_tokens",
        3,
    )
    assert (chat.stream, chat.include_usage, chat.service_tier, chat.cache_ttl) == (True, False, "flex", "1h")
    assert chat.texts[-2:] == ("user", "Hi") and chat.unknown[0] == '{"seed_of_nothing":1}'
    assert chat.fixed_tokens > 0 and chat.parts == 1 and chat.exact is False
    assert chat.images == () and chat.bound_texts is None and chat.tool_choice is None
    assert chat.default_output_tokens is None and chat.source is not None
    usage = shapes.parse(
        "chat",
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Hi"}],
            "stream": False,
            "stream_options": {"include_usage": True},
        },
    )
    assert (usage.stream, usage.include_usage) == (False, True)
    completion = shapes.parse("completion", {"model": "gpt-3.5-turbo-instruct", "prompt": "Hi"})
    assert (completion.output_tokens, completion.default_output_tokens) == (None, shapes.COMPLETIONS_DEFAULT_MAX_TOKENS)
    anthropic = shapes.parse(
        "anthropic",
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 9,
            "messages": [{"role": "user", "content": "Hi"}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        },
    )
    assert (anthropic.output_tokens, anthropic.tool_choice) == (9, "")
