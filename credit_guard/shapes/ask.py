"""The normalized ``Ask`` and the builder every shape parser fills."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
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


# Not frozen: a frozen dataclass's __init__ costs several times more, and one is
# made on every priced request.  A value all the same: nothing changes one,
# except that the admission lets go of ``source`` where no count reads it.
@dataclass(slots=True, unsafe_hash=True)
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
    ``savings`` takes tokens off ``fixed_tokens`` on one encoding.  ``tool_choice`` is set by shapes
    whose provider adds a tool-use system prompt of its own (Anthropic): the
    ``tool_choice`` type when tools are given, "" when none is set; ``source``
    keeps the parsed chat body for a provider tokenizer that renders the
    messages itself (Mistral's).  ``service_tier`` is the request's, as sent
    (``quote`` prices or refuses it); ``cache_ttl`` the longest prompt-cache
    write its ``cache_control`` marks ask for (``"5m"``, ``"1h"``, or None).
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
    #: ``texts`` as a model without a public tokenizer is bounded: where a
    #: rendering the shape computed (chat tool definitions) is not what such a
    #: model's upstream receives, the JSON text it does receive stands in.
    #: None where the two are the same.
    bound_texts: tuple[str, ...] | None = None
    #: The API's own output cap where the request sets none, which applies only
    #: on a model of the shape's own kind (16 on a completions model); a model
    #: of another kind behind the endpoint generates up to its maximum.
    default_output_tokens: int | None = None
    #: Anthropic's ``tool_choice`` type where tools are given ("" when none is
    #: named): it decides the size of the tool-use system prompt.
    tool_choice: str | None = None
    #: The JSON text of every field the shape does not know, also in ``texts``:
    #: a provider tokenizer that renders the body itself (Mistral) adds them.
    unknown: tuple[str, ...] = ()
    #: The parsed body, for a provider tokenizer that renders it itself.
    source: Any = field(default=None, compare=False, repr=False)
    service_tier: str | None = None
    cache_ttl: str | None = None
    #: Encodings on which ``exact`` holds; None for every encoding.
    exact_on: frozenset[str] | None = None
    #: Tokens fewer than ``fixed_tokens`` on an encoding whose rendering is
    #: known to be smaller (``fixed_tokens`` is the largest over encodings).
    savings: tuple[tuple[str, int], ...] = ()


def json_text(value: Any) -> str:
    """``value``'s compact JSON text (what an upstream that renders a field
    into the prompt receives).  Never raises for a parsed JSON value: integers
    beyond 64 bits and non-finite floats (a lenient parser's) are written by
    the standard library instead."""
    try:
        return orjson.dumps(value).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(value, ensure_ascii=False, default=str)


class _Builder:
    """Collects the counting payload while a body is walked."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.fixed = 0
        self.images: list[ImageRef] = []
        self.parts = 0
        self.exact = True
        # (start, end, text): texts[start:end] is a rendering that a model
        # without a public tokenizer does not receive; ``text`` is what it does.
        self.swaps: list[tuple[int, int, str]] = []
        self.unknown: list[str] = []
        self.cache_ttl: str | None = None
        self.exact_on: set[str] | None = None
        self.savings: dict[str, int] = {}

    def text(self, value: str) -> None:
        if value:
            self.texts.append(value)

    def json(self, value: Any) -> None:
        """A piece whose rendering is unknown: its JSON text plus a margin."""
        self.texts.append(json_text(value))
        self.fixed += _JSON_MARGIN
        self.exact = False

    def unknown_field(self, value: Any) -> None:
        """A field the shape does not know: counted as its JSON text."""
        self.json(value)
        self.unknown.append(self.texts[-1])

    def swap_when_bounded(self, start: int, text: str) -> None:
        """The texts added since index ``start`` are a rendering; a model
        without a public tokenizer is bounded on ``text`` in their place."""
        self.swaps.append((start, len(self.texts), text))

    def _bound_texts(self) -> tuple[str, ...] | None:
        if not self.swaps:
            return None
        texts: list[str] = []
        at = 0
        for start, end, text in sorted(self.swaps):
            texts.extend(self.texts[at:start])
            texts.append(text)
            at = end
        texts.extend(self.texts[at:])
        return tuple(texts)

    def exact_only_on(self, *encodings: str) -> None:
        """What was just added is verified on ``encodings`` only."""
        self.exact_on = set(encodings) if self.exact_on is None else self.exact_on & set(encodings)

    def save(self, encoding: str, tokens: int) -> None:
        """``tokens`` of ``fixed`` are not billed on ``encoding``."""
        self.savings[encoding] = self.savings.get(encoding, 0) + tokens

    def ask(
        self,
        kind: str,
        model: str,
        *,
        output_tokens: int | None = None,
        output_param: str | None = None,
        choices: int = 1,
        stream: bool = False,
        include_usage: bool = False,
        exact: bool | None = None,
        default_output_tokens: int | None = None,
        tool_choice: str | None = None,
        source: Any = None,
        service_tier: str | None = None,
    ) -> Ask:
        """The ``Ask`` with this payload, the output cap and the rest
        (``exact``: False where the shape knows its count is a bound)."""
        # In the order of Ask's fields (positional: a class called with
        # keywords costs twice as much).
        return Ask(
            kind,
            model,
            output_tokens,
            output_param,
            choices,
            stream,
            include_usage,
            tuple(self.texts),
            self.fixed,
            tuple(self.images) if self.images else (),
            self.parts,
            self.exact if exact is None else exact,
            self._bound_texts() if self.swaps else None,
            default_output_tokens,
            tool_choice,
            tuple(self.unknown) if self.unknown else (),
            source,
            service_tier,
            self.cache_ttl,
            None if self.exact_on is None else frozenset(self.exact_on),
            tuple(sorted((name, n) for name, n in self.savings.items() if n)) if self.savings else (),
        )
