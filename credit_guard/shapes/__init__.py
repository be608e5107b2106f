"""Request bodies of every priced API turned into one normalized ``Ask``.

``parse(kind, body)`` validates the fields that decide the price and reduces the
body to what ``tokens.count_input`` counts: the texts the model reads, the
fixed framing tokens around them, the images, and the output cap.  Everything
that can change the bill is either priced or refused with ``InvalidRequest``
naming the field; nothing is priced at zero because it was not understood:
each shape's ``FieldPolicy`` tables (``fields``) name the fields known to be
free and the ones refused, and every other field's JSON text is counted.

One module per API: ``chat``, ``completions`` (and embeddings), ``responses``,
``anthropic``; ``ask`` holds the ``Ask`` and its builder, ``fields`` the checks
they share, ``preamble`` the hidden input OpenAI families bill.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import InvalidRequest
from .anthropic import _anthropic
from .ask import KINDS, MAX_CHOICES, Ask, ImageRef
from .chat import _chat
from .completions import COMPLETIONS_DEFAULT_MAX_TOKENS, _completion, _embedding
from .fields import check_headers
from .responses import _responses

__all__ = ["Ask", "ImageRef", "parse", "check_headers", "KINDS", "MAX_CHOICES", "COMPLETIONS_DEFAULT_MAX_TOKENS"]


def parse(kind: str, body: object) -> Ask:
    """The ``Ask`` of a request body of shape ``kind``.  Raises ``InvalidRequest``
    with ``param`` naming the field for anything that cannot be priced."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", param=None)
    parser = _PARSERS.get(kind)
    if parser is None:
        raise ValueError(f"unknown request shape {kind!r}")
    return parser(body)


_PARSERS: dict[str, Callable[[dict[str, Any]], Ask]] = {
    "chat": _chat,
    "completion": _completion,
    "embedding": _embedding,
    "responses": _responses,
    "anthropic": _anthropic,
}
