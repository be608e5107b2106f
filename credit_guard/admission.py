"""The way to the app: ``Exchange`` takes one priced request from its
headers to an open hold, or to an answer in the error envelope.

    identity ─► body ─► shape ─► count ─► quote ─► reserve ─► (settlement.py)
      401       413/415   400     (thread      402 / 503
                                  if large)

All of a request's state lives on its ``Exchange``, never on the guard.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import orjson

from . import shapes, tokens
from ._asgi import Receive, Scope, Send
from ._kept import Kept
from .body import Body, ClientDisconnected, parse_json, read_body, replay
from .errors import (
    AuthenticationFailed,
    CreditGuardError,
    InsufficientCredits,
    StoreUnavailableError,
    error_body,
    error_headers,
    request_id_from,
)
from .money import json_text
from .prices import ModelPrice
from .quote import Quote, affordable_max_tokens, insufficient_credits, make_quote
from .records import key_label
from .routes import EndpointNotPriced
from .settlement import Settlement
from .shapes import Ask
from .stores.base import Hold, Insufficient, StoreUnavailable

if TYPE_CHECKING:
    from .middleware import CreditGuard

__all__ = ["Exchange", "SeenBalances", "exact_quote"]

logger = logging.getLogger("credit_guard")

# Bodies at least this large are first priced by their byte upper bound, where
# it fits the balance with the guard's margin (below this, counting costs less
# than the balance read).
_BOUND_FIRST_BYTES = 8 * 1024
# Bodies at least this large from an account that cannot afford even their byte
# lower bound are refused without being counted.
_FLOOR_FIRST_BYTES = 256 * 1024


class Exchange:
    """One priced request: all its state lives here, never on the guard."""

    __slots__ = (
        "guard",
        "scope",
        "kind",
        "path_model",
        "request_id",
        "model",
        "strip_usage",
        "fit_header",
        "bounded",
        "size",
        "key_label",
        "started_at",
        "offloaded",
        "bounds",
        "_fields",
    )

    def __init__(self, guard: CreditGuard, scope: Scope, kind: str, *, model: str | None = None) -> None:
        self.guard = guard
        self.scope = scope
        self.kind = kind
        # The model the path names (Azure deployments, legacy engines): the one
        # the upstream runs, whatever the body says.
        self.path_model = model
        headers = scope.get("headers", ())
        self.request_id = request_id_from(first_header(headers, b"x-request-id"))
        self.model = "-"
        state = scope.setdefault("state", {})
        state["credit_guard_request_id"] = self.request_id
        # Set on the way to the app, read by the settlement.
        self.strip_usage = False  # the guard asked a stream for usage the client did not
        self.fit_header: bytes | None = None  # auto_fit lowered the output cap
        self.bounded = False  # the quote's input is the byte upper bound, not the exact count
        self.size = 0  # the decoded body's bytes
        self.key_label = "-"  # the caller's key, by a name that is not the secret (usage records)
        self.started_at = time.time()
        self.offloaded: tuple[bytes, ...] | None = None  # a body priced in a worker process (offload.py), in pieces
        self.bounds: tuple[int, int] | None = None  # its input_bounds, from the worker
        self._fields: dict[str, Any] | None = None  # the few fields of it the worker returned

    async def admit(self, receive: Receive, send: Send) -> Settlement | None:
        """Read, price and hold the request: the ``Settlement`` to run the app
        under, or None where it was answered here (refused, or the client
        left) or sent on unpriced (fail-open while the store is down).
        Returning it, rather than running it, ends this frame before the app
        starts: the body object and the locals here are not kept alive for
        the app's whole run (each object alive across it is one more for the
        host's garbage collector to carry)."""
        guard = self.guard
        try:
            account, self.key_label = await self._identify()
            shapes.check_headers(self.scope.get("headers", ()))
            try:
                body = await read_body(self.scope, receive, guard.max_body_bytes)
            except ClientDisconnected:
                return None
            self.size = body.size
            if not guard._warmed:
                await guard.warm()
            if guard.offload_bytes is not None and body.size >= guard.offload_bytes:
                # Handed on in the pieces it arrived in: never joined on the event loop.
                obj, ask, price = await self._understand_elsewhere(body.parts)
            elif body.size >= tokens.THREAD_COUNT_BYTES:
                obj, ask, price = await anyio.to_thread.run_sync(
                    self._understand, body.data, limiter=guard.limiter_for(body.size)
                )
            else:
                obj, ask, price = self._understand(body.data)
            quote = await self._quote(account, ask, price, body.size)
            hold, quote, raw, scope = await self._reserve(account, ask, quote, obj, body)
        except CreditGuardError as error:
            await self.refuse(send, error)
            return None
        if hold is None:
            # Fail-open while the store is down: forwarded unpriced, by choice.
            await guard.app(self.scope, replay(body.chunks, receive), send)
            return None
        if ask.source is not None and not tokens.reads_source(quote.price):
            # Nothing after this reads the parsed body: not kept alive (its
            # dicts and lists, one per message) for the app's whole run.
            ask.source = None
        return Settlement(self, scope, raw, hold, quote, ask)

    async def unpriced(self, receive: Receive, send: Send) -> None:
        """A request to a route that is not priced, under ``unpriced`` =
        ``"authenticate"`` or ``"refuse"``."""
        guard = self.guard
        try:
            await self._identify()
            method = str(self.scope.get("method", "GET")).upper()
            if guard.unpriced == "refuse" and not guard.router.readable(self.scope):
                raise EndpointNotPriced(
                    f"{method} {self.scope.get('path', '')} is not an endpoint this gateway prices or opens.",
                    param="path",
                )
        except CreditGuardError as error:
            await self.refuse(send, error)
            return
        await guard.app(self.scope, receive, send)

    async def websocket(self, receive: Receive, send: Send) -> None:
        """A WebSocket connection under ``unpriced`` = ``"authenticate"`` or
        ``"refuse"``: without a valid key, or under ``"refuse"`` on a path
        ``open_paths`` does not match, it is denied before the app sees it."""
        guard = self.guard
        try:
            await self._identify()
            if guard.unpriced == "refuse" and not guard.router.open_socket(self.scope):
                raise EndpointNotPriced(
                    f"WebSocket {self.scope.get('path', '')} is not an endpoint this gateway prices or opens.",
                    param="path",
                )
        except CreditGuardError as error:
            message = await receive()
            if message["type"] != "websocket.connect":
                return  # the client left first
            if "websocket.http.response" in self.scope.get("extensions", {}):
                # Deny with the error envelope, as for any HTTP request.
                body = error_body(error, self.request_id)
                start = {"type": "websocket.http.response.start", "status": error.status}
                await send({**start, "headers": error_headers(error, self.request_id, body)})
                await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
            else:
                # 1008: policy violation; the server answers the handshake with 403.
                await send({"type": "websocket.close", "code": 1008})
            return
        await guard.app(self.scope, receive, send)

    # -- before the app -------------------------------------------------------

    async def _identify(self) -> tuple[str, str]:
        """The caller's account and key label (the lookup's own label where it
        returns ``(account, label)``, else ``records.key_label``)."""
        headers = self.scope.get("headers", ())
        key = None
        auth = first_header(headers, b"authorization")
        if auth is not None:
            scheme, _, token = auth.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                key = token.strip()
        if key is None:
            api_key = first_header(headers, b"x-api-key")
            if api_key:
                key = api_key.decode("latin-1").strip() or None
        if key is None:
            raise AuthenticationFailed(
                "No API key: send it as 'Authorization: Bearer <key>' or in 'x-api-key'.", param=None
            )
        try:
            account = await self.guard._lookup(key)
        except StoreUnavailable:
            self.guard.metrics.store_error("account_for_key")
            raise StoreUnavailableError(
                "The credit store is unavailable; the request was not forwarded. Retry shortly."
            ) from None
        label = key_label(key)
        if isinstance(account, tuple):
            account, label = account
        if not account:
            raise AuthenticationFailed("The API key is not valid for this gateway.")
        return account, label

    def _understand(self, data: bytes) -> tuple[Any, Ask, ModelPrice]:
        """Parse, shape and resolve the body (pure CPU: runs in a worker thread
        for large bodies)."""
        obj = parse_json(data)
        priced = obj
        if self.path_model is not None and isinstance(obj, dict):
            priced = {**obj, "model": self.path_model}
        ask = shapes.parse(self.kind, priced)
        self.model = ask.model
        return obj, ask, self.guard.resolve(ask)

    async def _understand_elsewhere(self, data: tuple[bytes, ...]) -> tuple[dict[str, Any], Ask, ModelPrice]:
        """``_understand`` in a worker process, for a body so large that parsing
        it would hold the GIL long enough to stall the event loop.  The body
        object returned holds only the fields the way to the app reads."""
        assert self.guard.pricing is not None
        understood = await self.guard.pricing.understand(self.kind, data)
        self.model = understood.ask.model
        self.offloaded = data
        self.bounds = (understood.low, understood.high)
        self._fields = understood.fields
        return understood.fields, understood.ask, self.guard.resolve(understood.ask)

    async def exact_quote(self, ask: Ask, price: ModelPrice) -> Quote:
        """``ask``'s quote on the exact count of its input (this module's ``exact_quote``)."""
        return await exact_quote(self.guard, self.kind, ask, price, self.size, self.offloaded)

    async def _quote(self, account: str, ask: Ask, price: ModelPrice, size: int) -> Quote:
        """The quote to hold: the exact count, unless the body's byte upper
        bound fits the caller's available balance ``bound_margin`` times over.
        Then the bound is held and the count skipped: the decision is the one
        the exact count would make (the bound is never below it), and the hold
        stays a small share of the balance.  The balance is the one the store
        reported with this account's last hold in this process (``SeenBalances``:
        no read at all), or, for a body large enough that counting costs more
        than a read, read now.  Where even the byte lower bound is unaffordable
        on a very large body, the 402 is answered from that bound without
        counting."""
        guard = self.guard
        if guard.bound_margin is None:
            return await self.exact_quote(ask, price)
        available = guard.seen_balances.get(account)
        if available is None and size >= _BOUND_FIRST_BYTES:
            try:
                available = (await guard.store.balance(account)).available
            except StoreUnavailable:
                available = None
        if available is not None:
            low, high = self.bounds or tokens.input_bounds(ask, price)
            ceiling = make_quote(ask, price, high, False)
            if ceiling.max_cost * guard.bound_margin <= available:
                self.bounded = True
                return ceiling
            if size >= _FLOOR_FIRST_BYTES:
                floor = make_quote(ask, price, low, False)
                if floor.max_cost > available:
                    # Even the fewest tokens this body can hold are unaffordable.
                    return floor
        return await self.exact_quote(ask, price)

    async def _reserve(
        self, account: str, ask: Ask, quote: Quote, obj: Any, body: Any
    ) -> tuple[Hold | None, Quote, tuple[bytes, ...], Scope]:
        guard = self.guard
        raw: tuple[bytes, ...] = body.chunks
        scope = self.scope
        result = await self._reserve_once(account, quote)
        if result is None:
            # Fail-open while the store is down: forwarded unpriced, by choice.
            logger.warning(
                "credit_guard.fail_open request_id=%s model=%s: store unavailable, forwarded unpriced",
                self.request_id,
                quote.model,
            )
            return None, quote, raw, scope
        if isinstance(result, Insufficient) and self.bounded:
            # The balance moved since it was read: price the request exactly.
            self.bounded = False
            quote = await self.exact_quote(ask, quote.price)
            result = await self._reserve_once(account, quote)
        elif isinstance(result, Hold) and self.bounded and not _within_margin(result, guard.bound_margin or 1):
            # The bound was held, but the balance it left says the margin did
            # not hold (it was spent since it was seen): the exact count is held
            # in its place, so that the hold stays a small share of the balance.
            result, quote = await self._hold_exactly(account, ask, quote, result)
        if isinstance(result, Insufficient) and guard.auto_fit:
            fitted = self._fit(ask, quote, result)
            if fitted is not None:
                ask, quote = fitted
                obj = dict(await self._whole(obj, body))
                obj[quote.output_param] = quote.max_output_tokens
                if ask.kind == "chat":
                    # Both caps set: the larger one was held, so lower both.
                    for name in ("max_tokens", "max_completion_tokens"):
                        if obj.get(name) is not None:
                            obj[name] = quote.max_output_tokens
                raw = (orjson.dumps(obj),)
                scope = _with_body_headers(scope, raw, decoded=True)
                result = await self._reserve_once(account, quote)
        guard.seen_balances.saw(account, result)
        if result is None:
            raise StoreUnavailableError(
                "The credit store is unavailable; the request was not forwarded. Retry shortly."
            )
        if isinstance(result, Insufficient):
            error = insufficient_credits(
                quote,
                available=result.available,
                held=result.held,
                cheaper=guard.cheaper(quote, ask, result.available),
                billing_url=guard.billing_url,
                suggestions=guard.suggestions,
            )
            context = error.fields["context"]
            reason = context["reason"]
            if reason == "in_flight_holds":
                error.retry_after = guard.retry_after
            guard.metrics.rejected(quote.model, reason, context["credit_deficit"])
            if guard.rejections is not None:
                guard.rejections.add(
                    self.request_id, account, self.key_label, quote.model, reason, quote.max_cost, result.available
                )
            # The figures of the 402 itself, in its JSON's exact text: an
            # operator can match the line to what the caller was told.
            logger.info(
                "credit_guard.rejected request_id=%s account=%s model=%s reason=%s"
                " shortfall=%s required=%s available=%s held=%s",
                self.request_id,
                account,
                quote.model,
                reason,
                json_text(context["credit_deficit"]),
                json_text(context["required_credits"]),
                json_text(context["current_credits"]),
                json_text(context["held_credits"]),
            )
            raise error
        try:
            guard.metrics.hold_opened(quote.model, result.amount)
            if ask.kind == "chat" and ask.stream and not ask.include_usage and guard.inject_usage:
                spliceable = _can_splice(obj, raw, raw is body.chunks and body.decoded is None)
                if not spliceable:
                    obj = await self._whole(obj, body)  # edited whole, not spliced
                raw, scope = _ask_for_usage(scope, obj, raw, spliceable=spliceable)
                self.strip_usage = True
        except BaseException:
            # The app will not run after all (a metrics hook that raised, a
            # request cancelled here): the hold ends now, not by expiring.
            await self._let_go(result)
            raise
        return result, quote, raw, scope

    async def _hold_exactly(self, account: str, ask: Ask, bounded: Quote, hold: Hold) -> tuple[Hold, Quote]:
        """The exact count held in place of the bound ``hold`` (released once
        the exact hold is made); the bound stays held where the exact one
        cannot be made beside it, since the request was admitted on it."""
        try:
            quote = await self.exact_quote(ask, bounded.price)
            exact = await self._reserve_once(account, quote)
        except BaseException:
            # Refused (the store went down, failing closed) or cancelled: the
            # request will not run on the bound hold either.
            await self._let_go(hold)
            raise
        if not isinstance(exact, Hold):
            return hold, bounded
        self.bounded = False
        try:
            await self.guard.store.release(hold)
        except StoreUnavailable:
            # The bound hold ends by expiring, after its TTL.
            self._release_failed(hold)
            return exact, quote
        except BaseException:
            await self._let_go(hold, exact)
            raise
        if exact.available is not None:
            # What the account has left now that the bound is back.
            exact = replace(exact, available=exact.available + hold.amount)
        return exact, quote

    async def _let_go(self, *holds: Hold) -> None:
        """Release ``holds`` of a request that will not run, whatever cancels
        it meanwhile (releases are idempotent: one already made is answered
        as a repeat).  One the store cannot release ends by expiring."""
        with anyio.CancelScope(shield=True):
            for hold in holds:
                try:
                    await self.guard.store.release(hold)
                except StoreUnavailable:
                    self._release_failed(hold)
                except Exception:
                    logger.exception(
                        "credit_guard.release_error request_id=%s hold=%s: the hold will expire",
                        self.request_id,
                        hold.id,
                    )

    def _release_failed(self, hold: Hold) -> None:
        self.guard.metrics.store_error("release")
        logger.warning(
            "credit_guard.release_failed request_id=%s hold=%s: the hold will expire", self.request_id, hold.id
        )

    async def _whole(self, obj: Any, body: Body) -> Any:
        """The whole body object, where ``obj`` holds only the fields of an
        offloaded body: parsed again in a thread (a rewrite of such a body is
        rare).  The worker already checked it strictly."""
        if obj is not self._fields or self._fields is None:
            return obj
        return await anyio.to_thread.run_sync(_load, body, limiter=self.guard.limiter_for(body.size))

    async def _reserve_once(self, account: str, quote: Quote) -> Hold | Insufficient | None:
        """Reserve the quote's worst case.  None when the store is down and the
        guard fails open; ``StoreUnavailableError`` when it fails closed."""
        guard = self.guard
        try:
            return await guard.store.reserve(account, quote.max_cost, ttl=guard.hold_ttl)
        except StoreUnavailable:
            guard.metrics.store_error("reserve")
            if guard.fail_open:
                return None
            raise StoreUnavailableError(
                "The credit store is unavailable; the request was not forwarded. Retry shortly."
            ) from None

    def _fit(self, ask: Ask, quote: Quote, short: Insufficient) -> tuple[Ask, Quote] | None:
        """The request with its output cap lowered to what the balance affords."""
        fits = affordable_max_tokens(quote, short.available)
        if fits is None:
            return None
        new_ask = replace(ask, output_tokens=fits, output_param=quote.output_param)
        new_quote = make_quote(new_ask, quote.price, quote.input_tokens, quote.input_exact)
        self.fit_header = f"{quote.output_param}={fits}".encode()
        return new_ask, new_quote

    async def refuse(self, send: Send, error: CreditGuardError) -> None:
        if not isinstance(error, InsufficientCredits):
            self.guard.metrics.rejected(self.model, error.type, None)
        body = error_body(error, self.request_id)
        await send(
            {
                "type": "http.response.start",
                "status": error.status,
                "headers": error_headers(error, self.request_id, body),
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})


async def exact_quote(
    guard: CreditGuard, kind: str, ask: Ask, price: ModelPrice, size: int, offloaded: tuple[bytes, ...] | None
) -> Quote:
    """``ask``'s quote on the exact count of its input (``tokens.count_input``),
    counted off the event loop for a large body of ``size`` bytes: in the worker
    processes for an ``offloaded`` one (its ``ask`` holds no texts), in a worker
    thread for one of ``tokens.THREAD_COUNT_BYTES`` or more."""
    if offloaded is not None:
        assert guard.pricing is not None
        count = await guard.pricing.count(kind, offloaded)
    elif size >= tokens.THREAD_COUNT_BYTES:
        limiter = guard.limiter_for(size)
        count = await anyio.to_thread.run_sync(tokens.count_input, ask, price, limiter=limiter)
    else:
        count = tokens.count_input(ask, price)
    return make_quote(ask, price, count.tokens, count.exact)


def _within_margin(hold: Hold, margin: int) -> bool:
    """Whether ``hold`` was at most a ``margin``-th of the balance available
    when it was made (what it left, plus itself)."""
    return hold.available is None or hold.amount * margin <= hold.available + hold.amount


class SeenBalances:
    """The available balance each account's last hold (or refusal) left, as
    the store reported it: what ``Exchange._quote`` checks the byte bound
    against without reading the store.  It is a hint, never a decision: the
    store's reserve is atomic and refuses what does not fit, and a hold whose
    balance turns out thinner than the hint is re-priced exactly.  At most
    ``accounts`` are kept, the least recently seen dropped first."""

    def __init__(self, accounts: int = 65_536) -> None:
        self.accounts = accounts
        # Out of the garbage collector's sight (see ``_kept``).
        self._available: Kept[str, Decimal] = Kept()

    def get(self, account: str) -> Decimal | None:
        return self._available.get(account)

    def saw(self, account: str, result: Hold | Insufficient | None) -> None:
        """Note what a reserve reported about ``account``'s balance."""
        available = result.available if result is not None else None
        seen = self._available
        if available is None:
            seen.pop(account)
            return
        seen.put(account, available)
        if len(seen) > self.accounts:
            seen.pop_oldest()


def first_header(headers: Any, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def _load(body: Body) -> Any:
    return orjson.loads(body.data)


def _with_body_headers(scope: Scope, raw: tuple[bytes, ...], *, decoded: bool) -> Scope:
    """A copy of ``scope`` whose headers describe ``raw`` (a body the guard
    rewrote): its length, and no content encoding."""
    drop = {b"content-length", b"transfer-encoding"}
    if decoded:
        drop.add(b"content-encoding")
    headers = [(k, v) for k, v in scope.get("headers", ()) if k not in drop]
    headers.append((b"content-length", str(sum(map(len, raw))).encode()))
    new = dict(scope)
    new["headers"] = headers
    return new


def _can_splice(obj: dict[str, Any], raw: tuple[bytes, ...], unchanged: bool) -> bool:
    """Whether ``stream_options`` can be spliced into ``raw`` (the bytes the
    client sent, ``unchanged``): only where the body has none at all, in any
    spelling.  Beside a caller's ``null`` it would be a duplicate key, and an
    upstream that keeps the last one reads no include_usage."""
    return unchanged and "stream_options" not in obj and bool(raw) and raw[0][:1] == b"{"


def _ask_for_usage(
    scope: Scope, obj: dict[str, Any], raw: tuple[bytes, ...], *, spliceable: bool
) -> tuple[tuple[bytes, ...], Scope]:
    """The body with ``stream_options.include_usage`` set, and a scope to match.
    The upstream sees exactly one ``stream_options``: spliced in where the client
    sent none (``spliceable``, from ``_can_splice``), else the client's (``null``,
    ``{"include_usage": false}``) replaced in the whole body ``obj``."""
    if spliceable:
        # Splice the field in, leaving every byte the client sent as it was
        # (and in the pieces it came in: a large body is not copied here).
        rest = tuple(piece for piece in (raw[0][1:], *raw[1:]) if piece)
        first = next((piece.lstrip()[:1] for piece in rest if piece.lstrip()), b"")
        sep = b"," if first != b"}" else b""
        new = (b'{"stream_options":{"include_usage":true}' + sep, *rest)
        return new, _with_body_headers(scope, new, decoded=False)
    edited = dict(obj)
    options = obj.get("stream_options")
    edited["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    new = (orjson.dumps(edited),)
    return new, _with_body_headers(scope, new, decoded=True)
