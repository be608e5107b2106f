"""Checks of the fields that decide a price, shared by every shape."""

from __future__ import annotations

from typing import Any

from .._images import image_size
from ..errors import InvalidRequest
from .ask import ImageRef


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


def _service_tier(body: dict[str, Any]) -> None:
    tier = body.get("service_tier")
    if tier not in (None, "auto", "default", "flex"):
        raise InvalidRequest(
            f"'service_tier' {tier!r} is billed above the listed prices and cannot be priced here.",
            param="service_tier",
        )


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
