"""Reading the actual usage from a response as it passes through.

``UsageTap`` watches the app's response messages, whatever their size and
``Content-Encoding`` (gzip and deflate are undone in bounded pieces; any other
coding cannot be read).  A JSON body is copied up to a limit and parsed at its
end; past the limit only its top-level ``usage`` member is kept, found as the
bytes pass (``_members.MemberScan``).  A ``text/event-stream`` is parsed event by
event as it passes, never buffered: an event is kept until it is complete, and
one larger than ``_MAX_EVENT`` is scanned for its usage as it passes instead
(and, where the usage must go, has it cut out as it passes: ``MemberCutter``).

Every byte goes on to the client unchanged, except when the guard itself asked
the upstream for ``stream_options.include_usage`` (the client did not): then
the ``usage`` member is cut out of every chunk that carries one (``null`` or
not, before or after ``choices``, spaced or not) and a chunk that carried
nothing else is dropped, so the client sees the stream it asked for.

Where the response reports no usage, the tap keeps the generated text it saw so
the guard can count the output itself.  Where it cannot tell, ``unreadable``
says why, and the guard charges the hold: usage that is present but not valid
(missing counts, floats, strings, negatives, totals only, ``null``, absurd
values), a body it could not parse or read to the end, a content type or
coding it cannot read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from ._decoding import Decoder, DecodingFailed, UnsupportedEncoding
from ._headers import last_value, lowered_names, needle
from ._members import MemberCutter, MemberScan, without_member

__all__ = ["Usage", "UsageTap", "UnreadableUsage", "usage_from_json"]

# Output text kept for counting when the response reports no usage.
_MAX_TEXT = 16 * 1024 * 1024
# An SSE event up to this size is parsed whole; a larger one is scanned.
_MAX_EVENT = 4 * 1024 * 1024
# No request is billed this many tokens of one kind: a larger count is garbage.
_MAX_TOKENS = 10**9
# Decoded bytes read beyond this many times the encoded ones (and this floor)
# are a decompression bomb: reading stops, and the hold is charged.
_BOMB_RATIO = 200
_BOMB_FLOOR = 16 * 1024 * 1024
# A JSON body at least this large is parsed in a worker thread.
_COSTLY_BYTES = 1024 * 1024
# The stream's pending event before ``start`` makes one for an SSE response:
# only its length is read in other modes, never added to.
_NO_EVENT = bytearray()
_CONTENT_TYPE = needle(b"content-type")
_CONTENT_ENCODING = needle(b"content-encoding")
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
# Members of a stream event that can carry usage, and the event's type.
_EVENT_PATHS = (
    ("type",),
    ("usage",),
    ("service_tier",),
    ("response", "usage"),
    ("response", "service_tier"),
    ("message", "usage"),
)


class UnreadableUsage(ValueError):
    """A response carries usage the guard cannot trust; ``reason`` says how:
    ``malformed`` (missing counts, wrong types, ``null``) or ``absurd``
    (beyond any request, or parts larger than their whole)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Not frozen: a frozen dataclass's __init__ costs several times more, and one is
# made on every priced request.  A value all the same: nothing changes one.
@dataclass(slots=True, unsafe_hash=True)
class Usage:
    """Tokens a response reports (or that were counted).  ``cached_tokens`` is the
    part of ``input_tokens`` read from a prompt cache; ``reasoning_tokens`` the
    part of ``output_tokens`` spent on reasoning; ``cache_write_tokens`` input
    written to a cache (Anthropic), of which ``cache_write_5m_tokens`` and
    ``cache_write_1h_tokens`` as the response splits them by TTL (both 0
    where it does not).  ``cache_reported`` is True where the response said
    how much it wrote to the cache (even none); ``service_tier`` the tier the
    response says it was served at."""

    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_reported: bool = False
    service_tier: str | None = None


def _count(usage: dict[str, Any], key: str, *, required: bool = False) -> int:
    """One token count: a non-negative integer (JSON ``1.0`` is not one); an
    optional count may be absent or ``null``."""
    value = usage.get(key)
    if value is None:
        if required:
            raise UnreadableUsage("malformed")
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise UnreadableUsage("malformed")
    if value > _MAX_TOKENS:
        raise UnreadableUsage("absurd")
    return value


def _details(usage: dict[str, Any], key: str) -> dict[str, Any]:
    value = usage.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UnreadableUsage("malformed")
    return value


def _checked(usage: Usage) -> Usage:
    if usage.cached_tokens > usage.input_tokens or usage.reasoning_tokens > usage.output_tokens:
        raise UnreadableUsage("absurd")
    return usage


def usage_from_json(kind: str, obj: object) -> Usage | None:
    """The usage of one JSON response body (or one stream event's payload):
    None where it reports none (no ``usage`` member); ``UnreadableUsage`` where
    the member is there but cannot be trusted (``null``, ``{}``, totals only,
    non-integer or negative counts, more than ``_MAX_TOKENS``)."""
    if not isinstance(obj, dict):
        return None
    holder = obj
    if kind == "responses" and isinstance(obj.get("response"), dict):
        holder = obj["response"]
    if kind == "anthropic" and isinstance(obj.get("message"), dict):
        holder = obj["message"]
    if "usage" not in holder:
        return None
    usage = holder["usage"]
    if not isinstance(usage, dict):
        raise UnreadableUsage("malformed")
    # The innermost of the three that has the member (looked up only as far as needed).
    if "service_tier" in usage:
        tier = usage["service_tier"]
    elif "service_tier" in holder:
        tier = holder["service_tier"]
    else:
        tier = obj.get("service_tier")
    tier = tier if isinstance(tier, str) else None
    if kind == "anthropic":
        # Anthropic reports cache reads and writes beside input_tokens.
        read = _count(usage, "cache_read_input_tokens")
        write = _count(usage, "cache_creation_input_tokens")
        split = _details(usage, "cache_creation")
        write_5m = _count(split, "ephemeral_5m_input_tokens")
        write_1h = _count(split, "ephemeral_1h_input_tokens")
        # A split larger than the total is believed over the total.
        write = max(write, write_5m + write_1h)
        return Usage(
            input_tokens=_count(usage, "input_tokens", required=True) + read + write,
            output_tokens=_count(usage, "output_tokens", required=True),
            cached_tokens=read,
            cache_write_tokens=write,
            cache_write_5m_tokens=write_5m,
            cache_write_1h_tokens=write_1h,
            cache_reported="cache_creation_input_tokens" in usage or bool(split),
            service_tier=tier,
        )
    if kind == "responses" or "input_tokens" in usage:
        return _checked(
            Usage(
                input_tokens=_count(usage, "input_tokens", required=True),
                output_tokens=_count(usage, "output_tokens", required=True),
                cached_tokens=_count(_details(usage, "input_tokens_details"), "cached_tokens"),
                reasoning_tokens=_count(_details(usage, "output_tokens_details"), "reasoning_tokens"),
                service_tier=tier,
            )
        )
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    if (
        type(prompt) is int
        and type(completion) is int
        and 0 <= prompt <= _MAX_TOKENS
        and 0 <= completion <= _MAX_TOKENS
        and "cache_creation_input_tokens" not in usage
    ):
        # Most answers: both counts plain, no cache writes.  The same reading
        # as below, with fewer calls.
        details = usage.get("prompt_tokens_details")
        cached = 0 if details is None else _count(_details(usage, "prompt_tokens_details"), "cached_tokens")
        details = usage.get("completion_tokens_details")
        reasoning = 0 if details is None else _count(_details(usage, "completion_tokens_details"), "reasoning_tokens")
        # (Positional: a call with keywords costs twice as much.)
        return _checked(Usage(prompt, completion, cached, reasoning, 0, 0, 0, False, tier))
    prompt = _count(usage, "prompt_tokens", required=True)
    cached = _count(_details(usage, "prompt_tokens_details"), "cached_tokens")
    # Gateways in front of Anthropic report its cache writes here, within
    # prompt_tokens; writes that cannot fit in it were reported beside it.
    writes = _count(usage, "cache_creation_input_tokens")
    if writes > prompt - min(cached, prompt):
        prompt += writes
    return _checked(
        Usage(
            input_tokens=prompt,
            # An embedding reports no completion.
            output_tokens=_count(usage, "completion_tokens", required=kind != "embedding"),
            cached_tokens=cached,
            reasoning_tokens=_count(_details(usage, "completion_tokens_details"), "reasoning_tokens"),
            cache_write_tokens=writes,
            cache_reported="cache_creation_input_tokens" in usage,
            service_tier=tier,
        )
    )


def _texts_from_json(kind: str, obj: object, out: list[str]) -> None:
    """Generated text in a response body or stream event, for counting."""
    if not isinstance(obj, dict):
        return
    if kind in ("chat", "completion"):
        for choice in obj.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            if isinstance(choice.get("text"), str):
                out.append(choice["text"])
            for part in (choice.get("message"), choice.get("delta")):
                if not isinstance(part, dict):
                    continue
                for key in ("content", "refusal", "reasoning_content"):
                    if isinstance(part.get(key), str):
                        out.append(part[key])
                for call in part.get("tool_calls") or ():
                    function = call.get("function") if isinstance(call, dict) else None
                    if isinstance(function, dict):
                        for key in ("name", "arguments"):
                            if isinstance(function.get(key), str):
                                out.append(function[key])
                function_call = part.get("function_call")
                if isinstance(function_call, dict):
                    for key in ("name", "arguments"):
                        if isinstance(function_call.get(key), str):
                            out.append(function_call[key])
    elif kind == "responses":
        if isinstance(obj.get("delta"), str):
            out.append(obj["delta"])
        for item in obj.get("output") or ():
            for part in (item.get("content") or ()) if isinstance(item, dict) else ():
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    out.append(part["text"])
            if isinstance(item, dict) and isinstance(item.get("arguments"), str):
                out.append(item["arguments"])
    elif kind == "anthropic":
        delta = obj.get("delta")
        if isinstance(delta, dict):
            for key in ("text", "partial_json", "thinking"):
                if isinstance(delta.get(key), str):
                    out.append(delta[key])
        for block in obj.get("content") or ():
            if isinstance(block, dict):
                for key in ("text", "thinking"):
                    if isinstance(block.get(key), str):
                        out.append(block[key])
                if "input" in block:
                    out.append(orjson.dumps(block["input"]).decode())


class _LargeEvent:
    """An event too large to keep: its data lines go through a ``MemberScan``
    as they pass, and only what can carry usage is kept.  With ``cut``, that
    member is cut out of its (first) data line as it passes."""

    def __init__(self, cut: str | None = None) -> None:
        self.scan = MemberScan(_EVENT_PATHS)
        self._cutter = MemberCutter(cut) if cut else None
        self._head = bytearray()  # the start of a line whose field is not known yet
        self._line: str | None = None  # "data" or "other" once known

    def feed(self, data: bytes) -> tuple[int, bytes]:
        """Take ``data``: the index just past the event's end (-1 when it goes
        on), and the bytes to pass on."""
        out = bytearray()
        pos, end = 0, len(data)
        while pos < end:
            newline = data.find(b"\n", pos)
            stop = end if newline < 0 else newline
            segment = data[pos:stop]
            if self._line is None:
                take = segment[: 6 - len(self._head)]
                self._head += take
                segment = segment[len(take) :]
                if len(self._head) >= 6 or newline >= 0:
                    head = bytes(self._head)
                    self._head.clear()
                    if head.startswith(b"data:"):
                        self._line = "data"
                        prefix = 6 if head[5:6] == b" " else 5
                        out += head[:prefix]
                        out += self._data(head[prefix:])
                    elif newline >= 0 and head in (b"", b"\r"):
                        out += head + b"\n"
                        return newline + 1, bytes(out)  # a blank line ends the event
                    else:
                        self._line = "other"
                        out += head
            if self._line == "data":
                out += self._data(segment)
            elif self._line == "other":
                out += segment
            if newline < 0:
                return -1, bytes(out)
            if self._line == "data":
                self.scan.feed(b"\n")
                if self._cutter is not None:
                    # Only the first data line is cut: one JSON object per line.
                    out += self._cutter.finish()
                    self._cutter = None
            out += b"\n"
            self._line = None
            pos = newline + 1
        return -1, bytes(out)

    def _data(self, content: bytes) -> bytes:
        self.scan.feed(content)
        return self._cutter.feed(content) if self._cutter is not None else content

    def rest(self) -> bytes:
        """What is still held when the stream ends inside the event."""
        held = self._cutter.finish() if self._cutter is not None else b""
        return held + bytes(self._head)

    def payload(self) -> dict[str, Any]:
        """What the event said of its type and usage, as a JSON object would."""
        obj: dict[str, Any] = {}
        if self.scan.too_long or any(len(values) > 1 for values in self.scan.found.values()):
            raise UnreadableUsage("malformed")
        for path, (raw,) in self.scan.found.items():
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise UnreadableUsage("malformed") from None
            holder = obj
            for key in path[:-1]:
                holder = holder.setdefault(key, {})
            holder[path[-1]] = value
        return obj


class UsageTap:
    """Observes one response.  Call ``start`` with the ``http.response.start``
    message (it returns the message to send on), ``body`` with each body chunk
    (it returns the bytes to send on), then read ``usage`` / ``texts`` /
    ``unreadable`` / ``status``.  Never raises on what the response holds.

    ``strip_usage``: the guard added ``include_usage`` to a chat stream the client
    asked without it; remove what that added.  ``json_limit``: the most bytes of a
    JSON body copied for parsing (past it, only its usage is looked for).
    """

    __slots__ = (
        "kind",
        "status",
        "usage",
        "unreadable",
        "_texts",
        "text_bytes",
        "events",
        "finished",
        "_strip",
        "_json_limit",
        "_mode",
        "_opaque",
        "_decoder",
        "_decoded_out",
        "_read",
        "_copy",
        "_scan",
        "_text",
        "_pending",
        "_large",
        "_unread_text",
        "_usage_promised",
        "_anthropic_input",
    )

    def __init__(self, kind: str, *, strip_usage: bool = False, json_limit: int = 8 * 1024 * 1024) -> None:
        self.kind = kind
        self.status = 0
        self.usage: Usage | None = None
        #: Why the response's usage cannot be known (None: it can).
        self.unreadable: str | None = None
        # Generated text seen where no usage was (made on the first: most answers have none).
        self._texts: list[str] | None = None
        self.text_bytes = 0
        self.events = 0
        self.finished = False
        self._strip = strip_usage
        self._json_limit = json_limit
        self._mode = "opaque"
        self._opaque = "content_type"
        self._decoder: Decoder | None = None
        self._decoded_out = False  # the client gets the decoded bytes
        self._read = 0
        self._copy: bytearray | None = None
        self._scan: MemberScan | None = None
        # Text of a text/* body, and an event not yet ended in a stream: made
        # by ``start`` for the mode that uses them (most responses are JSON).
        self._text: bytearray | bytes = b""
        self._pending = _NO_EVENT
        self._large: _LargeEvent | None = None
        self._unread_text = False  # text went by uncounted (a large event, past _MAX_TEXT)
        self._usage_promised = False  # chunks carried "usage": null, so usage was to come
        # Anthropic streams report input in message_start, output in message_delta.
        self._anthropic_input: Usage | None = None

    @property
    def texts(self) -> Sequence[str]:
        """The generated text seen, for counting where no usage was reported."""
        return self._texts or ()

    @property
    def streaming(self) -> bool:
        return self._mode == "sse"

    def costly(self, size: int, more_body: bool) -> bool:
        """Whether reading the next chunk (``size`` bytes) is work for a worker
        thread rather than the event loop: a large body scanned as it passes,
        a large JSON body parsed at its end, compressed bytes to undo."""
        if self._mode == "opaque":
            return False
        if self._scan is not None or self._large is not None or len(self._pending) + size > _MAX_EVENT:
            return True
        if self._copy is not None and (
            len(self._copy) + size > self._json_limit or (not more_body and len(self._copy) + size > _COSTLY_BYTES)
        ):
            return True
        decoder = self._decoder
        return decoder is not None and not decoder.identity and size > _COSTLY_BYTES // 32

    def _fail(self, reason: str) -> None:
        if self.unreadable is None:
            self.unreadable = reason

    def start(self, message: dict[str, Any], names: bytes | None = None) -> dict[str, Any]:
        """Read ``http.response.start``: the status, and how the body is to be
        read.  ``names`` is ``_headers.lowered_names`` of its headers, where
        the caller has it; the message returned is the one to send on."""
        self.status = int(message.get("status", 200))
        headers = message.get("headers", ())
        if names is None:
            if not isinstance(headers, (list, tuple)):
                # Read more than once: a list of its own.
                message = {**message, "headers": list(headers)}
                headers = message["headers"]
            names = lowered_names(headers)
        content_type = (last_value(headers, names, _CONTENT_TYPE) or b"").lower()
        encoding = last_value(headers, names, _CONTENT_ENCODING) or b""
        if content_type.startswith(b"text/event-stream"):
            self._mode = "sse"
            self._pending = bytearray()
        elif content_type.find(b"json") >= 0 or not content_type:
            self._mode = "json"
            self._copy = bytearray()
        elif content_type.startswith(b"text/"):
            self._mode = "text"
            self._text = bytearray()
        try:
            self._decoder = Decoder(encoding)
        except UnsupportedEncoding:
            self._mode, self._opaque = "opaque", "content_encoding"
        rewrite = self._strip and self._mode == "sse"
        if rewrite:
            drop = {b"content-length"}
            if self._decoder is not None and not self._decoder.identity:
                # The rewritten stream goes out decoded.
                drop.add(b"content-encoding")
                self._decoded_out = True
            message = dict(message)
            message["headers"] = [(k, v) for k, v in message.get("headers", ()) if k.lower() not in drop]
        return message

    def body(self, chunk: bytes, more_body: bool) -> bytes:
        if self._mode == "json" and not more_body and not self._copy and len(chunk) <= self._json_limit:
            decoder = self._decoder
            if decoder is not None and decoder.identity:
                # A whole JSON body in one message, as most apps send it: read
                # in place, without copying it.
                self._read += len(chunk)
                self._end(chunk)
                return chunk
        if self._mode == "opaque":
            if chunk:
                self._fail(self._opaque)
            self.finished = not more_body
            return chunk
        out = bytearray()
        try:
            assert self._decoder is not None
            for piece in self._decoder.feed(chunk):
                out += self._piece(piece)
            if not more_body:
                for piece in self._decoder.flush():
                    out += self._piece(piece)
        except DecodingFailed:
            self._fail("content_encoding")
            self._mode = "opaque"
        if not more_body:
            out += self._end()
        if self._strip and self._mode == "sse":
            return bytes(out)
        return chunk

    def _piece(self, piece: bytes) -> bytes:
        """Read one decoded piece; the bytes the client gets of it, where rewritten."""
        decoder = self._decoder
        self._read += len(piece)
        if decoder is not None and not decoder.identity and self._read > max(_BOMB_FLOOR, _BOMB_RATIO * decoder.fed):
            self._fail("decompression_ratio")
            if not self._decoded_out:
                self._mode = "opaque"
                return b""
            return piece  # still the client's stream; no longer read
        if self._mode == "json":
            self._json(piece)
        elif self._mode == "sse":
            return self._sse(piece)
        elif self._mode == "text":
            if len(self._text) + len(piece) > _MAX_TEXT:
                self._fail("too_large")
                self._mode = "opaque"
            else:
                self._text += piece
        return b""

    def _end(self, whole: bytes | None = None) -> bytes:
        self.finished = True
        out = b""
        if self._mode == "json":
            self._finish_json(whole)
        elif self._mode == "sse":
            out = self._finish_sse()
        elif self._mode == "text" and self._text:
            self._keep([self._text.decode("utf-8", "replace")])
        if self.usage is None and self._unread_text:
            # No usage, and text the guard could not count.
            self._fail("too_large")
        if self.usage is None and self._usage_promised:
            # The upstream honoured include_usage, then never sent the usage.
            self._fail("missing")
        return out

    # -- JSON ---------------------------------------------------------------

    def _json(self, piece: bytes) -> None:
        if self._copy is not None:
            if len(self._copy) + len(piece) <= self._json_limit:
                self._copy += piece
                return
            # Too large to keep: only the usage is looked for from here on.
            self._scan = MemberScan([("usage",), ("service_tier",)])
            self._scan.feed(bytes(self._copy))
            self._copy = None
        if self._scan is not None:
            self._scan.feed(piece)

    def _finish_json(self, whole: bytes | None = None) -> None:
        """Read the JSON body: ``whole`` where it came in one message, else
        the copy kept (or the scan) of its pieces."""
        if self._scan is not None:
            self._finish_scan(self._scan)
            return
        data = self._copy if whole is None else whole
        if not data or data.isspace():
            return  # an empty body: nothing was generated
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self._fail("unparsed_body")
            return
        finally:
            self._copy = None
        try:
            self.usage = usage_from_json(self.kind, obj)
        except UnreadableUsage as exc:
            self._fail(exc.reason)
            return
        if self.usage is None:
            found: list[str] = []
            _texts_from_json(self.kind, obj, found)
            self._keep(found)

    def _finish_scan(self, scan: MemberScan) -> None:
        values = scan.found.get(("usage",), [])
        if ("usage",) in scan.too_long or len(values) > 1:
            self._fail("malformed")
        elif not values:
            # No usage, and a body too large to have its text read.
            self._fail("too_large")
        else:
            found: dict[str, Any] = {"usage": values[0]}
            tiers = scan.found.get(("service_tier",), [])
            if len(tiers) == 1:
                found["service_tier"] = tiers[0]
            try:
                self.usage = usage_from_json(self.kind, {key: orjson.loads(raw) for key, raw in found.items()})
            except orjson.JSONDecodeError:
                self._fail("malformed")
            except UnreadableUsage as exc:
                self._fail(exc.reason)

    # -- SSE ----------------------------------------------------------------

    def _sse(self, piece: bytes) -> bytes:
        out = bytearray()
        if self._large is not None:
            end, passed = self._large.feed(piece)
            out += passed
            if end < 0:
                return bytes(out)
            self._end_large(self._large)
            self._large = None
            piece = piece[end:]
        # Only the new bytes (and a terminator begun just before them) are searched.
        search_from = max(0, len(self._pending) - 3)
        self._pending += piece
        start = 0
        for match in _EVENT_END.finditer(self._pending, search_from):
            out += self._event(bytes(self._pending[start : match.end()]))
            start = match.end()
        del self._pending[:start]
        if len(self._pending) > _MAX_EVENT:
            # Too large to keep: scanned (and cut) as it passes.
            large = _LargeEvent("usage" if self._strip and self.kind == "chat" else None)
            rest = bytes(self._pending)
            self._pending.clear()
            end, passed = large.feed(rest)
            out += passed
            if end < 0:
                self._large = large
            else:
                self._end_large(large)
                out += self._sse(rest[end:])
        return bytes(out)

    def _finish_sse(self) -> bytes:
        out = b""
        if self._large is not None:
            out = self._large.rest()
            self._end_large(self._large)
            self._large = None
        if self._pending:
            out += self._event(bytes(self._pending))
            self._pending.clear()
        return out

    def _end_large(self, large: _LargeEvent) -> None:
        self.events += 1
        self._unread_text = True
        try:
            usage = self._stream_usage(large.payload())
        except UnreadableUsage as exc:
            self._fail(exc.reason)
            return
        if usage is not None:
            self.usage = usage

    def _event(self, event: bytes) -> bytes:
        self.events += 1
        lines = event.splitlines()
        data = [line[5:] for line in lines if line.startswith(b"data:")]
        payload = b"\n".join(line[1:] if line.startswith(b" ") else line for line in data)
        if not payload or payload == b"[DONE]":
            return event
        if not (b'"usage"' in payload or b"\\u" in payload or self._has_text(payload)):
            return event
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            if payload.lstrip()[:1] in (b"{", b"["):
                self._fail("unparsed_event")
            return event
        try:
            usage = self._stream_usage(obj)
        except UnreadableUsage as exc:
            self._fail(exc.reason)
            usage = None
        if usage is not None:
            self.usage = usage
        found: list[str] = []
        _texts_from_json(self.kind, obj, found)
        self._keep(found)
        if self._strip and isinstance(obj, dict) and "usage" in obj:
            return self._without_usage(event, lines, payload, obj)
        return event

    def _has_text(self, payload: bytes) -> bool:
        return any(
            marker in payload
            for marker in (b'"text"', b'"content"', b'"delta"', b'"arguments"', b'"partial_json"', b'"refusal"')
        )

    def _without_usage(self, event: bytes, lines: list[bytes], payload: bytes, obj: dict[str, Any]) -> bytes:
        """The event as the upstream would have sent it unasked: no ``usage``
        member, and no event at all where the usage was all it carried."""
        if obj["usage"] is not None and not obj.get("choices"):
            return b""
        cut = without_member(payload, "usage")
        if cut is None:
            return event
        at = event.find(payload)
        if at >= 0 and event.count(b"data:") == 1:
            return event[:at] + cut + event[at + len(payload) :]
        newline = b"\r\n" if event.endswith(b"\r\n") else b"\r" if event.endswith(b"\r\r") else b"\n"
        others = [line + newline for line in lines if line and not line.startswith(b"data:")]
        data = [b"data: " + line + newline for line in cut.split(b"\n")]
        return b"".join(others + data) + newline

    def _stream_usage(self, obj: object) -> Usage | None:
        if not isinstance(obj, dict):
            return None
        if self.kind == "anthropic":
            kind = obj.get("type")
            if kind == "message_start":
                self._anthropic_input = usage_from_json("anthropic", obj)
                return None
            if kind == "message_delta" and "usage" in obj:
                return self._anthropic_total(obj["usage"])
            return None
        if self.kind == "responses":
            if obj.get("type") in ("response.completed", "response.incomplete", "response.failed"):
                return usage_from_json("responses", obj)
            return None
        if obj.get("usage") is None:
            # A chunk before the end: OpenAI sends "usage": null on each.
            self._usage_promised = self._usage_promised or "usage" in obj
            return None
        return usage_from_json(self.kind, obj)

    def _anthropic_total(self, usage: object) -> Usage:
        """message_delta's usage: the output so far, and the input where it
        repeats it (else message_start's)."""
        if not isinstance(usage, dict):
            raise UnreadableUsage("malformed")
        if usage.get("input_tokens") is not None:
            return usage_from_json("anthropic", {"usage": usage}) or Usage(0, 0)
        output = _count(usage, "output_tokens", required=True)
        base = self._anthropic_input
        if base is None:
            # Output without the input it was for: the input is unknown.
            raise UnreadableUsage("malformed")
        return replace(base, output_tokens=output)

    def _keep(self, found: list[str]) -> None:
        if self.text_bytes > _MAX_TEXT:
            self._unread_text = True
            return
        for text in found:
            self.text_bytes += len(text)
        if self._texts is None:
            self._texts = []
        self._texts.extend(found)
