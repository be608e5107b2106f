"""Headers found by name in any case (``_headers``), and the tap that reads a
response's headers through them."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from credit_guard._headers import last_value, lowered_names, needle
from credit_guard.usage import UsageTap

WANTED = [b"content-type", b"content-encoding", b"x-request-id"]
# Names built to collide with the wanted ones: other cases, newlines that could
# make a false line in the joined text, and the wanted names inside longer ones.
_PIECES = [b"content-type", b"Content-Type", b"CONTENT-ENCODING", b"x-request-id", b"\n", b"x", b"-", b"a\nb"]
NAMES = st.lists(st.sampled_from(_PIECES), min_size=1, max_size=4).map(b"".join)
HEADERS = st.lists(st.tuples(NAMES, st.binary(max_size=4)), max_size=12)


def by_loop(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    found = None
    for key, value in headers:
        if key.lower() == name:
            found = value
    return found


@settings(max_examples=400, deadline=None)
@given(HEADERS)
def test_the_last_header_of_a_name_is_found_as_a_loop_finds_it(headers: list[tuple[bytes, bytes]]) -> None:
    names = lowered_names(headers)
    assert names is not None
    for name in WANTED:
        assert last_value(headers, names, needle(name)) == by_loop(headers, name), (headers, name)


def test_a_name_holding_a_newline_makes_no_false_header() -> None:
    # Joined, these read as lines "x", "content-type", "content-type": the
    # first "content-type" line is part of the first name, not a header.
    headers = [(b"x\ncontent-type", b"text/event-stream"), (b"Content-Type", b"application/json")]
    assert last_value(headers, lowered_names(headers), needle(b"content-type")) == b"application/json"
    # The last line is false and the only real one comes first.
    headers = [(b"content-type", b"application/json"), (b"a\ncontent-type", b"text/event-stream")]
    assert last_value(headers, lowered_names(headers), needle(b"content-type")) == b"application/json"
    # A false line alone finds nothing.
    headers = [(b"a\nx-request-id\nb", b"req_fake")]
    assert last_value(headers, lowered_names(headers), needle(b"x-request-id")) is None


def test_names_that_are_not_bytes_are_looked_through_one_by_one() -> None:
    assert lowered_names([("content-type", b"application/json")]) is None
    headers = [(b"Content-Type", b"text/plain")]
    assert last_value(headers, None, needle(b"content-type")) == b"text/plain"
    assert last_value([], lowered_names([]), needle(b"content-type")) is None


def test_the_tap_reads_the_real_content_type_beside_a_false_line() -> None:
    """An app's header whose name holds a newline (no valid header's does) does
    not make the tap read a JSON body as a stream: the usage is read."""
    tap = UsageTap("chat")
    tap.start(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"x\ncontent-type", b"text/event-stream"), (b"CONTENT-TYPE", b"application/json")],
        }
    )
    body = orjson.dumps({"usage": {"prompt_tokens": 7, "completion_tokens": 3}})
    assert tap.body(body, False) == body
    assert tap.usage is not None and (tap.usage.input_tokens, tap.usage.output_tokens) == (7, 3)
    assert tap.unreadable is None


def test_the_tap_reads_headers_sent_as_a_generator() -> None:
    tap = UsageTap("chat", strip_usage=True)
    headers = ((k, v) for k, v in [(b"Content-Type", b"text/event-stream"), (b"Content-Length", b"99")])
    message = tap.start({"type": "http.response.start", "status": 200, "headers": headers})
    assert tap.streaming
    # The stream is rewritten (usage cut out), so its length is dropped.
    assert [k for k, _ in message["headers"]] == [b"Content-Type"]
