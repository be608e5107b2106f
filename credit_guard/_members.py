"""Members of a JSON object found by their path as the bytes pass, in bounded
memory, and one top-level member cut out of a JSON text byte for byte.

``MemberScan`` follows only the structure of the text (strings, brackets,
commas, colons): it keeps the values of the wanted members, the keys on the
way to them, and a count of the containers below, never the rest.  It does not
validate the text: what it finds is parsed and checked by the caller.
"""

from __future__ import annotations

import re
from collections.abc import Collection

import orjson

__all__ = ["MemberScan", "without_member"]

_OUTSIDE = re.compile(rb'["{}\[\],:]')
# Below the tracked objects only strings and brackets matter: a string whole
# where the piece holds all of it, else its opening quote.
_BELOW = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|["{}\[\]]', re.DOTALL)
# The rest of a string up to its closing quote (or the piece's end).
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
# Keys longer than this are never wanted, and are not kept.
_MAX_KEY = 256


class _Object:
    """An object on a wanted path: its path, and where its current member is."""

    __slots__ = ("path", "state", "key")

    def __init__(self, path: tuple[str, ...]) -> None:
        self.path = path
        self.state = "key"  # key -> colon -> value -> (comma) key
        self.key: str | None = None


class MemberScan:
    """Feed a JSON text in pieces; ``found`` maps each wanted path (a tuple of
    keys from the top-level object) to the raw values met there, in order (more
    than one: the text repeats the key).  A value longer than ``max_value``
    bytes is not kept: its path goes in ``too_long``.  ``complete`` once the
    top-level object has closed; ``not_object`` when the text is something else.
    """

    def __init__(self, paths: Collection[tuple[str, ...]], *, max_value: int = 64 * 1024) -> None:
        self._wanted = frozenset(paths)
        self._tracked = frozenset(p[:i] for p in self._wanted for i in range(len(p)))
        self._max_value = max_value
        self.found: dict[tuple[str, ...], list[bytes]] = {}
        self.too_long: set[tuple[str, ...]] = set()
        self.complete = False
        self.not_object = False
        self._stack: list[_Object] = []
        self._below = 0  # open containers under the tracked ones
        self._in_string = False
        self._escape = False
        self._key: bytearray | None = None  # the key being read
        self._capture: bytearray | None = None
        self._capture_path: tuple[str, ...] = ()
        self._capture_depth = 0

    @property
    def done(self) -> bool:
        return self.complete or self.not_object

    def feed(self, data: bytes) -> None:
        if self.done:
            return
        pos, end = 0, len(data)
        key_from = 0 if self._key is not None else -1
        capture_from = 0 if self._capture is not None else -1
        while pos < end:
            if self._in_string:
                if self._escape:
                    self._escape = False
                    pos += 1
                    continue
                found = _STRING_REST.match(data, pos)
                pos = found.end() if found is not None else pos
                if pos >= end:
                    break
                if data[pos] == 0x5C:  # a backslash ends the piece: skip what it escapes next
                    self._escape = True
                    pos = end
                    break
                self._in_string = False
                if self._key is not None:
                    self._end_key(data[key_from:pos])
                    key_from = -1
                pos += 1
                continue
            found = (_BELOW if self._below else _OUTSIDE).search(data, pos)
            if found is None:
                break
            if found.end() - found.start() > 1:
                pos = found.end()  # a whole string, below: nothing in it matters
                continue
            pos = found.start()
            char = data[pos]
            if char == 0x22:  # "
                self._in_string = True
                top = self._stack[-1] if self._stack and not self._below else None
                if top is not None and top.state == "key":
                    self._key = bytearray()
                    key_from = pos + 1
                elif not self._stack and not self._below:
                    self.not_object = True
                    return
            elif char in (0x7B, 0x5B):  # { [
                if not self._stack and not self._below:
                    if char == 0x5B:
                        self.not_object = True
                        return
                    self._stack.append(_Object(()))
                else:
                    top = self._stack[-1] if not self._below else None
                    path = top.path + (top.key,) if top is not None and top.key is not None else None
                    if char == 0x7B and path is not None and path in self._tracked:
                        self._stack.append(_Object(path))
                    else:
                        self._below += 1
            elif char in (0x7D, 0x5D):  # } ]
                if self._below:
                    self._below -= 1
                else:
                    if self._capture is not None and len(self._stack) == self._capture_depth:
                        self._end_capture(data[capture_from:pos])
                        capture_from = -1
                    self._stack.pop()
                    if not self._stack:
                        self.complete = True
                        return
            elif not self._below and self._stack:
                top = self._stack[-1]
                if char == 0x2C:  # ,
                    if self._capture is not None and len(self._stack) == self._capture_depth:
                        self._end_capture(data[capture_from:pos])
                        capture_from = -1
                    top.state, top.key = "key", None
                elif char == 0x3A and top.state == "colon":  # :
                    top.state = "value"
                    if top.key is not None and top.path + (top.key,) in self._wanted:
                        self._capture = bytearray()
                        self._capture_path = top.path + (top.key,)
                        self._capture_depth = len(self._stack)
                        capture_from = pos + 1
            pos += 1
        if self._key is not None and key_from >= 0:
            self._key += data[key_from:]
            if len(self._key) > _MAX_KEY:
                self._key = bytearray(b"\x00")  # too long to be wanted; kept short
        if self._capture is not None and capture_from >= 0:
            self._grow_capture(data[capture_from:])

    def _end_key(self, tail: bytes) -> None:
        raw = bytes(self._key or b"") + tail
        self._key = None
        top = self._stack[-1]
        top.state = "colon"
        top.key = None
        if len(raw) <= _MAX_KEY:
            try:
                key = orjson.loads(b'"' + raw + b'"') if b"\\" in raw else raw.decode()
            except (orjson.JSONDecodeError, UnicodeDecodeError):
                return
            top.key = key if isinstance(key, str) else None

    def _grow_capture(self, piece: bytes) -> None:
        assert self._capture is not None
        if len(self._capture) + len(piece) > self._max_value:
            self.too_long.add(self._capture_path)
            self._capture = None
            return
        self._capture += piece

    def _end_capture(self, tail: bytes) -> None:
        if self._capture is None:
            return
        self._grow_capture(tail)
        if self._capture is not None:
            self.found.setdefault(self._capture_path, []).append(bytes(self._capture).strip())
        self._capture = None


def without_member(text: bytes, key: str) -> bytes | None:
    """``text`` (one JSON object) with its top-level member ``key`` removed and
    every other byte as it was; None when it has no such member (or is not an
    object).  Every occurrence goes, should the key repeat."""
    cut = _member_span(text, key)
    if cut is None:
        return None
    start, stop = cut
    out = text[:start] + text[stop:]
    return without_member(out, key) or out


def _member_span(text: bytes, key: str) -> tuple[int, int] | None:
    """The bytes to remove for the top-level member ``key``: from the comma
    before it to the end of its value, or (the first member) from its key to
    the start of the next one."""
    depth = 0
    expecting_key = False
    last_comma = -1
    member: tuple[int, int] | None = None  # (where its key starts, the comma before it or -1)
    pos, end = 0, len(text)
    while pos < end:
        found = _OUTSIDE.search(text, pos)
        if found is None:
            return None
        pos = found.start()
        char = text[pos]
        if char == 0x22:  # a string: skip to its closing quote
            rest = _STRING_REST.match(text, pos + 1)
            stop = rest.end() if rest is not None else pos + 1
            if stop >= end or text[stop] != 0x22:
                return None
            if depth == 1 and expecting_key:
                expecting_key = False
                raw = text[pos + 1 : stop]
                try:
                    name = orjson.loads(text[pos : stop + 1]) if b"\\" in raw else raw.decode()
                except (orjson.JSONDecodeError, UnicodeDecodeError):
                    name = None
                if name == key:
                    member = (pos, last_comma)
            pos = stop + 1
            continue
        if char in (0x7B, 0x5B):  # { [
            if depth == 0 and char == 0x5B:
                return None
            depth += 1
            expecting_key = depth == 1
        elif char in (0x7D, 0x5D):  # } ]
            if depth == 1 and member is not None:
                return (member[1] if member[1] >= 0 else member[0]), pos
            depth -= 1
            if depth == 0:
                return None
        elif depth == 1 and char == 0x2C:  # ,
            if member is not None:
                if member[1] >= 0:
                    return member[1], pos
                # The first member: up to the next key, with the space after the comma.
                stop = pos + 1
                while stop < end and text[stop] in b" \t\r\n":
                    stop += 1
                return member[0], stop
            last_comma = pos
            expecting_key = True
        pos += 1
    return None


class MemberCutter:
    """Cuts the top-level member ``key`` out of one JSON object as its bytes
    pass, byte for byte as ``without_member`` would, holding back no more than
    the space and key before each member (never a value): ``feed`` returns the
    bytes to pass on now, ``finish`` whatever is still held at the end."""

    def __init__(self, key: str) -> None:
        self._key = key
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._held: bytearray | None = None  # from a member's comma (or the "{") to its key's end
        self._held_first = False  # the held member is the first: no comma before it
        self._strip_space = False  # the member before was cut as the first: drop the space it left
        self._in_key = False
        self._dropping = False  # inside the cut member: bytes go nowhere
        self._drop_first = False

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        pos, end = 0, len(data)
        keep_from = 0  # bytes from here on pass (or join the held ones) unless dropped
        while pos < end:
            if self._in_string:
                if self._escape:
                    self._escape = False
                    pos += 1
                    continue
                found = _STRING_REST.match(data, pos)
                pos = found.end() if found is not None else pos
                if pos >= end:
                    break
                if data[pos] == 0x5C:
                    self._escape = True
                    pos = end
                    break
                self._in_string = False
                pos += 1
                if self._in_key:
                    self._in_key = False
                    keep_from = self._end_key(data, keep_from, pos, out)
                continue
            found = _OUTSIDE.search(data, pos)
            if found is None:
                break
            pos = found.start()
            char = data[pos]
            if char == 0x22:  # "
                self._in_string = True
                self._in_key = self._depth == 1 and self._held is not None
            elif char in (0x7B, 0x5B):  # { [
                self._depth += 1
                if self._depth == 1 and char == 0x7B:
                    out += data[keep_from : pos + 1]
                    keep_from = pos + 1
                    self._held, self._held_first = bytearray(), True
            elif char in (0x7D, 0x5D):  # } ]
                if self._depth == 1:
                    self._end_member(data[keep_from:pos], out)
                    keep_from = pos
                self._depth -= 1
            elif char == 0x2C and self._depth == 1:  # ,
                if self._end_member(data[keep_from:pos], out):
                    # The first member was cut: its comma and the space after it go too.
                    keep_from = pos + 1
                    self._held, self._held_first, self._strip_space = bytearray(), True, True
                else:
                    keep_from = pos
                    self._held, self._held_first = bytearray(), False
            pos += 1
        self._keep(data[keep_from:], out)
        return bytes(out)

    def finish(self) -> bytes:
        held, self._held = self._held, None
        return bytes(held or b"")

    def _keep(self, piece: bytes, out: bytearray) -> None:
        if self._dropping:
            return
        if self._held is not None:
            self._held += piece
            if len(self._held) > 64 * _MAX_KEY:  # only space this long: not a key of ours
                out += self._flush()
        else:
            out += piece

    def _flush(self) -> bytes:
        held = bytes(self._held or b"")
        self._held = None
        if self._strip_space:
            self._strip_space = False
            held = held.lstrip(b" \t\r\n")
        return held

    def _end_key(self, data: bytes, keep_from: int, stop: int, out: bytearray) -> int:
        assert self._held is not None
        self._held += data[keep_from:stop]
        raw = bytes(self._held).lstrip(b", \t\r\n")
        try:
            name = orjson.loads(raw) if raw[:1] == b'"' else None
        except orjson.JSONDecodeError:
            name = None
        if name == self._key:
            if self._held_first and not self._strip_space:
                # The space between "{" and the first key stays, as in without_member.
                out += self._held[: len(self._held) - len(self._held.lstrip(b" \t\r\n"))]
            self._held, self._strip_space = None, False
            self._dropping, self._drop_first = True, self._held_first
        else:
            out += self._flush()
        return stop

    def _end_member(self, piece: bytes, out: bytearray) -> bool:
        """A depth-1 ``,`` or ``}``: the member before it has ended (``piece``
        is its last bytes).  True when it was cut as the first member."""
        self._keep(piece, out)
        if self._held is not None:
            out += self._flush()
        cut_first = self._dropping and self._drop_first
        self._dropping = self._drop_first = False
        return cut_first
