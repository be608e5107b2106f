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

The request target is what gets priced and what gets forwarded: only a plain
origin-form path (``/...``) is judged at all.  A target with a ``#``, a
backslash, an absolute form (``http://host/...``), an authority form
(``//host/...``, ``@host/...``), anything before the first ``/`` or ``*`` is
refused whatever the method, so that no part of it can be read one way by the
guard and another by the app or by a URL parser behind it.  ``target_segments``
is that judgement; the router matches its segments and ``proxy.py`` forwards
exactly them.

Routes that name the model in the path (Azure's
``/openai/deployments/{name}/chat/completions``, OpenAI's legacy
``/v1/engines/{name}/completions``) are priced with that model: the upstream
uses it, not the body's ``model``.  A deployment is priced only when it is
mapped to a model (``deployments``); a path whose prefix holds a model-naming
word (``deployments``, ``engines``) but matches none of these routes is refused.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from .errors import CreditGuardError, InvalidRequest

__all__ = ["DEFAULT_ROUTES", "MODEL_ROUTES", "Router", "Route", "SHAPES", "BadTarget", "target_segments"]

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

#: Routes whose path names the model, matched at the end of the path: the
#: segment after the first word is a deployment (mapped to a model by
#: configuration) or an engine (a model name).
MODEL_ROUTES: Mapping[str, str] = {
    "/deployments/{name}/chat/completions": "chat",
    "/deployments/{name}/completions": "completion",
    "/deployments/{name}/embeddings": "embedding",
    "/engines/{name}/chat/completions": "chat",
    "/engines/{name}/completions": "completion",
    "/engines/{name}/embeddings": "embedding",
}
_MODEL_WORDS = frozenset({"deployments", "engines"})

_OVERRIDE_HEADERS = (b"x-http-method-override", b"x-http-method", b"x-method-override")
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
_READS = frozenset({"GET", "HEAD", "OPTIONS"})
# Percent-decoding is repeated (a double-encoded path) at most this often.
_MAX_DECODES = 3
# Bytes a plain origin-form target may hold (RFC 3986 pchar, '/', '?', '%');
# '#', '\\', spaces and controls are not among them.
_TARGET_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/%")
# The query is forwarded as sent: any visible ASCII but '#'.
_QUERY_BYTES = frozenset(range(0x21, 0x7F)) - {ord("#")}


class EndpointNotPriced(CreditGuardError):
    """A request the guard cannot price by a path or method it refuses."""

    status = 400
    type = "invalid_request_error"
    code = "ENDPOINT_NOT_PRICED"


class BadTarget(InvalidRequest):
    """A request target that is not a plain origin-form path."""


@dataclass(frozen=True, slots=True)
class Route:
    """The decision for one request: ``kind`` is the shape to price (None: pass
    through), ``refusal`` an error to answer instead, ``model`` the model the
    path names (None: the body's)."""

    kind: str | None = None
    refusal: CreditGuardError | None = None
    model: str | None = None


_PASS = Route()


def _priced(kind: str) -> Route:
    """The route of a priced request of ``kind``: one value per kind."""
    route = _PRICED.get(kind)
    if route is None:
        route = _PRICED[kind] = Route(kind=kind)
    return route


_PRICED: dict[str, Route] = {}


def target_segments(scope: MutableMapping[str, Any]) -> tuple[str, ...]:
    """The path segments of the request target below ``root_path``, exactly as
    the guard prices them and the proxy forwards them: percent-decoded
    (repeatedly), dot segments resolved, empty segments and ``;`` parameters
    dropped, letter case kept.

    Raises ``BadTarget`` for a target that is not a plain origin-form path:
    ``raw_path`` (what a proxy would forward) and ``path`` (what an app routes
    on) must both start with one ``/`` and hold no ``#`` or ``\\``, nothing
    outside the bytes a URL path may hold, and must say the same thing.
    """
    return _judged(scope)[0]


def _judged(scope: MutableMapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``target_segments`` and the same in lower case (what routes match)."""
    path = scope.get("path", "")
    raw = scope.get("raw_path")
    query = scope.get("query_string", b"")
    if not isinstance(path, str) or not (raw is None or isinstance(raw, bytes)) or not isinstance(query, bytes):
        raise BadTarget("The request target is not a path.", param="path")
    if query and not _QUERY_BYTES.issuperset(query):
        raise BadTarget("The query holds a character a URL may not ('#', spaces...).", param="path")
    key = (raw, path, scope.get("root_path", ""))
    judged = _JUDGED.get(key)
    if judged is None:
        judged = _judge(*key)
        if len(_JUDGED) >= _JUDGED_KEPT:
            _JUDGED.clear()
        _JUDGED[key] = judged
    if isinstance(judged, str):
        raise BadTarget(judged, param="path")
    return judged


# Targets repeat: each is judged once (a refusal is kept as its message).
_JUDGED: dict[tuple[bytes | None, str, str], tuple[tuple[str, ...], tuple[str, ...]] | str] = {}
_JUDGED_KEPT = 4096


def _judge(raw: bytes | None, path: str, root_path: str) -> tuple[tuple[str, ...], tuple[str, ...]] | str:
    if raw is None:
        raw = quote(path, safe="/:@!$&'()*+,;=~").encode("ascii")
    if not raw.startswith(b"/") or raw.startswith(b"//"):
        return "The request target must be a path starting with a single '/' (no absolute or authority form)."
    if not _TARGET_BYTES.issuperset(raw):
        return "The request target holds a character a URL path may not ('#', '\\', spaces...)."
    # uvicorn and httpx give path == unquote(raw_path); a server that parsed
    # the target another way (an absolute form it cut down) must not be judged
    # on one and forwarded by the other.
    decoded = unquote(raw.decode("ascii"))
    if decoded != path or path.startswith("//") or "#" in path or "\\" in path:
        return "The request target must be a plain path such as /v1/chat/completions."
    segments = _split(path, root_path)
    return segments, tuple(segment.lower() for segment in segments)


def normalize(path: str, root_path: str = "") -> tuple[str, ...]:
    """A path's segments as routes match them: decoded, resolved, in lower
    case (see ``target_segments``)."""
    return tuple(segment.lower() for segment in _split(path, root_path))


def _split(path: str, root_path: str) -> tuple[str, ...]:
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
    return tuple(segment for segment in resolved.split("/") if segment)


class Router:
    """Matches requests to priced routes; built once from the configuration.

    ``deployments`` maps the deployment names of ``/deployments/{name}/...``
    routes to the models they run; ``open_reads`` are the glob patterns of the
    bodiless reads ``readable`` accepts (``*`` within a segment, ``**`` across).
    """

    def __init__(
        self,
        routes: Mapping[str, str],
        *,
        open_paths: Iterable[str] = (),
        deployments: Mapping[str, str] | None = None,
        open_reads: Iterable[str] = ("/**",),
    ) -> None:
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
        self._model_routes = sorted(
            ((tuple(path.strip("/").split("/")), kind) for path, kind in MODEL_ROUTES.items()),
            key=lambda item: -len(item[0]),
        )
        self._deployments = {name.lower(): model for name, model in (deployments or {}).items()}
        self._open = tuple(p.lower() for p in open_paths)
        self._reads = tuple(_glob(pattern) for pattern in open_reads)

    def classify(self, scope: MutableMapping[str, Any]) -> Route:
        method = str(scope.get("method", "GET")).upper()
        try:
            original, segments = _judged(scope)
        except BadTarget as error:
            if method == "OPTIONS" and scope.get("path") == "*" and not has_body(scope):
                return _PASS  # the server-wide OPTIONS, never priced
            return Route(refusal=error)
        names_a_model = not _MODEL_WORDS.isdisjoint(segments)
        route = self._match_model_route(original, segments) if names_a_model else None
        if route is None:
            kind = self._match(segments)
        elif route.refusal is not None:
            return route
        else:
            kind = route.kind
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
        if route is None and names_a_model:
            return Route(
                refusal=EndpointNotPriced(
                    f"/{'/'.join(segments)} names a model or deployment in its path in a form this gateway does not"
                    " price.",
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
            return route if route is not None else _priced(kind)
        if method in _BODYLESS and not has_body(scope):
            return _PASS
        return Route(
            refusal=EndpointNotPriced(
                f"{method} with a body is not accepted on a priced endpoint; send it as POST.", param="method"
            )
        )

    def readable(self, scope: MutableMapping[str, Any]) -> bool:
        """Whether the request is a bodiless read (``GET``, ``HEAD``,
        ``OPTIONS``) of a path that ``open_reads`` lets through."""
        method = str(scope.get("method", "GET")).upper()
        if method not in _READS or has_body(scope):
            return False
        try:
            segments = _judged(scope)[1]
        except BadTarget:
            return False
        path = "/" + "/".join(segments)
        return any(pattern.fullmatch(path) for pattern in self._reads)

    def open_socket(self, scope: MutableMapping[str, Any]) -> bool:
        """Whether a WebSocket connection's path matches ``open_paths``."""
        try:
            segments = _judged(scope)[1]
        except BadTarget:
            return False
        return self._is_open(segments)

    def _match_model_route(self, original: tuple[str, ...], segments: tuple[str, ...]) -> Route | None:
        for pattern, kind in self._model_routes:
            if len(segments) < len(pattern):
                continue
            tail = segments[-len(pattern) :]
            if all(want == "{name}" or want == got for want, got in zip(pattern, tail, strict=True)):
                # The name as sent (letter case kept): model names are looked up as written.
                name = original[len(segments) - len(pattern) + 1]
                if pattern[0] == "engines":
                    return Route(kind=kind, model=name)
                model = self._deployments.get(name.lower())
                if model is None:
                    return Route(
                        refusal=EndpointNotPriced(
                            f"The deployment {name!r} is not mapped to a model by this gateway.", param="path"
                        )
                    )
                return Route(kind=kind, model=model)
        return None

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


def _glob(pattern: str) -> re.Pattern[str]:
    """``*`` within one segment, ``**`` across segments."""
    if not pattern.startswith("/"):
        raise ValueError(f"open_reads pattern {pattern!r} must start with '/'")
    parts = re.split(r"(\*\*|\*)", pattern.lower())
    text = "".join(".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part) for part in parts)
    return re.compile(text)


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
