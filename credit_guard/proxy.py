"""A streaming reverse proxy to any OpenAI-compatible upstream (an ASGI app).

``create_proxy(upstream)`` forwards every request to ``upstream`` + path, and
streams the answer back chunk by chunk as it arrives: nothing is buffered.

The path forwarded is the one the guard priced: ``routes.target_segments`` of
the request, re-encoded, below the upstream URL's own path; a target that is
not a plain path gets a 400, and a URL whose scheme, host or port is not the
upstream's is never requested (400), so no request target can send the
upstream key elsewhere.

The caller's key is for the gateway, never for the upstream: ``Authorization``
and ``x-api-key`` are dropped and, where ``api_key`` is given, replaced by the
upstream's own key.  Upstream answers pass through with their status and body
(a 429 or a 500 reaches the client as the upstream wrote it), except where they
concern the gateway's own upstream account: a 401, 402 or 403 becomes a 502
``UPSTREAM_REJECTED`` (the upstream body, which may show that account's
figures, is not passed on), and the upstream's own ``X-Credits-*``,
``X-Credit-Guard-*``, ``Date`` and ``Server`` headers are dropped.  An upstream
that cannot be reached gets a 502, and one that times out a 504, in the error
envelope.

``GATEWAY_OPEN_READS`` and ``gateway_policy`` are the guard settings every
deployment of this proxy uses (``credit-guard serve`` and the examples).

Responses are asked for uncompressed (``Accept-Encoding: identity``) so the
guard in front can read their usage.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import quote

import httpx

from .errors import CreditGuardError, error_body, error_headers, request_id_from
from .routes import BadTarget, target_segments

__all__ = ["create_proxy", "gateway_policy", "GATEWAY_OPEN_READS", "Proxy", "UpstreamRejected"]

#: The bodiless reads a gateway forwards with its own upstream key: the model
#: list and one model.  Others (``GET /v1/chat/completions`` lists stored
#: completions, ``/v1/files``, ``/v1/batches``, ``/v1/responses/{id}``) would
#: show one caller what another stored under the same upstream account.
GATEWAY_OPEN_READS: tuple[str, ...] = ("/v1/models", "/v1/models/*", "/models", "/models/*")


def gateway_policy(allow_read: Iterable[str] = ()) -> dict[str, Any]:
    """The ``CreditGuard`` options for a guard in front of this proxy: nothing
    anonymous and nothing unpriced reaches the upstream, and of bodiless reads
    only ``GATEWAY_OPEN_READS`` and ``allow_read`` (glob patterns)."""
    return {"unpriced": "refuse", "open_reads": GATEWAY_OPEN_READS + tuple(allow_read)}


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"accept-encoding",
    }
)
_GATEWAY_CREDENTIALS = frozenset({b"authorization", b"x-api-key", b"api-key"})
# Response headers that are the guard's (or the server's) to write, not the upstream's.
_UPSTREAM_OWN = frozenset({b"date", b"server"})
_UPSTREAM_OWN_PREFIXES = (b"x-credits-", b"x-credit-guard-")
# Upstream statuses about the gateway's own upstream account, not the caller.
_REJECTED = frozenset({401, 402, 403})
# Response codings the proxy undoes, so that the guard reads the usage.
_DECODED = frozenset({"gzip", "x-gzip", "deflate", "identity"})
# Path segments are re-encoded with these left as they are (RFC 3986 pchar).
_SEGMENT_SAFE = "!$&'()*+,=:@~"


class UpstreamError(CreditGuardError):
    status = 502
    type = "upstream_error"
    code = "UPSTREAM_ERROR"


class UpstreamTimeout(CreditGuardError):
    status = 504
    type = "upstream_timeout"
    code = "UPSTREAM_TIMEOUT"


class UpstreamRejected(UpstreamError):
    """The upstream refused the gateway's own credentials or account (401, 402,
    403): the gateway's problem, not the caller's balance."""

    code = "UPSTREAM_REJECTED"


class Proxy:
    """The proxy app.  ``timeout``: seconds between bytes from the upstream
    before a 504 (a long generation streams, so this is not the total time).
    It need not fit in the guard's hold TTL: the guard extends a request's hold
    on a timer for as long as the request runs, silent or not.

    Raises ``ValueError`` for an upstream that is not an http(s) URL or a
    timeout that is not positive."""

    def __init__(
        self,
        upstream: str,
        *,
        api_key: str | None = None,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not upstream.startswith(("http://", "https://")):
            raise ValueError(f"the upstream must be an http:// or https:// URL, not {upstream!r}")
        if timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self.upstream = upstream.rstrip("/")
        self._base = httpx.URL(self.upstream)
        if not self._base.host or self._base.query or self._base.fragment or self._base.userinfo:
            raise ValueError(f"the upstream must be a plain http(s)://host[:port][/path] URL, not {upstream!r}")
        # Its own path (e.g. /v1) names the API root.
        self._base_segments = tuple(segment for segment in self._base.path.split("/") if segment)
        self.api_key = api_key
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                transport=self._transport,
                limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            url = self.url_for(scope)
        except CreditGuardError as error:
            await _error(send, scope, error)
            return
        pieces: list[bytes] = []  # joined once: a large body is copied once, not twice
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            pieces.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        headers = [
            (k, v)
            for k, v in scope.get("headers", ())
            if k.lower() not in _HOP_BY_HOP and k.lower() not in _GATEWAY_CREDENTIALS
        ]
        headers.append((b"accept-encoding", b"identity"))
        if self.api_key:
            headers.append((b"authorization", b"Bearer " + self.api_key.encode("latin-1")))
        client = self._http()
        request = client.build_request(scope["method"], url, headers=headers, content=b"".join(pieces))
        try:
            response = await client.send(request, stream=True)
        except httpx.TimeoutException:
            await _error(send, scope, UpstreamTimeout("The upstream did not answer in time."))
            return
        except httpx.HTTPError as exc:
            await _error(send, scope, UpstreamError(f"The upstream could not be reached: {type(exc).__name__}."))
            return
        if response.status_code in _REJECTED:
            # Its body describes the gateway's upstream account: not passed on.
            await response.aclose()
            text = (
                f"The upstream refused this gateway's own credentials or account (HTTP {response.status_code})."
                " This is not about your balance; nothing was charged. Tell the gateway's operator."
            )
            await _error(send, scope, UpstreamRejected(text))
            return
        # An upstream that compresses its answer despite ``identity`` would
        # hide the usage from the guard's tap: gzip and deflate are passed on
        # decoded (any other coding as it came).
        codings = {c.strip().lower() for c in response.headers.get("content-encoding", "").split(",") if c.strip()}
        decode = bool(codings) and codings <= _DECODED
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [(k, v) for k, v in response.headers.raw if _passes(k.lower(), decode)],
                }
            )
            try:
                chunks = response.aiter_bytes() if decode else response.aiter_raw()
                async for chunk in chunks:
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.HTTPError:
                # The upstream broke off mid-answer: end what the client has.
                pass
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    def url_for(self, scope: Scope) -> httpx.URL:
        """The upstream URL of a request: the upstream's base, then the path
        segments the guard priced (``/v1/chat/completions`` against an upstream
        ending in ``/v1`` is ``/v1/chat/completions``, not ``/v1/v1/...``),
        then the query as sent.  Raises ``BadTarget`` for a target that is not
        a plain path or for a URL that would leave the upstream's scheme, host
        or port."""
        segments = target_segments(scope)
        base = self._base_segments
        if base and tuple(s.lower() for s in segments[: len(base)]) == tuple(s.lower() for s in base):
            segments = segments[len(base) :]
        path = "/" + "/".join(quote(segment, safe=_SEGMENT_SAFE) for segment in (*base, *segments))
        raw = path.encode("ascii")
        if scope.get("query_string"):
            raw += b"?" + scope["query_string"]
        url = self._base.copy_with(raw_path=raw)
        if (url.scheme, url.host, url.port) != (self._base.scheme, self._base.host, self._base.port):
            raise BadTarget("The request target would leave the upstream; it is refused.", param="path")
        return url

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _passes(name: bytes, decoded: bool = False) -> bool:
    if decoded and name == b"content-encoding":
        return False  # the body is passed on decoded
    return name not in _HOP_BY_HOP and name not in _UPSTREAM_OWN and not name.startswith(_UPSTREAM_OWN_PREFIXES)


async def _error(send: Send, scope: Scope, error: CreditGuardError) -> None:
    state = scope.get("state") or {}
    request_id = state.get("credit_guard_request_id") or request_id_from(
        next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), None)
    )
    body = error_body(error, request_id)
    headers = error_headers(error, request_id, body)
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def create_proxy(upstream: str, **options: Any) -> Proxy:
    """A streaming reverse proxy to ``upstream`` (see ``Proxy``)."""
    return Proxy(upstream, **options)
