"""Fuzzing the guard: random and mutated request bodies, headers and paths.

For every input: the app sees only requests whose worst case was held, every
answer the guard writes itself is a contract error, and no 500 ever comes from
the guard."""

from __future__ import annotations

import json
import posixpath
from typing import Any
from urllib.parse import unquote

import anyio
import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credit_guard import CreditGuard, MemoryStore

from .test_middleware import PRICES

KEY = "sk-fuzz"
CONTRACT = {400, 401, 402, 413, 415, 503}

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5), st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)
FIELDS = [
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stream",
    "tools",
    "stream_options",
]
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "tool", "developer", "x"])},
        optional={"content": st.one_of(st.text(max_size=60), json_values), "name": st.text(max_size=8)},
    ),
    max_size=4,
)
chat_bodies = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(st.sampled_from(["gpt-4o", "gpt-4o-mini", "gpt-4o-2024-08-06", "nope"]), json_values),
        "messages": st.one_of(messages, json_values),
        "max_tokens": st.one_of(st.integers(min_value=-5, max_value=40_000), json_values),
        "max_completion_tokens": st.one_of(st.integers(min_value=-5, max_value=40_000), json_values),
        "n": st.one_of(st.integers(min_value=-2, max_value=200), json_values),
        "stream": st.one_of(st.booleans(), json_values),
        "temperature": json_values,
    },
)


def mutate(raw: bytes, data: st.DataObject) -> bytes:
    operations = data.draw(st.lists(st.sampled_from(["flip", "cut", "insert", "dup"]), max_size=3))
    for operation in operations:
        if not raw:
            break
        at = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
        if operation == "flip":
            raw = raw[:at] + bytes([raw[at] ^ data.draw(st.integers(1, 255))]) + raw[at + 1 :]
        elif operation == "cut":
            raw = raw[:at]
        elif operation == "insert":
            raw = raw[:at] + data.draw(st.binary(max_size=8)) + raw[at:]
        else:
            field = data.draw(st.sampled_from(FIELDS))
            raw = raw[:1] + f'"{field}":99999,'.encode() + raw[1:]
    return raw


paths = st.one_of(
    st.sampled_from(
        [
            "/v1/chat/completions",
            "/v1/chat/completions/",
            "//v1/chat/completions",
            "/v1/chat/completions/x",
            "/chat/completions",
            "/v1/completions",
            "/v1/embeddings",
            "/v1/responses",
            "/v1/messages",
            "/v1/other",
        ]
    ),
    st.lists(st.sampled_from(["v1", "chat", "completions", "..", ".", "%2F", "", "X"]), max_size=5).map(
        lambda parts: "/" + "/".join(parts)
    ),
)
headers = st.dictionaries(
    st.sampled_from(
        [
            "content-encoding",
            "content-type",
            "x-http-method-override",
            "x-request-id",
            "authorization",
            "x-api-key",
            "transfer-encoding",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=30),
    max_size=3,
)


ENDPOINTS = ("/chat/completions", "/completions", "/embeddings", "/responses", "/messages")


def routed_as_priced(path: str) -> bool:
    """How a lenient app (its own normalisation, not the guard's) might route a
    path to a priced endpoint."""
    for _ in range(3):
        path = unquote(path)
    path = posixpath.normpath("/" + path.lower()).rstrip("/")
    return any(segment in path for segment in ENDPOINTS)


class Watched:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.unheld: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        held = (await self.store.balance("acct")).held > 0
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if body and routed_as_priced(scope["path"]) and not held:
            # A body reached what the app would serve as an LLM endpoint, unheld.
            self.unheld.append(f"{scope['method']} {scope['path']}")
        body = orjson.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


async def exchange(method: str, path: str, body: bytes, extra: dict[str, str]) -> tuple[httpx.Response, Watched]:
    store = MemoryStore({"acct": "0.5"})
    watched = Watched(store)
    guard = CreditGuard(watched, prices=PRICES, store=store, accounts={KEY: "acct"}, max_body_bytes=4096)
    sent = {"authorization": f"Bearer {KEY}", **extra}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=guard), base_url="http://t") as http:
        response = await http.request(method, path, content=body, headers=sent)
    balance = await store.balance("acct")
    assert balance.held == 0
    assert balance.available + balance.spent == balance.granted
    return response, watched


def check(response: httpx.Response, watched: Watched) -> None:
    assert watched.unheld == []
    assert response.status_code != 500
    if response.status_code != 200:
        assert response.status_code in CONTRACT, response.status_code
        error = response.json()["error"]
        assert error["status"] == response.status_code
        assert error["request_id"] == response.headers["x-request-id"]
        assert KEY not in response.text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=chat_bodies, data=st.data())
def test_random_and_mutated_chat_bodies(body: dict[str, Any], data: st.DataObject) -> None:
    raw = mutate(json.dumps(body).encode(), data)
    response, watched = anyio.run(exchange, "POST", "/v1/chat/completions", raw, {})
    check(response, watched)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    method=st.sampled_from(["POST", "GET", "PUT", "PATCH", "DELETE"]),
    path=paths,
    extra=headers,
    body=st.one_of(
        st.just(b'{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":5}'),
        st.binary(max_size=64),
    ),
)
def test_random_paths_methods_and_headers(method: str, path: str, extra: dict[str, str], body: bytes) -> None:
    try:
        response, watched = anyio.run(exchange, method, path, body, extra)
    except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeEncodeError):
        return  # the client refused to send it; nothing reached the guard
    check(response, watched)


# -- every value of a valid body, replaced by a value of every other JSON type ------------

_VALID = {
    "/v1/chat/completions": {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "hi"}], "name": "ann"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
            {"role": "tool", "content": "42", "tool_call_id": "c1"},
        ],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "response_format": {"type": "json_object"},
        "max_tokens": 5,
        "n": 1,
        "stream": True,
        "stream_options": {"include_usage": True},
        "service_tier": "auto",
    },
    "/v1/completions": {"model": "gpt-3.5-turbo-instruct", "prompt": ["a", "b"], "max_tokens": 5, "n": 1},
    "/v1/embeddings": {"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 8},
    "/v1/responses": {
        "model": "gpt-4o",
        "instructions": "Be brief.",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}],
        "max_output_tokens": 5,
    },
    "/v1/messages": {
        "model": "claude-3-5-sonnet-20241022",
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "f"},
        "max_tokens": 5,
    },
}
_OTHERS: list[Any] = [["x"], [{"x": 1}], {"x": 1}, {}, 7, -1, 2**70, 1.5, None, True, "x", "", []]


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path] if path else []
    if isinstance(value, dict):
        for key, inner in value.items():
            found += _paths(inner, (*path, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _paths(inner, (*path, index))
    return found


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _replaced(value[path[0]], path[1:], new)
    return copy


@pytest.mark.anyio
async def test_every_value_of_a_valid_body_replaced_by_any_other_type_is_priced_or_refused() -> None:
    """No value of a body, whatever its type, reaches the app unpriced or
    takes the guard down: a list where a role was expected once made a 500."""
    reached = 0

    async def app(scope: Any, receive: Any, send: Any) -> None:
        nonlocal reached
        reached += 1
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"usage": {"prompt_tokens": 1, "completion_tokens": 1}}'})

    store = MemoryStore({"acct": "1000"})
    guard = CreditGuard(app, store=store, prices=PRICES, accounts={KEY: "acct"})
    transport = httpx.ASGITransport(app=guard, raise_app_exceptions=False)
    statuses: set[int] = set()
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for route, body in _VALID.items():
            for path in _paths(body):
                for other in _OTHERS:
                    mutated = _replaced(body, path, other)
                    response = await client.post(route, json=mutated, headers={"Authorization": f"Bearer {KEY}"})
                    assert response.status_code in CONTRACT | {200}, (route, path, other, response.text)
                    statuses.add(response.status_code)
    assert {200, 400} <= statuses
    balance = await store.balance("acct")
    assert balance.held == 0 and balance.available + balance.spent == balance.granted
    assert reached > 0
