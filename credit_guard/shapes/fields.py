"""Checks of the fields that decide a price, shared by every shape."""

from __future__ import annotations

from typing import Any

from .._images import image_size
from ..errors import InvalidRequest
from .ask import ImageRef, _Builder


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


def _refuse_fields(body: dict[str, Any], fields: dict[str, str]) -> None:
    for name, why in fields.items():
        if body.get(name) not in (None, False, [], {}):
            raise InvalidRequest(f"'{name}' cannot be priced by this gateway: {why}.", param=name)


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
    if not isinstance(mark, dict) or mark.get("type") != "ephemeral" or ttl not in ("5m", "1h"):
        raise InvalidRequest(
            "'cache_control' must be {\"type\": \"ephemeral\"} with an optional 'ttl' of '5m' or '1h'.",
            param=f"{param}.cache_control" if param else "cache_control",
        )
    if out.cache_ttl != "1h":
        out.cache_ttl = ttl


def _image(url: object, detail: object, param: str) -> ImageRef:
    if not isinstance(url, str) or not url:
        raise InvalidRequest("An image needs a non-empty 'url'.", param=param)
    if detail is None:
        detail = "auto"
    if detail not in ("low", "high", "auto"):
        raise InvalidRequest("'detail' must be 'low', 'high' or 'auto'.", param=param)
    size = image_size(url) if url.startswith("data:") else None
    if size is None:
        return ImageRef(detail=str(detail))
    return ImageRef(detail=str(detail), width=size[0], height=size[1])
