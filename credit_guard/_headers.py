"""Headers looked up by name in any case, with every name lowered at once.

An app may spell a header name in any case, so each lookup compares names
lowered.  Lowering them one at a time costs a method call per header for each
name looked for, and a response from a gateway such as LiteLLM carries some
thirty.  Here the names are joined and lowered once per response, and each
lookup is a search of that text by ``bytes`` methods, in C.

``lowered_names(headers)`` is that text: the names, lowered, each between
newlines.  A name is found where its line is; a name that itself holds a
newline (no valid header's does) could make a false line, so each match is
checked against the header it points at, and the headers are looked through
one by one where it fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["lowered_names", "last_value", "needle"]


def lowered_names(headers: Sequence[Any]) -> bytes | None:
    """``headers``' names, lowered, each between newlines (``b"\\nname\\n"``
    for one name), for ``last_value``; None where a name is not bytes
    (``last_value`` then looks through the headers)."""
    try:
        return b"\n" + b"\n".join([header[0] for header in headers]).lower() + b"\n"
    except (TypeError, IndexError, KeyError):
        return None


def needle(name: bytes) -> tuple[bytes, bytes]:
    """What ``last_value`` looks for: ``name`` (lowercase), and its line."""
    return name, b"\n" + name + b"\n"


def last_value(headers: Sequence[Any], names: bytes | None, needle: tuple[bytes, bytes]) -> bytes | None:
    """The value of the last header named as in ``needle`` (``needle(name)``),
    in any case, or None; ``names`` is ``lowered_names(headers)``."""
    name, line = needle
    if names is not None:
        at = names.rfind(line)
        if at < 0:
            return None  # every header's name is on a line of its own
        # The newlines before the match are the names before it.
        index = names.count(b"\n", 0, at)
        if index < len(headers):
            key, value = headers[index]
            if key.lower() == name:
                return value  # type: ignore[no-any-return]
    # Not where the text says (a name holds a newline): the slow way.
    found = None
    for key, value in headers:
        if key.lower() == name:
            found = value
    return found
