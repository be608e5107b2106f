"""Reading the actual usage from a response as it passes through.

``UsageTap`` watches the app's response messages.  A JSON body is copied (up to
a limit) and parsed at its end; a ``text/event-stream`` is parsed event by event
as it passes, never buffered: only the bytes of an event not yet complete are
kept.  Every byte goes on to the client unchanged, except when the guard itself
asked the upstream for ``stream_options.include_usage`` (the client did not):
then the usage-only chunk and the ``"usage":null`` the upstream adds to every
other chunk are removed, so the client sees the stream it asked for.

Where the response reports no usage, the tap keeps the generated text it saw so
the guard can count the output itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["Usage", "UsageTap", "usage_from_json"]

# Output text kept for counting when the response reports no usage.
_MAX_TEXT = 16 * 1024 * 1024
# An SSE event larger than this is passed on but not parsed.
_MAX_EVENT = 4 * 1024 * 1024
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_USAGE_NULL = b',"usage":null}'


@dataclass(frozen=True, slots=True)
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


def _int(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return 0


def usage_from_json(kind: str, obj: object) -> Usage | None:
    """The usage of one JSON response body (or one stream event's payload)."""
    if not isinstance(obj, dict):
        return None
    usage = obj.get("usage")
    if kind == "responses" and isinstance(obj.get("response"), dict):
        usage = obj["response"].get("usage")
    if kind == "anthropic" and isinstance(obj.get("message"), dict):
        usage = obj["message"].get("usage")
    if not isinstance(usage, dict):
        return None
    tier = usage.get("service_tier", obj.get("service_tier"))
    if kind == "responses" and isinstance(obj.get("response"), dict):
        tier = obj["response"].get("service_tier", tier)
    tier = tier if isinstance(tier, str) else None
    if kind in ("responses", "anthropic") or "input_tokens" in usage:
        cached = usage.get("input_tokens_details") or {}
        out_details = usage.get("output_tokens_details") or {}
        input_tokens = _int(usage.get("input_tokens"))
        cache_read = _int(usage.get("cache_read_input_tokens"))
        cache_write = _int(usage.get("cache_creation_input_tokens"))
        split = usage.get("cache_creation")
        split = split if isinstance(split, dict) else {}
        write_5m = _int(split.get("ephemeral_5m_input_tokens"))
        write_1h = _int(split.get("ephemeral_1h_input_tokens"))
        # A split larger than the total is believed over the total.
        cache_write = max(cache_write, write_5m + write_1h)
        if kind == "anthropic":
            # Anthropic reports cache reads and writes beside input_tokens.
            return Usage(
                input_tokens=input_tokens + cache_read + cache_write,
                output_tokens=_int(usage.get("output_tokens")),
                cached_tokens=cache_read,
                cache_write_tokens=cache_write,
                cache_write_5m_tokens=write_5m,
                cache_write_1h_tokens=write_1h,
                cache_reported="cache_creation_input_tokens" in usage or bool(split),
                service_tier=tier,
            )
        return Usage(
            input_tokens=input_tokens,
            output_tokens=_int(usage.get("output_tokens")),
            cached_tokens=_int(cached.get("cached_tokens")) if isinstance(cached, dict) else 0,
            reasoning_tokens=_int(out_details.get("reasoning_tokens")) if isinstance(out_details, dict) else 0,
            service_tier=tier,
        )
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    prompt = _int(usage.get("prompt_tokens"))
    cached = _int(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0
    # Gateways in front of Anthropic report its cache writes here, within
    # prompt_tokens; writes that cannot fit in it were reported beside it.
    writes = _int(usage.get("cache_creation_input_tokens"))
    if writes > prompt - min(cached, prompt):
        prompt += writes
    return Usage(
        input_tokens=prompt,
        output_tokens=_int(usage.get("completion_tokens")),
        cache_write_tokens=writes,
        cache_reported="cache_creation_input_tokens" in usage,
        service_tier=tier,
        cached_tokens=cached,
        reasoning_tokens=(
            _int(completion_details.get("reasoning_tokens")) if isinstance(completion_details, dict) else 0
        ),
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


class UsageTap:
    """Observes one response.  Call ``start`` with the ``http.response.start``
    message, ``body`` with each body chunk (it returns the bytes to send on),
    then read ``usage`` / ``texts`` / ``status``.

    ``strip_usage``: the guard added ``include_usage`` to a chat stream the client
    asked without it; remove what that added.  ``json_limit``: the most bytes of a
    JSON body copied for parsing (past it, usage is unknown).
    """

    def __init__(self, kind: str, *, strip_usage: bool = False, json_limit: int = 8 * 1024 * 1024) -> None:
        self.kind = kind
        self.status = 0
        self.usage: Usage | None = None
        self.texts: list[str] = []
        self.text_bytes = 0
        self.events = 0
        self.finished = False
        self._strip = strip_usage
        self._json_limit = json_limit
        self._mode = "other"
        self._copy: bytearray | None = None
        self._pending = bytearray()
        self._skipping = False
        # Anthropic streams report input in message_start, output in message_delta.
        self._anthropic_input: Usage | None = None

    @property
    def streaming(self) -> bool:
        return self._mode == "sse"

    def start(self, message: dict[str, Any]) -> dict[str, Any]:
        self.status = int(message.get("status", 200))
        content_type = b""
        for key, value in message.get("headers", ()):
            if key.lower() == b"content-type":
                content_type = value.lower()
        if content_type.startswith(b"text/event-stream"):
            self._mode = "sse"
            if self._strip:
                message = dict(message)
                message["headers"] = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"content-length"]
        elif b"json" in content_type or not content_type:
            self._mode = "json"
            self._copy = bytearray()
        return message

    def body(self, chunk: bytes, more_body: bool) -> bytes:
        if self._mode == "json":
            if self._copy is not None:
                if len(self._copy) + len(chunk) > self._json_limit:
                    self._copy = None
                else:
                    self._copy += chunk
            if not more_body:
                self._finish_json()
            return chunk
        if self._mode == "sse":
            out = self._sse(chunk, final=not more_body)
            if not more_body:
                self.finished = True
            return out
        if not more_body:
            self.finished = True
        return chunk

    # -- JSON ---------------------------------------------------------------

    def _finish_json(self) -> None:
        self.finished = True
        if not self._copy:
            return
        try:
            obj = orjson.loads(self._copy)
        except orjson.JSONDecodeError:
            return
        finally:
            self._copy = None
        self.usage = usage_from_json(self.kind, obj)
        if self.usage is None:
            self._keep_texts(obj)

    # -- SSE ----------------------------------------------------------------

    def _sse(self, chunk: bytes, *, final: bool) -> bytes:
        if self._skipping:
            # Inside an event too large to parse: pass bytes until it ends.
            match = _EVENT_END.search(chunk)
            if match is None:
                return chunk
            self._skipping = False
            head, chunk = chunk[: match.end()], chunk[match.end() :]
            return head + self._sse(chunk, final=final)
        self._pending += chunk
        out = bytearray()
        start = 0
        for match in _EVENT_END.finditer(self._pending):
            event = bytes(self._pending[start : match.end()])
            start = match.end()
            out += self._event(event)
        rest = self._pending[start:]
        if final and rest:
            out += self._event(bytes(rest))
            rest = bytearray()
        if len(rest) > _MAX_EVENT:
            self._skipping = True
            out += rest
            rest = bytearray()
        self._pending = rest
        if self._strip:
            return bytes(out)
        # Not rewriting: the client gets the chunk as it came.
        return chunk

    def _event(self, event: bytes) -> bytes:
        self.events += 1
        data_lines = [line[5:].lstrip(b" ") if line.startswith(b"data:") else None for line in event.splitlines()]
        payload = b"\n".join(line for line in data_lines if line is not None)
        if not payload or payload == b"[DONE]":
            return event
        if b'"usage"' not in payload and b'"text"' not in payload and b'"content"' not in payload:
            if not self._wants_text(payload):
                return event
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return event
        usage = self._stream_usage(obj)
        if usage is not None:
            self.usage = usage
            if self._strip and self.kind == "chat" and not obj.get("choices"):
                return b""  # the usage-only chunk the client did not ask for
        else:
            self._keep_texts(obj)
        if self._strip and _USAGE_NULL in event:
            return event.replace(_USAGE_NULL, b"}", 1)
        return event

    def _wants_text(self, payload: bytes) -> bool:
        return b'"delta"' in payload or b'"arguments"' in payload or b'"partial_json"' in payload

    def _stream_usage(self, obj: object) -> Usage | None:
        if not isinstance(obj, dict):
            return None
        if self.kind == "anthropic":
            kind = obj.get("type")
            if kind == "message_start":
                self._anthropic_input = usage_from_json("anthropic", obj)
                return None
            if kind == "message_delta" and isinstance(obj.get("usage"), dict):
                out = _int(obj["usage"].get("output_tokens"))
                base = self._anthropic_input or Usage(0, 0)
                return Usage(
                    input_tokens=base.input_tokens,
                    output_tokens=out,
                    cached_tokens=base.cached_tokens,
                    cache_write_tokens=base.cache_write_tokens,
                    cache_write_5m_tokens=base.cache_write_5m_tokens,
                    cache_write_1h_tokens=base.cache_write_1h_tokens,
                    cache_reported=base.cache_reported,
                    service_tier=base.service_tier,
                )
            return None
        if self.kind == "responses":
            if obj.get("type") in ("response.completed", "response.incomplete", "response.failed"):
                return usage_from_json("responses", obj)
            return None
        return usage_from_json(self.kind, obj)

    def _keep_texts(self, obj: object) -> None:
        if self.text_bytes > _MAX_TEXT:
            return
        found: list[str] = []
        _texts_from_json(self.kind, obj, found)
        for text in found:
            self.text_bytes += len(text)
        self.texts.extend(found)
