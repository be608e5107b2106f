"""Mistral models: counted with Mistral's own tokenizer (the ``mistral`` extra),
checked against the usage the Mistral API reported for recorded requests, and
the byte bound where the extra is missing.

Published figures: requests recorded against api.mistral.ai with the usage the
API returned, in pydantic/pydantic-ai ``tests/models/cassettes/test_mistral/``:
``test_mistral_forwards_penalties.yaml`` (mistral-large-latest, "hello" -> 4),
``test_mistral_chat_with_prediction.yaml`` (mistral-small-latest, two text
chunks -> 28), ``test_text_document_as_binary_content_input.yaml``
(mistral-large-latest, text and a text file -> 49) and
``test_image_as_binary_content_tool_response.yaml`` (pixtral-12b-latest: a
tool definition -> 65; then tool call, tool result, assistant text and a
597 x 566 image -> 1542).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credit_guard import CreditGuard, MemoryStore, PriceTable, _mistral, shapes, tokens
from credit_guard.errors import InvalidRequest
from credit_guard.fake_llm import create_app
from credit_guard.prices import ModelPrice

from .servers import serve

pytest.importorskip("mistral_common", reason="the 'mistral' extra is not installed")

TABLE = PriceTable.default()
PIXTRAL = ModelPrice(
    name="pixtral-12b-latest", kind="chat", provider="mistral", input_price=Decimal("1.5E-7"), output_price=Decimal(0)
)

HELLO = {"model": "mistral-large-latest", "messages": [{"role": "user", "content": "hello"}]}
MATH = {
    "model": "mistral-small-latest",
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Correct only the math, respond with no explanation, no formatting."},
                {"type": "text", "text": "The result of 21+21=99"},
            ],
        }
    ],
}
DOCUMENT = {
    "model": "mistral-large-latest",
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is the main content on this document?"},
                {
                    "type": "text",
                    "text": '-----BEGIN FILE id="f58746" type="text/plain"-----\nDummy TXT file\n\n'
                    '-----END FILE id="f58746"-----',
                },
            ],
        }
    ],
}
GET_IMAGE = [
    {
        "type": "function",
        "function": {
            "name": "get_image",
            "description": "",
            "parameters": {"additionalProperties": False, "properties": {}, "type": "object"},
        },
    }
]
ASK_FOR_IMAGE = {
    "role": "user",
    "content": [
        {"type": "text", "text": "What fruit is in the image you can get from the get_image tool? Call the tool."}
    ],
}
PIXTRAL_TOOLS = {"model": "pixtral-12b-latest", "tool_choice": "auto", "tools": GET_IMAGE, "messages": [ASK_FOR_IMAGE]}
TOOL_ROUND = [
    ASK_FOR_IMAGE,
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "9v45XkLNV", "type": "function", "function": {"name": "get_image", "arguments": "{}"}}],
    },
    {"role": "tool", "tool_call_id": "9v45XkLNV", "content": "See file 241a70"},
    {"role": "assistant", "content": [{"type": "text", "text": "OK"}]},
]


@pytest.fixture(scope="module", autouse=True)
def loaded() -> None:
    assert _mistral.warm(("mistral-large-latest",))


def count(body: dict[str, Any], price: ModelPrice | None = None) -> tokens.TokenCount:
    ask = shapes.parse("chat", body)
    return tokens.count_input(ask, price or TABLE.resolve(body["model"]))


def byte_bound(body: dict[str, Any], price: ModelPrice | None = None) -> tokens.TokenCount:
    """The count the guard gives where Mistral's tokenizer is not available."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_mistral, "count_chat", lambda *args, **kwargs: None)
        return count(body, price)


# -- the published figures ----------------------------------------------------------


@pytest.mark.parametrize(("body", "published"), [(HELLO, 4), (MATH, 28), (DOCUMENT, 49)])
def test_the_recorded_usage_is_counted_exactly(body: dict[str, Any], published: int) -> None:
    assert count(body) == tokens.TokenCount(published, True)
    assert byte_bound(body).tokens >= published


def test_a_tool_definition_is_counted_exactly() -> None:
    """pixtral-12b-latest, one tool, tool_choice auto -> 65."""
    assert count(PIXTRAL_TOOLS, PIXTRAL) == tokens.TokenCount(65, True)
    assert byte_bound(PIXTRAL_TOOLS, PIXTRAL).tokens >= 65


def test_tool_calls_tool_results_and_assistant_text_are_counted_exactly() -> None:
    """pixtral-12b-latest -> 1542 for the tool round then "This is file 241a70:"
    and a 597 x 566 image.  The image is 36 rows of 38 patches of 16 px plus a
    break or end token per row (Mistral's image rule, ``mistral-common``'s
    ImageConfig for pixtral): 1404 tokens; the rest is text."""
    body = {
        **PIXTRAL_TOOLS,
        "messages": [*TOOL_ROUND, {"role": "user", "content": [{"type": "text", "text": "This is file 241a70:"}]}],
    }
    image_tokens = 36 * (38 + 1)
    assert count(body, PIXTRAL) == tokens.TokenCount(1542 - image_tokens, True)
    assert byte_bound(body, PIXTRAL).tokens >= 1542 - image_tokens


def test_an_image_on_a_mistral_model_without_an_image_rule_is_refused() -> None:
    body = {
        **PIXTRAL_TOOLS,
        "messages": [
            *TOOL_ROUND,
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/k.jpg"}}]},
        ],
    }
    with pytest.raises(InvalidRequest):
        count(body, PIXTRAL)


# -- what no recorded figure covers: a bound --------------------------------------


def test_system_messages_make_it_a_bound_two_tokens_above_the_v3_rendering() -> None:
    body = {
        "model": "mistral-large-latest",
        "messages": [{"role": "system", "content": "Be brief."}, *HELLO["messages"]],
    }
    counted = count(body)
    exact = _mistral.count_chat(
        {"messages": [{"role": "user", "content": "Be brief.\n\nhello"}]}, "mistral-large-latest"
    )
    assert exact is not None and exact.exact
    assert counted.exact is False
    assert counted.tokens == exact.tokens + _mistral.SYSTEM_MARGIN
    assert byte_bound(body).tokens >= counted.tokens


def test_names_response_formats_and_forced_tools_are_added_as_json() -> None:
    named = {**HELLO, "messages": [{"role": "user", "content": "hello", "name": "bob"}]}
    result = count(named)
    assert result.exact is False
    assert result.tokens == 4 + len(b'["bob"]')
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    shaped = count({**HELLO, "response_format": schema})
    assert shaped.exact is False and shaped.tokens >= 4 + len(json.dumps(schema))
    forced = count({**PIXTRAL_TOOLS, "tool_choice": "required"}, PIXTRAL)
    assert forced.exact is False and forced.tokens > 65
    strict = [{**GET_IMAGE[0], "function": {**GET_IMAGE[0]["function"], "strict": True}}]
    stricter = count({**PIXTRAL_TOOLS, "tools": strict}, PIXTRAL)
    assert stricter == tokens.TokenCount(65 + len(b'{"strict": true}'), False)


def test_prompt_mode_is_refused() -> None:
    with pytest.raises(InvalidRequest) as caught:
        count({**HELLO, "model": "mistral-medium-latest", "prompt_mode": "reasoning"})
    assert caught.value.param == "prompt_mode"


@pytest.mark.parametrize(
    ("model", "key", "verified"),
    [
        ("mistral-large-latest", ("v3", True), True),
        ("mistral/mistral-large-2512", ("v3", True), True),
        ("mistral-small-2603", ("v3", True), True),
        ("magistral-medium-latest", ("v3", True), True),
        ("pixtral-12b-2409", ("v3", True), False),
        ("open-mistral-nemo", ("v3", True), False),
        ("ministral-8b-latest", ("v3", True), False),
        ("mistral-large-2411", ("v7", False), False),
        ("mistral-large-2407", ("v3", False), False),
        ("mistral-small-2402", ("v2", False), False),
        ("codestral-2405", ("v3", False), False),
    ],
)
def test_model_names_map_to_their_tokenizer(model: str, key: tuple[str, bool], verified: bool) -> None:
    assert _mistral.tokenizer_key(model) == (key, verified)


@pytest.mark.parametrize(
    "model", ["codestral-latest", "pixtral-large-latest", "mistral/zai-glm-5", "mistral/deepseek-v4-1-flash-1017"]
)
def test_models_without_a_known_tokenizer_get_the_byte_bound(model: str) -> None:
    assert _mistral.tokenizer_key(model) is None
    price = ModelPrice(name=model, kind="chat", provider="mistral", input_price=Decimal(0), output_price=Decimal(0))
    result = count({**HELLO, "model": model}, price)
    assert result.exact is False and result.tokens >= len(b"hello") + tokens.PART_MARGIN


def test_a_dated_model_on_an_older_tokenizer_is_a_bound_above_its_count() -> None:
    pytest.importorskip("sentencepiece")
    price = ModelPrice(
        name="mistral-large-2411", kind="chat", provider="mistral", input_price=Decimal(0), output_price=Decimal(0)
    )
    body = {**HELLO, "model": "mistral-large-2411"}
    counted = _mistral.count_chat(body, "mistral-large-2411", wait=True)
    assert counted is not None and counted.exact is False
    # v7 (sentencepiece): <s> [INST] "▁hello" [/INST] is 5 tokens, plus the margin.
    assert counted.tokens == 5 + _mistral.MESSAGE_MARGIN * 2
    assert count(body, price) == tokens.TokenCount(counted.tokens, False)


def test_a_body_the_template_refuses_gets_the_byte_bound() -> None:
    body = {**HELLO, "messages": [*HELLO["messages"], {"role": "assistant", "content": "Hi!"}]}
    result = count(body)
    assert result.exact is False
    assert result.tokens == byte_bound(body).tokens


def test_large_bodies_get_a_floor_no_higher_than_the_exact_count() -> None:
    body = {**DOCUMENT, "messages": DOCUMENT["messages"] * 20 + HELLO["messages"]}
    ask = shapes.parse("chat", body)
    price = TABLE.resolve("mistral-large-latest")
    low, high = tokens.input_bounds(ask, price)
    exact = tokens.count_input(ask, price)
    assert low <= exact.tokens <= high


# -- the bound against the truth ----------------------------------------------------

texts = st.text(st.characters(codec="utf-8"), min_size=0, max_size=300)
schemas = st.recursive(
    st.dictionaries(st.sampled_from(["type", "description", "enum", "title"]), st.text(max_size=30), max_size=3),
    lambda inner: st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    system=st.one_of(st.none(), texts),
    turns=st.lists(st.tuples(texts, texts), min_size=0, max_size=3),
    last=texts.filter(bool),
    tools=st.lists(st.tuples(st.from_regex(r"[a-z_]{1,20}", fullmatch=True), texts, schemas), max_size=3),
)
def test_the_byte_bound_is_never_below_mistrals_count(
    system: str | None, turns: list[tuple[str, str]], last: str, tools: list[tuple[str, str, Any]]
) -> None:
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system is not None else []
    for user, assistant in turns:
        messages += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    messages.append({"role": "user", "content": last})
    body: dict[str, Any] = {"model": "mistral-large-latest", "messages": messages}
    if tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": name, "description": text, "parameters": {"type": "object", "properties": schema}},
            }
            for name, text, schema in {t[0]: t for t in tools}.values()
        ]
    truth = _mistral.count_chat(body, "mistral-large-latest")
    if truth is None:  # a body Mistral's renderer refuses is not priced by it
        return
    assert byte_bound(body).tokens >= truth.tokens
    assert count(body).tokens == truth.tokens


# -- without network, and without the extra ----------------------------------------

_NO_NETWORK = """
import socket
def refuse(*args, **kwargs):
    raise OSError("network disabled for this test")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
"""


def run(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_tokenizers_load_from_the_wheel_without_network() -> None:
    code = _NO_NETWORK + (
        "from credit_guard import _mistral\n"
        "assert _mistral.warm(('mistral-large-latest', 'open-mistral-nemo'))\n"
        "print(_mistral.count_chat({'messages': [{'role': 'user', 'content': 'hello'}]}, 'mistral-large-latest'))\n"
    )
    assert run(code) == "MistralCount(tokens=4, exact=True)"


def test_without_the_extra_the_byte_bound_is_used() -> None:
    body = {**PIXTRAL_TOOLS, "model": "mistral-large-latest"}
    code = (
        "import sys, json\n"
        "sys.modules['mistral_common'] = None\n"
        "from credit_guard import PriceTable, _mistral, shapes, tokens\n"
        "assert not _mistral.available() and not _mistral.warm()\n"
        f"body = json.loads({json.dumps(json.dumps(body))})\n"
        "ask = shapes.parse('chat', body)\n"
        "print(json.dumps(tokens.count_input(ask, PriceTable.default().resolve(body['model']))))\n"
    )
    tokens_, exact = json.loads(run(code))
    assert exact is False
    assert tokens_ >= 65
    assert tokens_ == byte_bound(body).tokens


def test_a_tokenizer_loads_in_the_background_and_then_counts_exactly() -> None:
    code = (
        "import threading, time\n"
        "from credit_guard import PriceTable, shapes, tokens\n"
        "body = {'model': 'mistral-small-latest', 'messages': [{'role': 'user', 'content': 'hello'}]}\n"
        "ask = shapes.parse('chat', body)\n"
        "price = PriceTable.default().resolve('mistral-small-latest')\n"
        "first = tokens.count_input(ask, price)\n"
        "for thread in threading.enumerate():\n"
        "    if thread.name == 'credit-guard-mistral-tokenizer': thread.join(60)\n"
        "print(first.exact, tokens.count_input(ask, price))\n"
    )
    assert run(code) == "False TokenCount(tokens=4, exact=True)"


# -- over real HTTP -----------------------------------------------------------------

KEY = "sk-mistral-counts-0123456789"


@pytest.mark.anyio
async def test_the_402_carries_the_exact_mistral_count() -> None:
    store = MemoryStore({"acct": "0.0000001"}, keys={KEY: "acct"})
    app = CreditGuard(create_app(), prices=TABLE, store=store)
    with serve(app) as url:
        async with httpx.AsyncClient() as http:
            reply = await http.post(
                url + "/v1/chat/completions",
                json={**MATH, "max_tokens": 500},
                headers={"Authorization": f"Bearer {KEY}"},
            )
    assert reply.status_code == 402
    context = reply.json()["error"]["context"]
    assert (context["input_tokens"], context["input_tokens_exact"]) == (28, True)


def test_fields_mistrals_renderer_does_not_know_are_added_as_their_json_text() -> None:
    plain = count(HELLO)
    assert plain.exact
    for extra in (
        {"guided_json": {"type": "object", "properties": {"x": {"type": "string"}}}},
        {"documents": ["a" * 500]},
    ):
        body = {**HELLO, **extra}
        counted = count(body)
        added = len(json.dumps(extra, separators=(",", ":")).encode())
        assert counted.tokens >= plain.tokens + added
        assert counted.exact is False
    message = {**HELLO, "messages": [{"role": "user", "content": "hello", "chat_template_kwargs": {"x": "y" * 300}}]}
    assert count(message).tokens >= plain.tokens + 300
    assert count(message).exact is False


@pytest.mark.anyio
async def test_an_answer_without_usage_is_charged_on_mistrals_count_of_the_request() -> None:
    """The parsed body, which Mistral's tokenizer renders, is still there when
    the settlement prices an answer that carried no usage: with an ample
    balance the hold was the byte bound, and the charge and the record are
    on the exact count."""
    answer = b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "4"}}]}'

    async def upstream(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": answer})

    store = MemoryStore({"acct": "100"}, keys={KEY: "acct"})
    guard = CreditGuard(upstream, prices=TABLE, store=store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://guard") as http:
        # The first request shows the guard the balance; the second holds the bound.
        for _ in range(2):
            reply = await http.post("/v1/chat/completions", json=MATH, headers={"Authorization": f"Bearer {KEY}"})
            assert reply.status_code == 200
    bounded, exact = await store.usage_records()  # the most recent first
    assert [(r.input_tokens, r.outcome) for r in (bounded, exact)] == [(28, "settled")] * 2
    # Usage it cannot read costs the worst case, on the exact count: the
    # exact hold of the first request, below the second's bound.
    assert bounded.held > bounded.charged == exact.held == exact.charged
