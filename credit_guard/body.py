"""Reading a request body within a size limit, decoding it, and replaying it.

The limit is enforced twice: on ``Content-Length`` before anything is read, and
on the bytes that really arrive (the header can lie or be absent).  A
``Content-Encoding`` of gzip or deflate is decoded incrementally, never past the limit, so a decompression
bomb costs at most ``limit`` bytes of memory.  Any other encoding is refused:
a body is never priced as compressed bytes.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from .errors import InvalidRequest, RequestTooLarge, UnsupportedMediaType

__all__ = ["Body", "ClientDisconnected", "parse_json", "read_body", "replay"]

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]

# How many stacked encodings ("gzip, gzip") we undo before calling it abuse.
_MAX_ENCODINGS = 2


class ClientDisconnected(Exception):
    """The client went away before the whole body arrived."""


# Not frozen: a frozen dataclass's __init__ costs several times more, and one is
# made on every priced request.  A value all the same: nothing changes one.
@dataclass(slots=True, unsafe_hash=True)
class Body:
    """``chunks``: the bytes exactly as sent, in the pieces they arrived in
    (replayed to the app as such); ``decoded``: the bytes a Content-Encoding
    decoded to, None where the body had none.  ``size``: the decoded bytes.

    ``raw`` and ``data`` join the pieces on every read: a body too large to
    copy on the event loop is handed on as ``chunks``/``parts``."""

    chunks: tuple[bytes, ...]
    decoded: bytes | None
    size: int

    @property
    def raw(self) -> bytes:
        """The bytes exactly as sent, in one piece."""
        return _join(self.chunks)

    @property
    def data(self) -> bytes:
        """The decoded bytes (priced), in one piece."""
        return self.raw if self.decoded is None else self.decoded

    @property
    def parts(self) -> tuple[bytes, ...]:
        """The decoded bytes, in pieces."""
        return self.chunks if self.decoded is None else (self.decoded,)


def _join(chunks: tuple[bytes, ...]) -> bytes:
    """``chunks`` in one piece, without a copy where there is one piece."""
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _codings(values: list[bytes]) -> list[str]:
    """The content codings that ``Content-Encoding`` header ``values`` list, in order."""
    codings: list[str] = []
    for value in values:
        for part in value.decode("latin-1").split(","):
            coding = part.strip().lower()
            if coding and coding != "identity":
                codings.append(coding)
    return codings


class _Decoder:
    """Incremental decoding of stacked content codings, bounded by ``limit``."""

    def __init__(self, codings: list[str], limit: int) -> None:
        if len(codings) > _MAX_ENCODINGS:
            raise UnsupportedMediaType(
                f"Too many stacked Content-Encodings ({len(codings)}); at most {_MAX_ENCODINGS}.",
                param="content-encoding",
            )
        # Codings apply in the order listed, so they are undone in reverse.
        self._stages = [_stage(c) for c in reversed(codings)]
        self._limit = limit
        self._out = bytearray()

    def feed(self, chunk: bytes) -> None:
        for stage in self._stages:
            # Each stage may emit at most what is left of the limit, plus one
            # byte to tell "exactly the limit" from "over it".
            room = self._limit - len(self._out) + 1
            try:
                chunk = stage.decompress(chunk, room)
            except (zlib.error, ValueError, OSError) as exc:
                raise InvalidRequest(f"The body's Content-Encoding could not be decoded: {exc}", param="body") from None
            if stage.unconsumed_tail:
                # The stage stopped at the limit with input left: over it.
                self._too_large()
            if stage.unused_data:
                # Bytes after the end of the compressed stream (another gzip
                # member, or anything): an upstream may decode them too.
                raise InvalidRequest(
                    "The body has data after the end of its Content-Encoding stream; send one stream.", param="body"
                )
        self._out += chunk
        if len(self._out) > self._limit:
            self._too_large()

    def finish(self) -> bytes:
        for stage in self._stages:
            if not stage.eof:
                raise InvalidRequest("The body's Content-Encoding stream is truncated.", param="body")
        return bytes(self._out)

    def _too_large(self) -> None:
        raise RequestTooLarge(
            f"The decoded request body is larger than the limit of {self._limit} bytes.",
            param="body",
            limit=self._limit,
        )


class _ZlibStage:
    def __init__(self, wbits: int) -> None:
        self._d = zlib.decompressobj(wbits)

    def decompress(self, data: bytes, max_length: int) -> bytes:
        return self._d.decompress(self._d.unconsumed_tail + data, max_length)

    @property
    def unconsumed_tail(self) -> bytes:
        return self._d.unconsumed_tail

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data

    @property
    def eof(self) -> bool:
        return self._d.eof


def _stage(coding: str) -> _ZlibStage:
    if coding in ("gzip", "x-gzip"):
        return _ZlibStage(16 + zlib.MAX_WBITS)
    if coding == "deflate":
        return _AutoDeflate()
    raise UnsupportedMediaType(
        f"Content-Encoding {coding!r} is not supported; send the body uncompressed, gzip or deflate.",
        param="content-encoding",
    )


class _AutoDeflate(_ZlibStage):
    """deflate as zlib-wrapped (the standard) or raw, told apart by the first byte."""

    def __init__(self) -> None:
        self._d: Any = None  # chosen on the first byte

    def decompress(self, data: bytes, max_length: int) -> bytes:
        if self._d is None:
            if not data:
                return b""
            zlib_wrapped = (data[0] & 0x0F) == 8 and (data[0] >> 4) <= 7
            self._d = zlib.decompressobj(zlib.MAX_WBITS if zlib_wrapped else -zlib.MAX_WBITS)
        return super().decompress(data, max_length)

    @property
    def unconsumed_tail(self) -> bytes:
        return b"" if self._d is None else self._d.unconsumed_tail

    @property
    def unused_data(self) -> bytes:
        return b"" if self._d is None else self._d.unused_data

    @property
    def eof(self) -> bool:
        return self._d is not None and self._d.eof


async def read_body(scope: MutableMapping[str, Any], receive: Receive, limit: int) -> Body:
    """Read the whole body, at most ``limit`` bytes raw and decoded.

    Raises ``RequestTooLarge`` (before reading, on a ``Content-Length`` over the
    limit; or as soon as the bytes pass it), ``UnsupportedMediaType`` for an
    encoding we cannot decode, ``InvalidRequest`` for a body that does not
    decode, and ``ClientDisconnected`` when the client leaves first.
    """
    lengths: list[bytes] = []
    encodings: list[bytes] = []
    for key, value in scope.get("headers", ()):
        if key == b"content-length":
            lengths.append(value)
        elif key == b"content-encoding":
            encodings.append(value)
    if lengths:
        try:
            declared = set(map(int, lengths))
        except ValueError:
            raise InvalidRequest("Content-Length is not a number.", param="content-length") from None
        if len(declared) != 1 or min(declared) < 0:
            raise InvalidRequest("Content-Length is malformed.", param="content-length")
        if declared.pop() > limit:
            raise RequestTooLarge(
                f"The request body is larger than the limit of {limit} bytes.", param="body", limit=limit
            )
    codings = _codings(encodings) if encodings else None
    decoder = _Decoder(codings, limit) if codings else None
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        if message["type"] != "http.request":
            continue
        chunk = message.get("body", b"")
        if chunk:
            if type(chunk) is not bytes:
                chunk = bytes(chunk)  # kept, and replayed, as the bytes ASGI promises
            size += len(chunk)
            if size > limit:
                raise RequestTooLarge(
                    f"The request body is larger than the limit of {limit} bytes.", param="body", limit=limit
                )
            chunks.append(chunk)
            if decoder is not None:
                decoder.feed(chunk)
        if not message.get("more_body", False):
            break
    if decoder is not None:
        decoded = decoder.finish()
        return Body(tuple(chunks), decoded, len(decoded))
    return Body(tuple(chunks), None, size)


def replay(body: bytes | tuple[bytes, ...], receive: Receive) -> Receive:
    """A ``receive`` that gives the app ``body`` once (in the pieces of a
    tuple, the last with ``more_body`` false), then hands every later call to
    the real ``receive`` (so the app still sees ``http.disconnect``)."""
    pieces = [body] if isinstance(body, bytes) else list(body) or [b""]
    pieces.reverse()

    async def replayed() -> Message:
        if pieces:
            # Handed over and dropped one by one: the guard keeps no copy of
            # what the app has taken.
            piece = pieces.pop()
            return {"type": "http.request", "body": piece, "more_body": bool(pieces)}
        return await receive()

    return replayed


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


# JSON text for a colon escaped inside a string.
_ESCAPED_COLON = re.compile(rb"\\u003[aA]")


def _keys_unique(data: bytes | bytearray, value: Any) -> bool:
    """True only where no object of the JSON text ``data`` has a key twice
    (``value`` is ``data`` as orjson parsed it); False where that is not proven
    this way (then the exact pass decides).

    The proof counts colons.  In valid JSON a colon outside a string separates a
    key from its value, so ``data`` holds S separators plus R colons inside
    string literals.  ``value`` serialised again holds K keys (each separator
    of a key kept) plus D colons inside its strings; D is at most R plus the
    colons escaped as ``\\u003a`` (E at most, counting every such sequence),
    since ``value``'s strings are some of ``data``'s.  So where
    ``count(data) + E == count(dumps(value))``: S + R + E = K + D <= K + R + E,
    so S <= K; and K <= S always.  S == K: every separator gave a key of its
    own, and no key came twice (a repeated key, or anything under the value it
    replaced, adds a separator that no kept key matches)."""
    try:
        again = orjson.dumps(value)
    except orjson.JSONEncodeError:  # nesting orjson serialises no deeper
        return False
    # (``find``, not ``in``: ``in`` first tries the operand as a byte value.)
    escaped = len(_ESCAPED_COLON.findall(data)) if data.find(b"\\") >= 0 else 0
    return _colons(data) + escaped == _colons(again)


def _colons(data: bytes | bytearray) -> int:
    # Faster than bytes.count, which compares byte by byte: the removal
    # finds each colon with memchr.
    return len(data) - len(data.replace(b":", b""))


def parse_json(data: bytes | bytearray) -> Any:
    """The body as JSON, strictly: UTF-8 without a BOM, no NaN or Infinity, no
    number that overflows a double, no lone surrogate, nesting under 1024, and
    no object with the same key twice (another parser could take the other
    value than the one priced).  Anything else is ``InvalidRequest``."""
    if not data or data.isspace():  # (not ``strip()``: that copies a bytearray whole)
        raise InvalidRequest("The request body is empty; a JSON object is required.", param="body")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}", param="body") from None
    if not _keys_unique(data, value):
        try:
            json.loads(data, object_pairs_hook=_unique)
        except _DuplicateKey as exc:
            raise InvalidRequest(
                f"The request body has the key {exc.key!r} twice in one object; send each key once.",
                param=exc.key,
            ) from None
        except (ValueError, RecursionError) as exc:  # orjson accepted it; be safe all the same
            raise InvalidRequest(f"The request body is not valid JSON: {exc}", param="body") from None
    return value
