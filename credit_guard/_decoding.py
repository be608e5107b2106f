"""Undoing a response's ``Content-Encoding`` as it passes, in bounded pieces.

``Decoder`` takes the encoded bytes chunk by chunk and yields the decoded bytes
in pieces of at most ``PIECE`` bytes, so a small chunk that inflates to
gigabytes (a decompression bomb) never sits in memory at once; the caller
decides how much it reads.  gzip and deflate are undone with zlib; any other
coding (``br``, ``zstd``, a chain of several) raises ``UnsupportedEncoding``,
and a stream that is not what it claims raises ``DecodingFailed``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

__all__ = ["Decoder", "DecodingFailed", "UnsupportedEncoding", "PIECE"]

PIECE = 256 * 1024


class UnsupportedEncoding(ValueError):
    """The response is encoded in a way the guard cannot undo."""


class DecodingFailed(ValueError):
    """The bytes are not what their ``Content-Encoding`` says."""


def _codings(header: bytes) -> list[str]:
    return [c.strip().decode("latin-1").lower() for c in header.split(b",") if c.strip()]


class Decoder:
    """Undoes one ``Content-Encoding`` header's coding (``identity`` is none)."""

    def __init__(self, header: bytes) -> None:
        self._started = False
        self.fed = 0
        #: Nothing to undo (read on every response: an attribute, not a property).
        self.identity = True
        if not header:
            # No Content-Encoding, as most responses: nothing to undo.
            self.coding = "identity"
            self._inflate: zlib._Decompress | None = None
            return
        codings = [c for c in _codings(header) if c != "identity"]
        if len(codings) > 1:
            raise UnsupportedEncoding(", ".join(codings))
        self.coding = codings[0] if codings else "identity"
        if self.coding not in ("identity", "gzip", "x-gzip", "deflate"):
            raise UnsupportedEncoding(self.coding)
        self._inflate = self._new() if self.coding != "identity" else None
        self.identity = self._inflate is None

    def _new(self, raw: bool = False) -> zlib._Decompress:
        if self.coding == "deflate":
            # HTTP's deflate is zlib-wrapped; some servers send it raw.
            return zlib.decompressobj(-zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
        return zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decoded bytes of ``data``, in pieces of at most ``PIECE`` bytes."""
        self.fed += len(data)
        if self._inflate is None:
            yield data
            return
        if not self._started and self.coding == "deflate":
            self._started = True
            if data and not _zlib_header(data):
                self._inflate = self._new(raw=True)
        while data:
            try:
                out = self._inflate.decompress(data, PIECE)
            except zlib.error as exc:
                raise DecodingFailed(str(exc)) from None
            if out:
                yield out
            data = self._inflate.unconsumed_tail
            if self._inflate.eof and self._inflate.unused_data:
                # gzip allows several members one after another.
                data = self._inflate.unused_data
                self._inflate = self._new()

    def flush(self) -> Iterator[bytes]:
        """The end of the stream: raises ``DecodingFailed`` when it was cut short."""
        if self._inflate is None or not self.fed:
            return
        if not self._inflate.eof:
            raise DecodingFailed("the encoded stream ended early")
        yield from ()


def _zlib_header(data: bytes) -> bool:
    if len(data) < 2:
        return True
    cmf, flg = data[0], data[1]
    return cmf & 0x0F == 8 and (cmf * 256 + flg) % 31 == 0
