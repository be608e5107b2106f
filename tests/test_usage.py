"""Reading usage from JSON bodies and event streams as they pass."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from credit_guard.usage import UnreadableUsage, Usage, UsageTap, usage_from_json


def chunk(content: str | None = None, *, usage: object = "absent", choices: bool = True) -> bytes:
    data: dict[str, object] = {"id": "c1", "object": "chat.completion.chunk", "model": "gpt-4o"}
    data["choices"] = [{"index": 0, "delta": {"content": content}, "finish_reason": None}] if choices else []
    if usage != "absent":
        data["usage"] = usage
    return b"data: " + orjson.dumps(data) + b"\n\n"


STREAM = [chunk("Hello", usage=None), chunk(" world", usage=None)]
USAGE = {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
FINAL = chunk(choices=False, usage=USAGE)
DONE = b"data: [DONE]\n\n"


def feed(tap: UsageTap, pieces: list[bytes], content_type: bytes = b"text/event-stream") -> bytes:
    tap.start({"type": "http.response.start", "status": 200, "headers": [(b"content-type", content_type)]})
    out = b""
    for i, piece in enumerate(pieces):
        out += tap.body(piece, more_body=i < len(pieces) - 1)
    return out


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def test_json_chat_usage() -> None:
    body = orjson.dumps(
        {
            "choices": [{"message": {"content": "hi"}}],
            "usage": {
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "prompt_tokens_details": {"cached_tokens": 4},
                "completion_tokens_details": {"reasoning_tokens": 2},
            },
        }
    )
    tap = UsageTap("chat")
    out = feed(tap, split_every(body, 7), b"application/json")
    assert out == body
    assert tap.usage == Usage(10, 5, cached_tokens=4, reasoning_tokens=2)


def test_json_without_usage_keeps_text_for_counting() -> None:
    body = orjson.dumps({"choices": [{"message": {"content": "hi there"}}]})
    tap = UsageTap("chat")
    feed(tap, [body], b"application/json")
    assert tap.usage is None
    assert tap.texts == ["hi there"]


@pytest.mark.parametrize("size", [1, 3, 17, 1000])
def test_stream_passes_bytes_unchanged_and_finds_usage(size: int) -> None:
    stream = b"".join(STREAM) + FINAL + DONE
    tap = UsageTap("chat")
    out = feed(tap, split_every(stream, size))
    assert out == stream
    assert tap.usage == Usage(9, 2)


@pytest.mark.parametrize("size", [1, 5, 64, 4096])
def test_stream_strip_removes_only_what_the_guard_asked_for(size: int) -> None:
    stream = b"".join(STREAM) + FINAL + DONE
    # What the client would have received had it not been asked for usage.
    expected = chunk("Hello") + chunk(" world") + DONE
    tap = UsageTap("chat", strip_usage=True)
    out = feed(tap, split_every(stream, size))
    assert out == expected
    assert tap.usage == Usage(9, 2)


def test_stream_without_usage_collects_text() -> None:
    stream = chunk("Hello") + chunk(" world") + DONE
    tap = UsageTap("chat")
    feed(tap, split_every(stream, 4))
    assert tap.usage is None
    assert "".join(tap.texts) == "Hello world"


def test_crlf_and_multiple_events_per_chunk() -> None:
    stream = (chunk("a") + FINAL).replace(b"\n\n", b"\r\n\r\n")
    tap = UsageTap("chat")
    assert feed(tap, [stream]) == stream
    assert tap.usage == Usage(9, 2)


def test_anthropic_stream_usage_from_start_and_delta() -> None:
    events = [
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":25,'
        b'"output_tokens":1,"cache_read_input_tokens":5}}}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"type":"text_delta",'
        b'"text":"Hi"}}\n\n',
        b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":15}}\n\n',
    ]
    tap = UsageTap("anthropic")
    feed(tap, events)
    assert tap.usage == Usage(input_tokens=30, output_tokens=15, cached_tokens=5)


def test_responses_stream_usage_from_completed_event() -> None:
    events = [
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":"Hi"}\n\n',
        b'event: response.completed\ndata: {"type":"response.completed","response":{"usage":'
        b'{"input_tokens":12,"output_tokens":3,"input_tokens_details":{"cached_tokens":0},'
        b'"output_tokens_details":{"reasoning_tokens":1}}}}\n\n',
    ]
    tap = UsageTap("responses")
    feed(tap, events)
    assert tap.usage == Usage(12, 3, reasoning_tokens=1)


def test_usage_from_json_reports_none_only_where_there_is_none() -> None:
    assert usage_from_json("chat", []) is None
    assert usage_from_json("chat", {"choices": []}) is None
    assert usage_from_json("embedding", {"usage": {"prompt_tokens": 8, "total_tokens": 8}}) == Usage(8, 0)


@pytest.mark.parametrize(
    ("usage", "reason"),
    [
        ("lots", "malformed"),
        (None, "malformed"),
        ({}, "malformed"),
        ([], "malformed"),
        ({"total_tokens": 11}, "malformed"),
        ({"prompt_tokens": 9}, "malformed"),
        ({"prompt_tokens": -5, "completion_tokens": 2}, "malformed"),
        ({"prompt_tokens": 9, "completion_tokens": True}, "malformed"),
        ({"prompt_tokens": 9.0, "completion_tokens": 2}, "malformed"),
        ({"prompt_tokens": "9", "completion_tokens": 2}, "malformed"),
        ({"prompt_tokens": 9, "completion_tokens": None}, "malformed"),
        ({"prompt_tokens": 9, "completion_tokens": 2, "prompt_tokens_details": "x"}, "malformed"),
        ({"prompt_tokens": 9, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 1.5}}, "malformed"),
        ({"prompt_tokens": 10**30, "completion_tokens": 2}, "absurd"),
        ({"prompt_tokens": 9, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 10}}, "absurd"),
        ({"prompt_tokens": 9, "completion_tokens": 2, "completion_tokens_details": {"reasoning_tokens": 3}}, "absurd"),
        ({"input_tokens": 9}, "malformed"),
    ],
)
def test_usage_present_but_untrustworthy_is_unreadable(usage: object, reason: str) -> None:
    with pytest.raises(UnreadableUsage) as caught:
        usage_from_json("chat", {"usage": usage})
    assert caught.value.reason == reason


class _Count(int):
    """An int by another type: the reading of plain counts must not depend on it."""


_ODD = st.one_of(st.just(-1), st.just(10**9 + 1), st.none(), st.just(True), st.just(1.0), st.just("5"))
# Mostly counts a response would send; now and then one that is not.
_COUNT = st.one_of(st.integers(0, 12), st.integers(0, 12), st.just(10**9), _ODD)
_DETAILS = st.one_of(
    st.none(),
    st.just([]),
    st.fixed_dictionaries({}, optional={"cached_tokens": _COUNT, "reasoning_tokens": _COUNT}),
    st.fixed_dictionaries({"cached_tokens": st.integers(0, 12), "reasoning_tokens": st.integers(0, 12)}),
)
_CHAT_USAGE = st.fixed_dictionaries(
    {"prompt_tokens": _COUNT, "completion_tokens": _COUNT},
    optional={
        "prompt_tokens_details": _DETAILS,
        "completion_tokens_details": _DETAILS,
        "cache_creation_input_tokens": _COUNT,
        "service_tier": st.sampled_from(["default", "flex", None, 3]),
    },
)


def _reading(kind: str, obj: object) -> object:
    try:
        return usage_from_json(kind, obj)
    except UnreadableUsage as exc:
        return exc.reason


def _as_counts(value: object) -> object:
    if isinstance(value, dict):
        return {k: _as_counts(v) for k, v in value.items()}
    return _Count(value) if type(value) is int else value


@settings(max_examples=400, deadline=None)
@given(_CHAT_USAGE, st.sampled_from(["chat", "completion", "embedding"]), st.sampled_from([None, "priority"]))
def test_plain_chat_counts_read_as_any_counts_do(usage: dict[str, object], kind: str, outer_tier: str | None) -> None:
    """Plain ints take a shorter way through ``usage_from_json`` than other
    integers do: both ways read every usage the same (the same ``Usage``, or
    the same reason it is unreadable)."""
    body = {"usage": usage, "service_tier": outer_tier}
    assert _reading(kind, body) == _reading(kind, {"usage": _as_counts(usage), "service_tier": outer_tier})


@settings(max_examples=60, deadline=None)
@given(
    words=st.lists(st.text(min_size=0, max_size=8), min_size=0, max_size=12),
    cuts=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=20),
    strip=st.booleans(),
)
def test_any_chunking_gives_the_same_result(words: list[str], cuts: list[int], strip: bool) -> None:
    stream = b"".join(chunk(w, usage=None) for w in words) + FINAL + DONE
    pieces, at = [], 0
    for cut in cuts * (len(stream) // max(sum(cuts), 1) + 1):
        if at >= len(stream):
            break
        pieces.append(stream[at : at + cut])
        at += cut
    if at < len(stream):
        pieces.append(stream[at:])
    whole = UsageTap("chat", strip_usage=strip)
    parts = UsageTap("chat", strip_usage=strip)
    assert feed(parts, pieces) == feed(whole, [stream])
    assert parts.usage == whole.usage == Usage(9, 2)


# -- Finding members as the bytes pass, and cutting one out -------------------

from credit_guard._members import MemberCutter, MemberScan, without_member  # noqa: E402

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["usage", "a", "b", "us"]), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    members=st.dictionaries(st.sampled_from(["usage", "choices", "id", "usage2", 'u"sage']), _JSON, max_size=4),
    cuts=st.lists(st.integers(min_value=1, max_value=9), min_size=1, max_size=8),
    spaced=st.booleans(),
)
def test_member_scan_and_cut_agree_with_a_parser(members: dict[str, object], cuts: list[int], spaced: bool) -> None:
    import json

    text = json.dumps(members, separators=(", ", ": ") if spaced else (",", ":")).encode()
    scan = MemberScan([("usage",)])
    at = 0
    for cut in cuts * (len(text) // sum(cuts) + 1):
        scan.feed(text[at : at + cut])
        at += cut
    scan.feed(text[at:])
    assert scan.complete
    cutter = MemberCutter("usage")
    at, streamed = 0, b""
    for cut in cuts * (len(text) // sum(cuts) + 1):
        streamed += cutter.feed(text[at : at + cut])
        at += cut
    streamed += cutter.feed(text[at:]) + cutter.finish()
    # Cut as the bytes pass, or cut from the whole text: the same bytes.
    assert streamed == (without_member(text, "usage") or text)
    if "usage" in members:
        assert [orjson.loads(v) for v in scan.found[("usage",)]] == [members["usage"]]
        rest = without_member(text, "usage")
        assert rest is not None
        others = {k: v for k, v in members.items() if k != "usage"}
        # Every other byte as it was: what the upstream would have written without it.
        assert rest == json.dumps(others, separators=(", ", ": ") if spaced else (",", ":")).encode()
    else:
        assert ("usage",) not in scan.found
        assert without_member(text, "usage") is None


def test_a_large_json_body_keeps_only_its_usage() -> None:
    body = (
        b'{"choices":[{"message":{"content":"'
        + b'x\\"{[' * 3_000_000
        + b'"}}],"usage":'
        + orjson.dumps({"prompt_tokens": 3, "completion_tokens": 4})
        + b"}"
    )
    tap = UsageTap("chat", json_limit=1024)
    out = feed(tap, split_every(body, 65536), b"application/json")
    assert out == body
    assert tap.usage == Usage(3, 4)
    assert tap.unreadable is None


def test_a_large_json_body_without_usage_is_unreadable() -> None:
    body = orjson.dumps({"choices": [{"message": {"content": "word " * 10_000}}]})
    tap = UsageTap("chat", json_limit=1024)
    feed(tap, split_every(body, 999), b"application/json")
    assert tap.usage is None
    assert tap.unreadable == "too_large"


@pytest.mark.parametrize("size", [1, 7, 4096])
def test_a_large_event_is_scanned_for_its_usage(size: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from credit_guard import usage as usage_module

    monkeypatch.setattr(usage_module, "_MAX_EVENT", 64)
    events = [
        b"event: message_start\ndata: "
        + orjson.dumps({"type": "message_start", "message": {"usage": {"input_tokens": 25, "output_tokens": 1}}})
        + b"\n\n",
        b"data: " + orjson.dumps({"type": "content_block_delta", "delta": {"text": "y" * 500}}) + b"\n\n",
        b"data:"
        + orjson.dumps({"type": "message_delta", "pad": "z" * 300, "usage": {"output_tokens": 15}})
        + b"\r\n\r\n",
    ]
    stream = b"".join(events)
    tap = UsageTap("anthropic")
    assert feed(tap, split_every(stream, size)) == stream
    assert tap.usage == Usage(input_tokens=25, output_tokens=15)
    assert tap.unreadable is None


@pytest.mark.parametrize("size", [1, 5, 64, 4096])
@pytest.mark.parametrize(
    ("asked", "unasked"),
    [
        (
            b'{"id":"c1","choices":[{"index":0,"delta":{"content":"PAD"},"finish_reason":"stop"}],"usage":USAGE}',
            b'{"id":"c1","choices":[{"index":0,"delta":{"content":"PAD"},"finish_reason":"stop"}]}',
        ),
        (
            b'{"id": "c1", "usage": USAGE, "choices": [{"index": 0, "delta": {"content": "PAD"}}]}',
            b'{"id": "c1", "choices": [{"index": 0, "delta": {"content": "PAD"}}]}',
        ),
        (
            b'{ "usage" : USAGE , "choices": [{"index": 0, "delta": {"content": "PAD"}}]}',
            b'{ "choices": [{"index": 0, "delta": {"content": "PAD"}}]}',
        ),
    ],
    ids=["after-choices", "before-choices", "first"],
)
def test_a_large_event_has_its_usage_cut_as_it_passes(
    asked: bytes, unasked: bytes, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from credit_guard import usage as usage_module

    monkeypatch.setattr(usage_module, "_MAX_EVENT", 64)
    pad = b"word " * 200
    usage = orjson.dumps(USAGE)
    small = chunk("Hi", usage=None)
    stream = small + b"data: " + asked.replace(b"PAD", pad).replace(b"USAGE", usage) + b"\n\n" + DONE
    tap = UsageTap("chat", strip_usage=True)
    out = feed(tap, split_every(stream, size))
    assert out == chunk("Hi") + b"data: " + unasked.replace(b"PAD", pad) + b"\n\n" + DONE
    assert tap.usage == Usage(9, 2)
    assert tap.unreadable is None
