"""A streaming reverse proxy to any OpenAI-compatible upstream (an ASGI app).

``create_proxy(upstream)`` forwards every request to ``upstream`` + path, and
streams the answer back chunk by chunk as it arrives: nothing is buffered.
The caller's key is for the gateway, never for the upstream: ``Authorization``
and ``x-api-key`` are dropped and, where ``api_key`` is given, replaced by the
upstream's own key.  Upstream answers pass through with their status and body
(a 429 or a 500 reaches the client as the upstream wrote it); an upstream that
cannot be reached gets a 502, and one that times out a 504, in the error
envelope.

Responses are asked for uncompressed (``Accept-Encoding: identity``) so the
guard in front can read their usage.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
import orjson

__all__ = ["create_proxy", "Proxy"]

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
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        path = scope.get("raw_path") or scope["path"].encode()
        # The upstream URL's own path (e.g. /v1) is already in the client's path.
        url = self.upstream + _base_relative(self.upstream, path.decode("latin-1"))
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        headers = [
            (k, v)
            for k, v in scope.get("headers", ())
            if k.lower() not in _HOP_BY_HOP and k.lower() not in _GATEWAY_CREDENTIALS
        ]
        headers.append((b"accept-encoding", b"identity"))
        if self.api_key:
            headers.append((b"authorization", b"Bearer " + self.api_key.encode("latin-1")))
        client = self._http()
        request = client.build_request(scope["method"], url, headers=headers, content=bytes(body))
        try:
            response = await client.send(request, stream=True)
        except httpx.TimeoutException:
            await _error(send, 504, "upstream_timeout", "The upstream did not answer in time.")
            return
        except httpx.HTTPError as exc:
            await _error(send, 502, "upstream_error", f"The upstream could not be reached: {type(exc).__name__}.")
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP],
                }
            )
            try:
                async for chunk in response.aiter_raw():
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.HTTPError:
                # The upstream broke off mid-answer: end what the client has.
                pass
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _base_relative(upstream: str, path: str) -> str:
    """``/v1/chat/completions`` against an upstream ending in ``/v1`` is
    ``/chat/completions``: the upstream URL names the API root."""
    base_path = httpx.URL(upstream).path.rstrip("/")
    if base_path and path.startswith(base_path + "/"):
        return path[len(base_path) :]
    return path


async def _error(send: Send, status: int, kind: str, message: str) -> None:
    body = orjson.dumps({"error": {"type": kind, "code": kind.upper(), "status": status, "message": message}})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def create_proxy(upstream: str, **options: Any) -> Proxy:
    """A streaming reverse proxy to ``upstream`` (see ``Proxy``)."""
    return Proxy(upstream, **options)
