"""Reading the body within a limit, decoding it, and replaying it."""

from __future__ import annotations

import gzip
import zlib
from typing import Any

import pytest

from credit_guard.body import ClientDisconnected, read_body, replay
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
