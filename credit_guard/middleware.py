"""``CreditGuard``: the pure ASGI middleware that holds credits around each
priced request.

    request ─► identity ─► body ─► shape ─► count ─► quote ─► reserve ─► app ─► usage ─► settle
                  401      413/415   400      (thread      402 /503    (body      (JSON    (in finally,
                                              if large)                replayed)   or SSE)  shielded)

Non-HTTP scopes and routes that are not priced pass straight to the app.  A
priced request either gets an answer in the error envelope from the guard (the
app never runs) or reaches the app with its worst case held; the hold then ends
in ``finally``: settled on the usage the response reports (or that the guard
counted), released when the app failed or the upstream answered an error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import replace
from decimal import Decimal
from typing import Any

import anyio
import anyio.to_thread
import orjson

from . import shapes, tokens
from .body import ClientDisconnected, parse_json, read_body, replay
from .errors import (
    AuthenticationFailed,
    CreditGuardError,
    InsufficientCredits,
    InvalidRequest,
    ModelNotPricedError,
    StoreUnavailableError,
    error_body,
    error_headers,
    request_id_from,
)
from .metrics import Metrics, NullMetrics
from .prices import ModelNotPriced, ModelPrice, PriceTable
from .quote import (
    Quote,
    Suggestions,
    affordable_max_tokens,
    cheapest_alternative,
    insufficient_credits,
    make_quote,
)
from .routes import DEFAULT_ROUTES, EndpointNotPriced, Router, has_body
from .shapes import Ask
from .stores.base import DEFAULT_HOLD_TTL, CreditStore, Hold, Insufficient, StoreUnavailable
from .usage import Usage, UsageTap

__all__ = ["CreditGuard", "DEFAULT_ROUTES"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
AccountLookup = Callable[[str], Awaitable[str | None]]

logger = logging.getLogger("credit_guard")

# Bodies at least this large are parsed and counted in a worker thread, off the
# event loop.
_THREAD_COUNT_BYTES = 32 * 1024
# Bodies at least this large are first priced by their byte bounds: where the
# bounds already decide, the exact count is skipped.
_BOUND_FIRST_BYTES = 256 * 1024
# Pauses between attempts to end a hold while the store fails (None: give up).
_SETTLE_RETRIES: tuple[float | None, ...] = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, None)
# Shapes a model of each table kind can serve.
_SERVES = {
    "chat": {"chat", "responses", "anthropic", "completion"},
    "responses": {"chat", "responses", "anthropic"},
    "completion": {"completion"},
    "embedding": {"embedding"},
}


class CreditGuard:
    """Wraps ``app`` so that no priced request reaches it without its worst case
    held on the caller's account.

    ``prices``: the ``PriceTable`` (default: the bundled one).  ``store``: where
    credits live.  ``accounts``: API key -> account, as a mapping or an async
    callable returning the account or None (default: the store's own keys).
    ``routes``: path -> shape (``"chat"``, ``"completion"``, ``"embedding"``,
    ``"responses"``, ``"anthropic"``), priced for POST and matched at the end of
    the normalised path (see ``routes.py`` for what fails closed);
    ``open_paths``: glob patterns below priced routes to pass unpriced.

    How a hold ends: usage the response reports is charged; a successful
    response without usage is charged for its input and the output the guard
    counted in it; a client that leaves mid-response is charged for its input
    and the output it was sent.  ``on_app_error`` decides when the app raises or
    answers an error status before any output: ``"release"`` (default: charge
    nothing) or ``"charge_input"``.  ``on_abort`` decides when the client leaves
    before any output: ``"charge_input"`` (default: leaving early does not make
    a request free) or ``"release"``.  ``fail_open`` forwards requests unpriced while the
    store is unreachable (default: refuse with 503).  ``auto_fit`` lowers an
    unaffordable output cap to the affordable one instead of answering 402.
    ``inject_usage`` asks a chat stream's upstream for usage when the client did
    not (and hides it from the client).

    Requests to routes that are not priced: ``unpriced="pass"`` (default) hands
    them to the app untouched, as a library wrapping an app wants (health
    checks, pages); ``"authenticate"`` requires a valid key for them too;
    ``"refuse"`` also refuses every one that is not a bodiless read (``GET``,
    ``HEAD``, ``OPTIONS``), as a gateway in front of a paid upstream wants:
    an unpriced ``POST /v1/images/generations`` would otherwise be paid by the
    gateway.

    Raises ``ValueError`` here, at construction, for any invalid setting.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        store: CreditStore,
        prices: PriceTable | None = None,
        accounts: Mapping[str, str] | AccountLookup | None = None,
        routes: Mapping[str, str] | None = None,
        open_paths: tuple[str, ...] = ("/v1/messages/count_tokens",),
        max_body_bytes: int = 16 * 1024 * 1024,
        hold_ttl: float = DEFAULT_HOLD_TTL,
        billing_url: str | None = None,
        suggestions: Suggestions | None = None,
        suggest_models: bool = True,
        on_app_error: str = "release",
        on_abort: str = "charge_input",
        fail_open: bool = False,
        auto_fit: bool = False,
        inject_usage: bool = True,
        low_balance_threshold: Decimal | str | int | None = None,
        retry_after: int = 5,
        unpriced: str = "pass",
        metrics: Metrics | None = None,
    ) -> None:
        from .money import parse_amount

        self.app = app
        self.store = store
        self.prices = prices if prices is not None else PriceTable.default()
        if accounts is None:
            self._lookup: AccountLookup = store.account_for_key
        elif isinstance(accounts, Mapping):
            table = dict(accounts)

            async def lookup(key: str) -> str | None:
                return table.get(key)

            self._lookup = lookup
        elif callable(accounts):
            self._lookup = accounts
        else:
            raise ValueError("accounts must be a mapping, an async callable, or None")
        self.routes = dict(DEFAULT_ROUTES if routes is None else routes)
        self.router = Router(self.routes, open_paths=open_paths)
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be positive")
        if hold_ttl <= 0:
            raise ValueError("hold_ttl must be positive")
        for name, policy in (("on_app_error", on_app_error), ("on_abort", on_abort)):
            if policy not in ("release", "charge_input"):
                raise ValueError(f"{name} must be 'release' or 'charge_input'")
        self.max_body_bytes = max_body_bytes
        self.hold_ttl = float(hold_ttl)
        self.billing_url = billing_url
        self.suggestions = suggestions or Suggestions()
        self.suggest_models = suggest_models
        self.on_app_error = on_app_error
        self.on_abort = on_abort
        self.fail_open = fail_open
        self.auto_fit = auto_fit
        self.inject_usage = inject_usage
        self.low_balance_threshold = (
            None if low_balance_threshold is None else parse_amount(low_balance_threshold, what="threshold")
        )
        self.retry_after = retry_after
        if unpriced not in ("pass", "authenticate", "refuse"):
            raise ValueError("unpriced must be 'pass', 'authenticate' or 'refuse'")
        self.unpriced = unpriced
        self.metrics = metrics or NullMetrics()
        self._warmed = False

    async def warm(self) -> None:
        """Load the tokenizer files now, in a worker thread (otherwise the first
        priced request does it, also off the event loop)."""
        if not self._warmed:
            await anyio.to_thread.run_sync(tokens.warm)
            self._warmed = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self.router.classify(scope)
        if route.refusal is not None:
            await _Exchange(self, scope, "-").refuse(send, route.refusal)
            return
        if route.kind is None:
            if self.unpriced != "pass":
                await _Exchange(self, scope, "-").unpriced(receive, send)
                return
            await self.app(scope, receive, send)
            return
        await _Exchange(self, scope, route.kind).run(receive, send)

    # -- used by _Exchange ---------------------------------------------------

    def resolve(self, ask: Ask) -> ModelPrice:
        try:
            price = self.prices.resolve(ask.model)
        except ModelNotPriced as exc:
            raise ModelNotPricedError(
                f"The model {ask.model!r} is not priced by this gateway ({exc.reason}).", param="model"
            ) from None
        if ask.kind not in _SERVES.get(price.kind, {price.kind}):
            raise InvalidRequest(
                f"The model {ask.model!r} is a {price.kind} model; it cannot serve this endpoint.",
                param="model",
            )
        return price

    def cheaper(self, quote: Quote, ask: Ask, available: Decimal) -> tuple[str, Decimal] | None:
        if not self.suggest_models:
            return None
        price = quote.price

        def requote(candidate: ModelPrice) -> Quote | None:
            # Same encoding and bound rule: the input count holds for it too.
            if candidate.encoding != price.encoding or candidate.token_bound != price.token_bound:
                return None
            if (ask.images or quote.input_exact is False) and candidate.vision != price.vision:
                return None
            try:
                return make_quote(ask, candidate, quote.input_tokens, quote.input_exact)
            except CreditGuardError:
                return None

        return cheapest_alternative(quote, self.prices.alternatives(price), available, requote)


class _Exchange:
    """One priced request: all its state lives here, never on the guard."""

    def __init__(self, guard: CreditGuard, scope: Scope, kind: str) -> None:
        self.guard = guard
        self.scope = scope
        self.kind = kind
        headers = scope.get("headers", ())
        self.request_id = request_id_from(_first(headers, b"x-request-id"))
        self.model = "-"
        state = scope.setdefault("state", {})
        state["credit_guard_request_id"] = self.request_id

    async def run(self, receive: Receive, send: Send) -> None:
        guard = self.guard
        try:
            account = await self._identify()
            try:
                body = await read_body(self.scope, receive, guard.max_body_bytes)
            except ClientDisconnected:
                return
            if not guard._warmed:
                await guard.warm()
            if len(body.data) >= _THREAD_COUNT_BYTES:
                obj, ask, price = await anyio.to_thread.run_sync(self._understand, body.data)
                quote = await self._quote_large(account, ask, price, len(body.data))
            else:
                obj, ask, price = self._understand(body.data)
                count = tokens.count_input(ask, price)
                quote = make_quote(ask, price, count.tokens, count.exact)
            hold, quote, raw, scope = await self._reserve(account, ask, quote, obj, body)
        except CreditGuardError as error:
            await self.refuse(send, error)
            return
        if hold is None:
            # Fail-open while the store is down: forwarded unpriced, by choice.
            await guard.app(self.scope, replay(body.raw, receive), send)
            return
        await self._forward(scope, replay(raw, receive), send, hold, quote, ask)

    async def unpriced(self, receive: Receive, send: Send) -> None:
        """A request to a route that is not priced, under ``unpriced`` =
        ``"authenticate"`` or ``"refuse"``."""
        guard = self.guard
        try:
            await self._identify()
            method = str(self.scope.get("method", "GET")).upper()
            if guard.unpriced == "refuse" and (method not in ("GET", "HEAD", "OPTIONS") or has_body(self.scope)):
                raise EndpointNotPriced(
                    f"{method} {self.scope.get('path', '')} is not an endpoint this gateway prices.", param="path"
                )
        except CreditGuardError as error:
            await self.refuse(send, error)
            return
        await guard.app(self.scope, receive, send)

    # -- before the app -------------------------------------------------------

    async def _identify(self) -> str:
        headers = self.scope.get("headers", ())
        key = None
        auth = _first(headers, b"authorization")
        if auth is not None:
            scheme, _, token = auth.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                key = token.strip()
        if key is None:
            api_key = _first(headers, b"x-api-key")
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
        if not account:
            raise AuthenticationFailed("The API key is not valid for this gateway.")
        return account

    def _understand(self, data: bytes) -> tuple[Any, Ask, ModelPrice]:
        """Parse, shape and resolve the body (pure CPU: runs in a worker thread
        for large bodies)."""
        obj = parse_json(data)
        ask = shapes.parse(self.kind, obj)
        self.model = ask.model
        return obj, ask, self.guard.resolve(ask)

    async def _quote_large(self, account: str, ask: Ask, price: ModelPrice, size: int) -> Quote:
        """A large body's quote: its byte bounds first, where they decide; the
        exact count, in a worker thread, where they do not."""
        if size >= _BOUND_FIRST_BYTES:
            low, high = tokens.input_bounds(ask, price)
            try:
                available = (await self.guard.store.balance(account)).available
            except StoreUnavailable:
                available = None
            if available is not None:
                floor = make_quote(ask, price, low, False)
                if floor.max_cost > available:
                    # Even the fewest tokens this body can hold are unaffordable.
                    return floor
                ceiling = make_quote(ask, price, high, False)
                if ceiling.max_cost <= available:
                    self._bounded = True
                    return ceiling
        count = await anyio.to_thread.run_sync(tokens.count_input, ask, price)
        return make_quote(ask, price, count.tokens, count.exact)

    async def _reserve(
        self, account: str, ask: Ask, quote: Quote, obj: Any, body: Any
    ) -> tuple[Hold | None, Quote, bytes, Scope]:
        guard = self.guard
        raw: bytes = body.raw
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
        if isinstance(result, Insufficient) and self._bounded:
            # The balance moved since it was read: price the request exactly.
            self._bounded = False
            count = await anyio.to_thread.run_sync(tokens.count_input, ask, quote.price)
            quote = make_quote(ask, quote.price, count.tokens, count.exact)
            result = await self._reserve_once(account, quote)
        if isinstance(result, Insufficient) and guard.auto_fit:
            fitted = self._fit(ask, quote, result)
            if fitted is not None:
                ask, quote = fitted
                obj = dict(obj)
                obj[quote.output_param] = quote.max_output_tokens
                raw = orjson.dumps(obj)
                scope = _with_body_headers(scope, raw, decoded=True)
                result = await self._reserve_once(account, quote)
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
            reason = error.fields["context"]["reason"]
            if reason == "in_flight_holds":
                error.retry_after = guard.retry_after
            guard.metrics.rejected(quote.model, reason, quote.max_cost - result.available)
            logger.info(
                "credit_guard.rejected request_id=%s account=%s model=%s reason=%s required=%s available=%s",
                self.request_id,
                account,
                quote.model,
                reason,
                quote.max_cost,
                result.available,
            )
            raise error
        guard.metrics.hold_opened(quote.model, result.amount)
        if ask.kind == "chat" and ask.stream and not ask.include_usage and guard.inject_usage:
            raw, scope = _ask_for_usage(scope, obj, raw, spliceable=raw is body.raw and body.raw == body.data)
            self._strip_usage = True
        return result, quote, raw, scope

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
        self._fit_header = f"{quote.output_param}={fits}".encode()
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

    # -- the app, and the end of the hold -------------------------------------

    _strip_usage = False
    _fit_header: bytes | None = None
    # The quote's input is the byte upper bound, not the exact count.
    _bounded = False

    async def _forward(self, scope: Scope, receive: Receive, send: Send, hold: Hold, quote: Quote, ask: Ask) -> None:
        guard = self.guard
        tap = UsageTap(ask.kind, strip_usage=self._strip_usage)
        extended_at = time.monotonic()
        extend_every = guard.hold_ttl / 3

        async def tapped_send(message: Message) -> None:
            nonlocal extended_at
            if message["type"] == "http.response.start":
                message = tap.start(dict(message))
                message["headers"] = self._response_headers(list(message.get("headers", ())), hold)
            elif message["type"] == "http.response.body":
                chunk = tap.body(message.get("body", b""), message.get("more_body", False))
                if chunk is not message.get("body", b""):
                    message = dict(message)
                    message["body"] = chunk
                now = time.monotonic()
                if now - extended_at > extend_every and message.get("more_body", False):
                    # A long stream keeps its hold alive.
                    extended_at = now
                    try:
                        await guard.store.extend(hold, guard.hold_ttl)
                    except StoreUnavailable:
                        guard.metrics.store_error("extend")
            await send(message)

        failed: BaseException | None = None
        try:
            await guard.app(scope, receive, tapped_send)
        except BaseException as exc:
            failed = exc
            raise
        finally:
            with anyio.CancelScope(shield=True):
                await self._finish(hold, quote, ask, tap, failed)

    def _response_headers(self, headers: list[tuple[bytes, bytes]], hold: Hold) -> list[tuple[bytes, bytes]]:
        guard = self.guard
        names = {k.lower() for k, _ in headers}
        if b"x-request-id" not in names:
            headers.append((b"x-request-id", self.request_id.encode("latin-1")))
        if hold.available is not None:
            from .money import json_text

            headers.append((b"x-credits-remaining", json_text(hold.available).encode()))
            if guard.low_balance_threshold is not None and hold.available < guard.low_balance_threshold:
                headers.append((b"x-credits-low", b"true"))
        if self._fit_header is not None:
            headers.append((b"x-credit-guard-adjusted", self._fit_header))
        return headers

    async def _finish(self, hold: Hold, quote: Quote, ask: Ask, tap: UsageTap, failed: BaseException | None) -> None:
        """End the hold (see the class docstring of ``CreditGuard`` for the rule)."""
        guard = self.guard
        price = quote.price
        aborted = failed is not None and _is_cancellation(failed)
        usage = tap.usage
        produced = bool(tap.texts)
        if usage is None and 0 < tap.status < 400 and (failed is None or produced):
            # No usage reported: the input as counted, and the output as seen.
            output = await _count_output(tap.texts, price)
            input_tokens = quote.input_tokens
            if self._bounded:
                # The hold used the byte bound; the charge uses the exact count.
                input_tokens = (await anyio.to_thread.run_sync(tokens.count_input, ask, price)).tokens
            usage = Usage(input_tokens=input_tokens, output_tokens=output)
        policy = guard.on_abort if aborted else guard.on_app_error
        charge: Decimal | None = None
        if usage is not None:
            charge = actual_cost(price, usage)
        elif (failed is not None or tap.status >= 400) and policy == "charge_input":
            charge = quote.input_cost
        settlement = None
        # Settle and release are idempotent, so a store that failed for a moment
        # (a Redis restart, a locked SQLite file) is simply asked again.
        for delay in _SETTLE_RETRIES:
            try:
                if charge is not None:
                    settlement = await guard.store.settle(hold, charge)
                else:
                    settlement = await guard.store.release(hold)
                break
            except StoreUnavailable:
                guard.metrics.store_error("settle")
                if delay is None:
                    break
                await anyio.sleep(delay)
        if settlement is None:
            # The hold stays in the store and expires after its TTL; the line
            # below is what reconciliation needs.
            logger.error(
                "credit_guard.settle_failed request_id=%s account=%s hold=%s charge=%s: the hold will expire",
                self.request_id,
                hold.account,
                hold.id,
                "release" if charge is None else charge,
            )
            return
        guard.metrics.hold_finished(quote.model, settlement.status, settlement.charged, settlement.overrun)
        if settlement.late or settlement.status == "expired":
            # The hold had lapsed before the request ended (a stalled stream, a
            # store outage longer than the TTL).
            guard.metrics.holds_expired(1)
        if settlement.overrun > 0:
            logger.warning(
                "credit_guard.overrun request_id=%s account=%s model=%s held=%s charged=%s",
                self.request_id,
                hold.account,
                quote.model,
                hold.amount,
                settlement.charged,
            )


def actual_cost(price: ModelPrice, usage: Usage) -> Decimal:
    """The cost of reported usage: cached input at the cached price where the
    table has one, reasoning output at the reasoning price where it has one."""
    cached = min(usage.cached_tokens, usage.input_tokens)
    cached_price = price.cached_input_price if price.cached_input_price is not None else price.input_price
    reasoning = min(usage.reasoning_tokens, usage.output_tokens)
    reasoning_price = price.reasoning_output_price if price.reasoning_output_price is not None else price.output_price
    return (
        price.input_price * (usage.input_tokens - cached)
        + cached_price * cached
        + price.output_price * (usage.output_tokens - reasoning)
        + reasoning_price * reasoning
    )


async def _count_output(texts: list[str], price: ModelPrice) -> int:
    """Output tokens in generated text the response did not count for us."""
    if not texts:
        return 0
    if sum(len(t) for t in texts) >= _THREAD_COUNT_BYTES:
        return await anyio.to_thread.run_sync(tokens.count_output, texts, price)
    return tokens.count_output(texts, price)


def _is_cancellation(exc: BaseException) -> bool:
    return isinstance(exc, anyio.get_cancelled_exc_class()) or type(exc).__name__ in (
        "ClientDisconnect",
        "ClientDisconnected",
    )


def _parse_json(data: bytes) -> Any:
    if not data:
        raise InvalidRequest("The request body is empty; a JSON object is required.", param="body")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}", param="body") from None


def _first(headers: Any, name: bytes) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value  # type: ignore[no-any-return]
    return None


def _with_body_headers(scope: Scope, raw: bytes, *, decoded: bool) -> Scope:
    """A copy of ``scope`` whose headers describe ``raw`` (a body the guard
    rewrote): its length, and no content encoding."""
    drop = {b"content-length", b"transfer-encoding"}
    if decoded:
        drop.add(b"content-encoding")
    headers = [(k, v) for k, v in scope.get("headers", ()) if k not in drop]
    headers.append((b"content-length", str(len(raw)).encode()))
    new = dict(scope)
    new["headers"] = headers
    return new


def _ask_for_usage(scope: Scope, obj: dict[str, Any], raw: bytes, *, spliceable: bool) -> tuple[bytes, Scope]:
    """The body with ``stream_options.include_usage`` set, and a scope to match."""
    if obj.get("stream_options") is None and spliceable and raw[:1] == b"{":
        # Splice the field in, leaving every byte the client sent as it was.
        sep = b"," if raw[1:].lstrip()[:1] != b"}" else b""
        new = b'{"stream_options":{"include_usage":true}' + sep + raw[1:]
        return new, _with_body_headers(scope, new, decoded=False)
    edited = dict(obj)
    edited["stream_options"] = {**(obj.get("stream_options") or {}), "include_usage": True}
    new = orjson.dumps(edited)
    return new, _with_body_headers(scope, new, decoded=True)
