"""Which requests are priced: the guard and the app must agree.

A client that wants to walk around the guard sends a priced request by a path
the guard does not recognise but the app still routes: a trailing or doubled
slash, percent-encoding, dot segments, another letter case, a mount prefix, a
method override.  So the path is normalised before it is matched, a priced
route matches at the end of the path (``/api/v1/chat/completions`` is a chat
completion, whatever it is mounted under), and what cannot be told apart from a
priced request fails closed:

- a request with a body to a path *below* a priced route
  (``/v1/chat/completions/x``) is refused unless listed in ``open_paths``;
- a request to a priced route by another method is passed only without a body
  (``GET /v1/chat/completions`` lists stored completions); with one, refused;
- a method-override header or ``_method`` query parameter on such a path is
  refused.
"""

from __future__ import annotations

import fnmatch
import posixpath
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

from .errors import CreditGuardError, InvalidRequest

__all__ = ["DEFAULT_ROUTES", "Router", "Route", "SHAPES"]

SHAPES = ("chat", "completion", "embedding", "responses", "anthropic")

#: Priced by default: path -> request shape (POST), matched at the end of the path.
DEFAULT_ROUTES: Mapping[str, str] = {
    "/v1/chat/completions": "chat",
    "/chat/completions": "chat",
    "/v1/completions": "completion",
    "/completions": "completion",
    "/v1/embeddings": "embedding",
    "/embeddings": "embedding",
    "/v1/responses": "responses",
    "/responses": "responses",
    "/v1/messages": "anthropic",
}

_OVERRIDE_HEADERS = (b"x-http-method-override", b"x-http-method", b"x-method-override")
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
# Percent-decoding is repeated (a double-encoded path) at most this often.
_MAX_DECODES = 3


class EndpointNotPriced(CreditGuardError):
    """A request the guard cannot price by a path or method it refuses."""

    status = 400
    type = "invalid_request_error"
    code = "ENDPOINT_NOT_PRICED"


@dataclass(frozen=True, slots=True)
class Route:
    """The decision for one request: ``kind`` is the shape to price (None: pass
    through), ``refusal`` an error to answer instead."""

    kind: str | None = None
    refusal: CreditGuardError | None = None


_PASS = Route()


_NORMALIZED: dict[tuple[str, str], tuple[str, ...]] = {}
_NORMALIZED_KEPT = 4096


def normalize(path: str, root_path: str = "") -> tuple[str, ...]:
    """The path's segments as the guard matches them: below ``root_path``,
    percent-decoded (repeatedly), dot segments resolved, empty segments
    dropped, lower case.  Results are cached: paths repeat."""
    key = (path, root_path)
    cached = _NORMALIZED.get(key)
    if cached is None:
        cached = _normalize(path, root_path)
        if len(_NORMALIZED) >= _NORMALIZED_KEPT:
            _NORMALIZED.clear()
        _NORMALIZED[key] = cached
    return cached


def _normalize(path: str, root_path: str) -> tuple[str, ...]:
    if root_path and path.startswith(root_path):
        path = path[len(root_path) :] or "/"
    for _ in range(_MAX_DECODES):
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    path = path.replace("\\", "/")
    # Matrix parameters (";x=y") are ignored by some servers when routing.
    path = "/".join(segment.split(";", 1)[0] for segment in path.split("/"))
    resolved = posixpath.normpath("/" + path)
    return tuple(segment for segment in resolved.lower().split("/") if segment)


class Router:
    """Matches requests to priced routes; built once from the configuration."""

    def __init__(self, routes: Mapping[str, str], *, open_paths: Iterable[str] = ()) -> None:
        self._routes: dict[tuple[str, ...], str] = {}
        for path, kind in routes.items():
            if kind not in SHAPES:
                raise ValueError(f"route {path!r}: unknown request shape {kind!r} (one of {', '.join(SHAPES)})")
            if not path.startswith("/"):
                raise ValueError(f"route {path!r} must start with '/'")
            segments = normalize(path)
            if not segments:
                raise ValueError("the root path cannot be a priced route")
            self._routes[segments] = kind
        # Longest first: /chat/completions before /completions.
        self._lengths = sorted({len(s) for s in self._routes}, reverse=True)
        self._open = tuple(p.lower() for p in open_paths)

    def classify(self, scope: MutableMapping[str, Any]) -> Route:
        segments = normalize(scope.get("path", "/"), scope.get("root_path", ""))
        method = str(scope.get("method", "GET")).upper()
        kind = self._match(segments)
        if kind is None:
            if not self._below_route(segments) or self._is_open(segments):
                return _PASS
            if method in _BODYLESS and not has_body(scope):
                return _PASS
            return Route(
                refusal=EndpointNotPriced(
                    f"{method} /{'/'.join(segments)} is below a priced endpoint and is not priced by this gateway.",
                    param="path",
                )
            )
        override = _override(scope)
        if override is not None and override != method:
            return Route(
                refusal=InvalidRequest(
                    "Method override is not accepted on a priced endpoint; send the request with its real method.",
                    param="x-http-method-override",
                )
            )
        if method == "POST":
            return Route(kind=kind)
        if method in _BODYLESS and not has_body(scope):
            return _PASS
        return Route(
            refusal=EndpointNotPriced(
                f"{method} with a body is not accepted on a priced endpoint; send it as POST.", param="method"
            )
        )

    def _match(self, segments: tuple[str, ...]) -> str | None:
        for length in self._lengths:
            if len(segments) >= length:
                kind = self._routes.get(segments[-length:])
                if kind is not None:
                    return kind
        return None

    def _below_route(self, segments: tuple[str, ...]) -> bool:
        for end in range(len(segments) - 1, 0, -1):
            if self._match(segments[:end]) is not None:
                return True
        return False

    def _is_open(self, segments: tuple[str, ...]) -> bool:
        path = "/" + "/".join(segments)
        return any(fnmatch.fnmatchcase(path, pattern) for pattern in self._open)


def has_body(scope: MutableMapping[str, Any]) -> bool:
    """Whether the request announces a body (a length above zero, or chunks)."""
    for key, value in scope.get("headers", ()):
        if key == b"transfer-encoding":
            return True
        if key == b"content-length" and value.strip() not in (b"0", b""):
            return True
    return False


def _override(scope: MutableMapping[str, Any]) -> str | None:
    for key, value in scope.get("headers", ()):
        if key in _OVERRIDE_HEADERS:
            return str(value.decode("latin-1").strip().upper())
    query = scope.get("query_string", b"")
    if query and b"_method" in query.lower():
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if name.lower() == "_method":
                return str(value).strip().upper()
    return None
