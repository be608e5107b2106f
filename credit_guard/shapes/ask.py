"""The normalized ``Ask`` and the builder every shape parser fills."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["Ask", "ImageRef", "KINDS", "MAX_CHOICES"]

KINDS = ("chat", "completion", "embedding", "responses", "anthropic")

#: The most choices (``n``) a request may ask for.
MAX_CHOICES = 128
# Chat framing (OpenAI cookbook).
_PER_MESSAGE = 3
_PER_NAME = 1
_REPLY_PRIMING = 3
# Margin added to each piece counted from JSON text instead of its (unpublished)
# rendering.
_JSON_MARGIN = 16


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

    ``kind``: one of ``KINDS``.  ``output_tokens`` is the request's own output
    cap (None if it sets none) and ``output_param`` the field that sets it.
    ``choices`` is how many outputs the cap applies to.  ``stream`` is true for
    a streamed response; ``include_usage`` when a chat stream asked for usage.
    The rest is what ``tokens.count_input`` counts: ``texts`` (encoded),
    ``fixed_tokens`` (framing), ``images``, ``parts`` (messages or items, for
    the per-part margin of bounded models), and ``exact`` (False where a
    rendering is bounded rather than known), narrowed to the encodings in
    ``exact_on`` where a rendering is verified on some encodings only;
    ``savings`` takes tokens off ``fixed_tokens`` on one encoding.
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
    parts: int = 0
    exact: bool = True
    #: Encodings on which ``exact`` holds; None for every encoding.
    exact_on: frozenset[str] | None = None
    #: Tokens fewer than ``fixed_tokens`` on an encoding whose rendering is
    #: known to be smaller (``fixed_tokens`` is the largest over encodings).
    savings: tuple[tuple[str, int], ...] = ()


class _Builder:
    """Collects the counting payload while a body is walked."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.fixed = 0
        self.images: list[ImageRef] = []
        self.parts = 0
        self.exact = True
        self.exact_on: set[str] | None = None
        self.savings: dict[str, int] = {}

    def text(self, value: str) -> None:
        if value:
            self.texts.append(value)

    def json(self, value: Any) -> None:
        """A piece whose rendering is unknown: its JSON text plus a margin."""
        self.texts.append(orjson.dumps(value).decode())
        self.fixed += _JSON_MARGIN
        self.exact = False

    def exact_only_on(self, *encodings: str) -> None:
        """What was just added is verified on ``encodings`` only."""
        self.exact_on = set(encodings) if self.exact_on is None else self.exact_on & set(encodings)

    def save(self, encoding: str, tokens: int) -> None:
        """``tokens`` of ``fixed`` are not billed on ``encoding``."""
        self.savings[encoding] = self.savings.get(encoding, 0) + tokens

    def ask(self, kind: str, model: str, **fields: Any) -> Ask:
        """The ``Ask`` with this payload (``fields``: the output cap and the rest)."""
        return Ask(
            kind=kind,
            model=model,
            texts=tuple(self.texts),
            fixed_tokens=self.fixed,
            images=tuple(self.images),
            parts=self.parts,
            exact=fields.pop("exact", self.exact),
            exact_on=None if self.exact_on is None else frozenset(self.exact_on),
            savings=tuple(sorted((name, n) for name, n in self.savings.items() if n)),
            **fields,
        )
