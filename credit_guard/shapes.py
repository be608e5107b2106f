"""Request bodies of every priced API turned into one normalized ``Ask``.

(Type first; the parsers follow.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Ask", "ImageRef"]


@dataclass(frozen=True, slots=True)
class ImageRef:
    """One input image.  ``width``/``height`` are known only for inline base64
    images whose header was read; ``detail`` is ``"low"``, ``"high"`` or ``"auto"``."""

    detail: str = "auto"
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, slots=True)
class Ask:
    """What one request asks for, as far as its price goes.

    ``kind``: ``"chat"``, ``"completion"``, ``"embedding"``, ``"responses"`` or
    ``"anthropic"``.  ``output_tokens`` is the request's own output cap (None if
    it sets none) and ``output_param`` the field that set it.  ``choices`` is the
    number of outputs the cap applies to (``n``; ``best_of`` for completions).
    ``stream`` is true for a streamed response.  The rest is the counting
    payload that ``tokens.count_input`` reads.
    """

    kind: str
    model: str
    output_tokens: int | None = None
    output_param: str | None = None
    choices: int = 1
    stream: bool = False
    include_usage: bool = False
    texts: tuple[str, ...] = ()
    fixed_tokens: int = 0
    images: tuple[ImageRef, ...] = ()
    # Parts whose rendering is not known exactly; counted by an upper bound.
    bounded_texts: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
