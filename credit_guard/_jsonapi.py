"""What the small JSON APIs (``api.py``, ``admin.py``) share: answers in JSON
(amounts as exact numbers), errors in the contract's envelope, query strings
checked against the parameters a route knows, usage filters from a query."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from ._asgi import Receive, Scope, Send
from .errors import CreditGuardError, InvalidRequest, dumps, error_body, error_headers, request_id_from
from .records import GROUPS, UsageQuery, parse_day

__all__ = [
    "Forbidden",
    "MethodNotAllowed",
    "NotFound",
    "header",
    "query_params",
    "read_json",
    "send_error",
    "send_json",
    "usage_query",
]

# Largest JSON body an API route reads.
_MAX_BODY = 64 * 1024


class NotFound(CreditGuardError):
    status = 404
    type = "not_found_error"
    code = "NOT_FOUND"


class MethodNotAllowed(CreditGuardError):
    status = 405
    type = "invalid_request_error"
    code = "METHOD_NOT_ALLOWED"


class Forbidden(CreditGuardError):
    status = 403
    type = "permission_error"
    code = "FORBIDDEN"


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def request_id(scope: Scope) -> str:
    return request_id_from(header(scope, b"x-request-id"))


async def send_json(
    send: Send, status: int, value: object, rid: str, extra: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    body = dumps(value)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", rid.encode("latin-1")),
        (b"cache-control", b"no-store"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_error(send: Send, error: CreditGuardError, rid: str) -> None:
    body = error_body(error, rid)
    headers = error_headers(error, rid, body)
    headers.append((b"cache-control", b"no-store"))
    if error.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def query_params(scope: Scope, known: Iterable[str]) -> dict[str, str]:
    """The query string as a dict; a parameter the route does not know, or one
    given twice, is a 400 naming it (a typo must not widen a query)."""
    allowed = set(known)
    params: dict[str, str] = {}
    raw = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(raw, keep_blank_values=True):
        if name not in allowed:
            raise InvalidRequest(f"Unknown query parameter {name!r}.", param=name)
        if name in params:
            raise InvalidRequest(f"The query parameter {name!r} is given more than once.", param=name)
        params[name] = value
    return params


def usage_query(params: Mapping[str, str], *, account: str | None) -> tuple[UsageQuery, str | None, int]:
    """Filters, grouping (None: the records themselves) and record limit from a
    query's ``key``, ``model``, ``since``, ``until``, ``by`` and ``limit``."""
    days = {}
    for name in ("since", "until"):
        if params.get(name):
            try:
                days[name] = parse_day(params[name])
            except ValueError as exc:
                raise InvalidRequest(str(exc), param=name) from None
    by = params.get("by") or None
    if by is not None and by not in GROUPS:
        raise InvalidRequest(f"'by' must be one of {', '.join(GROUPS)}.", param="by")
    limit_text = params.get("limit") or "100"
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
        raise InvalidRequest("'limit' must be an integer from 1 to 1000.", param="limit")
    query = UsageQuery(
        account=account,
        key=params.get("key") or None,
        model=params.get("model") or None,
        since=days.get("since"),
        until=days.get("until"),
    )
    return query, by, int(limit_text)


async def read_json(receive: Receive) -> Any:
    """A request's JSON body (at most 64 KiB); 400 when it is not JSON, 413 above the limit."""
    import orjson

    from .errors import RequestTooLarge

    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequest("The client went away.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY:
            raise RequestTooLarge("The body is larger than this API reads.")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    data = b"".join(chunks)
    if not data:
        return {}
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The body is not JSON.") from None
