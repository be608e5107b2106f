"""Reading the body within a limit, decoding it, and replaying it."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credit_guard.body import ClientDisconnected, parse_json, read_body, replay
from credit_guard.errors import InvalidRequest, RequestTooLarge, UnsupportedMediaType

pytestmark = pytest.mark.anyio


def receiver(messages: list[dict[str, Any]]) -> Any:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        if not queue:
            raise AssertionError("receive() called after the last message: it would hang")
        return queue.pop(0)

    return receive


def chunks(data: bytes, size: int) -> list[dict[str, Any]]:
    parts = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    return [{"type": "http.request", "body": part, "more_body": i < len(parts) - 1} for i, part in enumerate(parts)]


def scope(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"type": "http", "headers": list(headers)}


async def test_reads_every_chunk() -> None:
    data = b'{"model":"gpt-4o"}' * 100
    body = await read_body(scope(), receiver(chunks(data, 7)), 10_000)
    assert body.raw == body.data == data


async def test_content_length_over_the_limit_is_refused_before_reading() -> None:
    with pytest.raises(RequestTooLarge):
        await read_body(scope((b"content-length", b"5000")), receiver([]), 1000)


async def test_lying_content_length_is_caught_on_the_real_bytes() -> None:
    data = b"x" * 2000
    with pytest.raises(RequestTooLarge):
        await read_body(scope((b"content-length", b"10")), receiver(chunks(data, 100)), 1000)


async def test_chunked_without_length_is_caught_on_the_real_bytes() -> None:
    with pytest.raises(RequestTooLarge):
        await read_body(scope(), receiver(chunks(b"y" * 5000, 1000)), 4096)


async def test_malformed_content_length() -> None:
    with pytest.raises(InvalidRequest):
        await read_body(scope((b"content-length", b"abc")), receiver([]), 100)
    with pytest.raises(InvalidRequest):
        await read_body(scope((b"content-length", b"1"), (b"content-length", b"2")), receiver([]), 100)


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        (b"gzip", gzip.compress),
        (b"deflate", zlib.compress),
        (b"deflate", lambda d: zlib.compress(d)[2:-4]),  # raw deflate, as some clients send
    ],
)
async def test_decodes_content_encoding(coding: bytes, encode: Any) -> None:
    data = b'{"model":"gpt-4o","messages":[]}'
    sent = encode(data)
    body = await read_body(scope((b"content-encoding", coding)), receiver(chunks(sent, 5)), 1000)
    assert body.data == data
    assert body.raw == sent


async def test_decompression_bomb_is_413_without_inflating_it() -> None:
    bomb = gzip.compress(b"0" * 50_000_000)
    with pytest.raises(RequestTooLarge):
        await read_body(scope((b"content-encoding", b"gzip")), receiver(chunks(bomb, 4096)), 1_000_000)


async def test_unknown_encoding_is_415() -> None:
    with pytest.raises(UnsupportedMediaType):
        await read_body(scope((b"content-encoding", b"br")), receiver(chunks(b"x", 1)), 100)


async def test_truncated_gzip_is_400() -> None:
    sent = gzip.compress(b"hello world" * 100)[:-10]
    with pytest.raises(InvalidRequest):
        await read_body(scope((b"content-encoding", b"gzip")), receiver(chunks(sent, 50)), 10_000)


async def test_disconnect_while_reading() -> None:
    messages = [{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}]
    with pytest.raises(ClientDisconnected):
        await read_body(scope(), receiver(messages), 100)


async def test_replay_gives_the_body_once_then_delegates() -> None:
    later = {"type": "http.disconnect"}
    replayed = replay(b"abc", receiver([later]))
    assert await replayed() == {"type": "http.request", "body": b"abc", "more_body": False}
    assert await replayed() == later


# -- strict JSON: no key twice in one object ------------------------------------------


def _reference_unique(data: bytes) -> bool:
    """The standard library's answer, every pair seen: no object has a key twice."""
    import json

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            raise KeyError("duplicate")
        return dict(pairs)

    try:
        json.loads(data, object_pairs_hook=hook)
    except KeyError:
        return False
    return True


@pytest.mark.parametrize(
    "data",
    [
        b'{"model":"a","model":"b"}',
        b'{"model":"gpt-4o","messages":[{"role":"user","content":"x","content":"y"}]}',
        # The same key once its escape is decoded: another parser sees it twice too.
        b'{"model":"gpt-4o","mod\\u0065l":"gpt-4o-mini"}',
        b'{"a":{"b":1},"a":{"b":1}}',
        # The value a repeated key replaced holds the only colons in strings.
        b'{"a":{"x":"1:2:3"},"a":"plain"}',
        # A colon escaped in a string would balance a repeated key, were it
        # not counted: \\u003a decodes to ":".
        b'{"k":"\\u003a","k":"v"}',
        b'{"k":"\\u003A","k":"\\u003a"}',
    ],
)
def test_a_key_twice_in_one_object_is_refused(data: bytes) -> None:
    assert not _reference_unique(data)
    with pytest.raises(InvalidRequest) as caught:
        parse_json(data)
    assert "twice" in caught.value.message


@pytest.mark.parametrize(
    "data",
    [
        b'{"model":"gpt-4o","messages":[{"role":"user","content":"see https://example.com:8080/a:b"}]}',
        b'{"k\\u003a":"\\u003a\\u003A::","x":{"k\\u003a":1}}',
        # An escaped backslash before "u003a" is not an escaped colon.
        b'{"k":"\\\\u003a","j":"\\\\u003A:"}',
        b'{"a":1,"b":{"a":1,"b":[{"a":{}}]}}',
        b'[{"a":1},{"a":1}]',
        b'"just:a:string"',
    ],
)
def test_the_same_key_in_different_objects_and_colons_in_strings_are_accepted(data: bytes) -> None:
    assert _reference_unique(data)
    assert parse_json(data) == orjson.loads(data)


_KEYS = ["a", "b", "a:", ":", "é", "model"]


def _escaped(text: str, draw: Any) -> str:
    """``text`` as a JSON string literal, each character escaped or not."""
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif draw(st.booleans()):
            out.append(f"\\u{ord(char):04{draw(st.sampled_from(['x', 'X']))}}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


@st.composite
def _json_texts(draw: Any, depth: int = 0) -> str:
    kind = draw(st.sampled_from(["object", "array", "string", "number"] if depth < 3 else ["string", "number"]))
    if kind == "number":
        return str(draw(st.integers(-5, 5)))
    if kind == "string":
        return _escaped(draw(st.sampled_from(["", ":", "a:b", "\\u003a", "x", "é:"])), draw)
    if kind == "array":
        return "[" + ",".join(draw(st.lists(_json_texts(depth + 1), max_size=3))) + "]"
    keys = draw(st.lists(st.sampled_from(_KEYS), max_size=4))
    members = [f"{_escaped(key, draw)}:{draw(_json_texts(depth + 1))}" for key in keys]
    return "{" + ",".join(members) + "}"


@settings(max_examples=400, deadline=None)
@given(text=_json_texts())
def test_a_repeated_key_is_refused_exactly_where_the_standard_library_finds_one(text: str) -> None:
    data = text.encode()
    if _reference_unique(data):
        assert parse_json(data) == orjson.loads(data)
    else:
        with pytest.raises(InvalidRequest):
            parse_json(data)


async def test_the_pieces_are_kept_as_they_arrived_and_replayed_so() -> None:
    data = b'{"model":"gpt-4o"}' * 100
    messages = chunks(data, 7)
    messages.insert(3, {"type": "http.request", "body": b"", "more_body": True})  # an empty piece is dropped
    messages.insert(5, {"type": "http.request", "body": bytearray(b""), "more_body": True})
    messages[1] = {**messages[1], "body": bytearray(messages[1]["body"])}  # kept as bytes, as ASGI promises
    body = await read_body(scope(), receiver(messages), 10_000)
    assert body.chunks == tuple(data[i : i + 7] for i in range(0, len(data), 7))
    assert all(type(piece) is bytes for piece in body.chunks)
    assert body.parts == body.chunks and body.decoded is None and body.size == len(data)
    later = {"type": "http.disconnect"}
    replayed = replay(body.chunks, receiver([later]))
    got = [await replayed() for _ in body.chunks]
    assert [m["body"] for m in got] == list(body.chunks)
    assert [m["more_body"] for m in got] == [True] * (len(got) - 1) + [False]
    assert await replayed() == later


async def test_an_empty_body_is_replayed_as_one_empty_message() -> None:
    body = await read_body(scope(), receiver(chunks(b"", 7)), 100)
    assert body.chunks == () and body.raw == body.data == b"" and body.size == 0
    replayed = replay(body.chunks, receiver([]))
    assert await replayed() == {"type": "http.request", "body": b"", "more_body": False}


async def test_a_decoded_body_is_handed_on_decoded_in_one_piece() -> None:
    data = b'{"model":"gpt-4o"}' * 100
    sent = gzip.compress(data)
    body = await read_body(scope((b"content-encoding", b"gzip")), receiver(chunks(sent, 5)), 10_000)
    assert body.parts == (data,) and body.size == len(data)
    assert body.raw == sent and len(body.chunks) == -(-len(sent) // 5)
