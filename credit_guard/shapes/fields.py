"""Checks of the fields that decide a price, shared by every shape, and the
rule for every other field.

Every field of a body, a message, a content part or an item falls in one of
four classes of that object's ``FieldPolicy``:

- *priced*: read by the shape's parser, which validates and counts it;
- *free*: known from the provider's API reference not to change the bill
  (sampling settings, ``user``, ``metadata``, ``store``...);
- *refused*: it bills in a way the price table cannot express (web search,
  audio, files, MCP servers, containers...): a 400 naming the field, whatever
  its value but the few that mean "off";
- anything else is *counted*: its JSON text is added to the input as a bound
  (the count is no longer exact), since upstreams such as vLLM render fields
  they do not know into the prompt.

Nothing is ignored because it was not understood.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._images import image_size
from ..errors import InvalidRequest
from .ask import ImageRef, _Builder


@dataclass(frozen=True, slots=True)
class Refused:
    """Why a field cannot be priced, and the values that leave it off (the
    field is let through with one of those; refused with any other)."""

    why: str
    off: tuple[object, ...] = (None,)

    def allows(self, value: object) -> bool:
        # By type as well: 0 == False in Python, but 0 is not "off".
        return any(type(value) is type(off) and value == off for off in self.off)


class FieldPolicy:
    """How the fields of one kind of object bear on the bill (see the module
    docstring): ``priced`` fields are the parser's, ``free`` ones are let
    through, ``refused`` ones get a 400, and every other one is counted."""

    __slots__ = ("priced", "free", "refused", "_passed", "_folded")

    def __init__(
        self, priced: frozenset[str], free: frozenset[str] = frozenset(), refused: Mapping[str, Refused] | None = None
    ) -> None:
        self.priced = priced
        self.free = free
        self.refused: Mapping[str, Refused] = dict(refused or {})
        # Fields let through as they are: most objects have no other, and the
        # set test below answers for all of them at once.
        self._passed = priced | free
        # Every known name by its case-folded spelling (see ``apply``).
        self._folded = {known.casefold(): known for known in (*priced, *free, *self.refused)}

    def __repr__(self) -> str:
        return f"FieldPolicy(priced={sorted(self.priced)}, free={sorted(self.free)}, refused={sorted(self.refused)})"

    def apply(self, obj: Mapping[str, Any], out: _Builder, where: str = "") -> None:
        """Refuse ``obj``'s refused fields and add the JSON text of its unknown
        ones to ``out``.  ``where`` is the object's own ``param`` path ("" for
        the body).  Raises ``InvalidRequest`` naming the first refused field."""
        passed = self._passed
        if passed.issuperset(obj.keys()):
            return
        folded = self._folded
        for name, value in obj.items():
            if name in passed:
                continue
            param = f"{where}.{name}" if where else name
            meant = folded.get(name.casefold())
            if meant is not None and meant != name:
                # Go's encoding/json (one-api, new-api, Ollama, LocalAI) matches
                # field names without regard to case, and Unicode folds ("ſ" is
                # "s", "K" is "k"): it would read this as the field priced.
                raise InvalidRequest(
                    f"'{name}' is not a field of this API; send '{meant}' as it is spelled.", param=param
                )
            refusal = self.refused.get(name)
            if refusal is not None:
                if refusal.allows(value):
                    continue
                raise InvalidRequest(f"'{name}' cannot be priced by this gateway: {refusal.why}.", param=param)
            out.unknown_field({name: value})


def policy(priced: str = "", free: str = "", refused: Mapping[str, Refused] | None = None) -> FieldPolicy:
    """A ``FieldPolicy`` from space-separated field names."""
    return FieldPolicy(frozenset(priced.split()), frozenset(free.split()), refused)


#: Refused on every body: fields that gateways such as LiteLLM act on before
#: the provider sees the request.  ``extra_body`` and ``extra_headers`` are
#: merged into the provider's request, past this guard's reading of it;
#: ``fallbacks`` sends the request to other models at their prices.
GATEWAY_REFUSED = {
    "extra_body": Refused("a gateway merges it into the provider's request unpriced", (None, {})),
    "extra_headers": Refused("a gateway forwards them, and headers switch on features billed apart", (None, {})),
    "fallbacks": Refused("a fallback model is billed at its own price", (None, [])),
    # A gateway that gives up on a request (its timeout) answers an error while
    # the provider finishes and bills it; retries bill every attempt.
    "timeout": Refused("a gateway abandons the request, and the provider still bills it"),
    "request_timeout": Refused("a gateway abandons the request, and the provider still bills it"),
    "stream_timeout": Refused("a gateway abandons the request, and the provider still bills it"),
    "num_retries": Refused("every attempt is billed", (None, 0)),
    "max_retries": Refused("every attempt is billed", (None, 0)),
    # Settings that send the request somewhere else than the gateway's upstream.
    "user_config": Refused("a model list sent with the request routes it past the priced model"),
    "api_base": Refused("the request would be sent to another endpoint"),
    "base_url": Refused("the request would be sent to another endpoint"),
}


def body_policy(priced: str, free: str = "", refused: Mapping[str, Refused] | None = None) -> FieldPolicy:
    """The ``FieldPolicy`` of a request body: ``policy`` plus ``GATEWAY_REFUSED``."""
    return policy(priced, free, {**GATEWAY_REFUSED, **(refused or {})})


#: Free on every OpenAI-style body: sampling and decoding settings, caller
#: tags, storage and caching hints.  None is billed, none is rendered into the
#: prompt by OpenAI, and each one's output effect stays under the output cap.
OPENAI_FREE = (
    "temperature top_p seed user metadata stop logit_bias logprobs top_logprobs presence_penalty "
    "frequency_penalty parallel_tool_calls store safety_identifier prompt_cache_key prompt_cache_retention"
)

#: Web search, in every spelling: billed per call, which no token price expresses.
WEB_SEARCH = Refused("web search is billed per call")

#: Anthropic's paid variants of one model: US-only inference bills every token
#: at 1.1 times its price (Claude 4.6 and later), fast mode at a premium; the
#: table has neither.  Gateways pass both on from a chat body too.
ANTHROPIC_VARIANTS = {
    "inference_geo": Refused("US-only inference is billed above the listed prices", (None, "global")),
    "speed": Refused("fast mode is billed above the listed prices", (None, "standard")),
}


#: ``anthropic-beta`` flags that change nothing the guard does not price from
#: the body: prompt caching (``cache_control`` marks, their TTL), thinking and
#: effort (under ``max_tokens``), tool streaming and token-efficient tools.
#: Any other flag may switch on what bills apart (``context-1m-...``: input
#: above 200k tokens at twice the price; code execution, files, MCP, web
#: fetch): refused, since gateways and the proxy pass the header on.
ANTHROPIC_BETA_FREE = frozenset(
    {
        "prompt-caching-2024-07-31",
        "extended-cache-ttl-2025-04-11",
        "interleaved-thinking-2025-05-14",
        "token-efficient-tools-2025-02-19",
        "fine-grained-tool-streaming-2025-05-14",
        "output-128k-2025-02-19",
        "effort-2025-11-24",
    }
)


def check_headers(headers: Any) -> None:
    """Refuse request headers that switch on features billed apart from what
    the body shows (``InvalidRequest`` naming the header)."""
    for key, value in headers:
        if key.lower() != b"anthropic-beta":
            continue
        for flag in value.decode("latin-1").split(","):
            flag = flag.strip().lower()
            if flag and flag not in ANTHROPIC_BETA_FREE:
                raise InvalidRequest(
                    f"The beta {flag!r} cannot be priced by this gateway: it may switch on features billed "
                    "apart (long-context prices, tools the provider runs, files).",
                    param="anthropic-beta",
                )


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("'model' is required and must be a non-empty string.", param="model")
    return model


def _positive_int(body: dict[str, Any], name: str, *, upper: int | None = None) -> int | None:
    if name not in body or body[name] is None:
        return None
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"'{name}' must be a positive integer, not {_describe(value)}.", param=name)
    if value < 1:
        raise InvalidRequest(f"'{name}' must be at least 1, not {value}.", param=name)
    if upper is not None and value > upper:
        raise InvalidRequest(f"'{name}' must be at most {upper}, not {value}.", param=name)
    return value


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__ if value is not None else "null"


def _bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest(f"'{name}' must be a boolean.", param=name)
    return value


def _service_tier(body: dict[str, Any]) -> str | None:
    """The request's ``service_tier``, as sent: the quote prices it at the
    table's price for that tier or refuses it."""
    tier = body.get("service_tier")
    if tier is not None and not isinstance(tier, str):
        raise InvalidRequest("'service_tier' must be a string.", param="service_tier")
    return tier


def _cache_control(block: dict[str, Any], out: _Builder, param: str) -> None:
    """Note a ``cache_control`` mark: the prefix it ends may be written to the
    prompt cache, billed above the input price."""
    mark = block.get("cache_control")
    if mark is None:
        return
    ttl = mark.get("ttl", "5m") if isinstance(mark, dict) else None
    # No other key: a "TTL" is the ttl to an upstream that ignores case.
    if (
        not isinstance(mark, dict)
        or set(mark) - {"type", "ttl"}
        or mark.get("type") != "ephemeral"
        or ttl not in ("5m", "1h")
    ):
        raise InvalidRequest(
            "'cache_control' must be {\"type\": \"ephemeral\"} with an optional 'ttl' of '5m' or '1h'.",
            param=f"{param}.cache_control" if param else "cache_control",
        )
    if out.cache_ttl != "1h":
        out.cache_ttl = ttl


def _image(url: object, detail: object, param: str) -> ImageRef:
    """One image given by URL.  A ``data:`` URL must carry an ``image/*`` media
    type: upstreams read a PDF or an audio file from an image part too, and
    bill it as pages or audio."""
    if not isinstance(url, str) or not url:
        raise InvalidRequest("An image needs a non-empty 'url'.", param=param)
    if detail is None:
        detail = "auto"
    if detail not in ("low", "high", "auto"):
        raise InvalidRequest("'detail' must be 'low', 'high' or 'auto'.", param=param)
    inline = url[:5].lower() == "data:"
    if inline:
        media = url[5:].split(",", 1)[0].split(";", 1)[0].strip().lower()
        if not media.startswith("image/"):
            raise InvalidRequest(
                f"Only images can be priced in an image part, not {media or 'text/plain'!r} data.", param=param
            )
    size = image_size("data:" + url[5:]) if inline else None
    if size is None:
        return ImageRef(detail=str(detail))
    return ImageRef(detail=str(detail), width=size[0], height=size[1])
