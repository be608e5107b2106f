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

This module holds the configuration and the routing; ``admission.py`` takes a
request up to its hold, ``settlement.py`` from the app to the end of the hold.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal

import anyio
import anyio.to_thread

from . import tokens
from ._asgi import ASGIApp, Message, Receive, Scope, Send
from .admission import Exchange, SeenBalances
from .errors import (
    CreditGuardError,
    InvalidRequest,
    ModelNotPricedError,
)
from .metrics import Metrics, NullMetrics
from .offload import DEFAULT_OFFLOAD_BYTES, PricingPool
from .prices import ModelNotPriced, ModelPrice, PriceTable
from .quote import (
    Quote,
    Suggestions,
    cheapest_alternative,
    make_quote,
)
from .rejections import RejectionLog
from .routes import DEFAULT_ROUTES, Router
from .settlement import KeepAliveSweeper
from .shapes import Ask
from .stores.base import DEFAULT_HOLD_TTL, CreditStore

__all__ = ["CreditGuard", "DEFAULT_ROUTES", "resolve_price"]

#: API key -> account, or ``(account, key label)`` to name the key in usage records.
AccountLookup = Callable[[str], Awaitable[str | tuple[str, str] | None]]

#: Bodies at least this large are parsed and counted under ``large_bodies_at_once``.
LARGE_BODY_BYTES = 1024 * 1024
# Shapes a model of each table kind can serve.
_SERVES = {
    "chat": {"chat", "responses", "anthropic", "completion"},
    "responses": {"chat", "responses", "anthropic"},
    "completion": {"completion"},
    "embedding": {"embedding"},
}


def account_lookup(store: CreditStore, accounts: Mapping[str, str] | AccountLookup | None) -> AccountLookup:
    """API key -> account (or ``(account, key label)``): ``accounts`` as a
    mapping or an async callable, else the store's own hashed keys.  Raises
    ``ValueError`` for anything else."""
    if accounts is None:
        return store.account_for_key
    if isinstance(accounts, Mapping):
        table = dict(accounts)

        async def lookup(key: str) -> str | None:
            return table.get(key)

        return lookup
    if callable(accounts):
        return accounts
    raise ValueError("accounts must be a mapping, an async callable, or None")


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
    ``deployments``: Azure deployment name -> the model it runs, for the routes
    that name a deployment in the path (``/openai/deployments/{name}/...``);
    those are priced with that model, and an unmapped deployment is refused.
    The legacy ``/engines/{name}/...`` routes are priced with ``name``.  A
    request target that is not a plain path (``#``, ``http://host/...``,
    ``//host/...``, ``*``) is refused (see ``routes.py``).

    How a hold ends (the whole rule: docs/deploying.md, "How a hold ends"):
    usage the response reports is charged; usage it reports but the guard
    cannot trust, or cannot read, costs the hold; a successful response without
    usage is charged for its input and the output the guard counted in it (the
    hold for a reasoning model, whose bill includes what it does not show); a
    client that leaves mid-response is charged for its input and the output it
    was sent (the hold for a reasoning model).  ``on_app_error`` decides when the app raises or
    answers an error status before any output: ``"release"`` (default: charge
    nothing) or ``"charge_input"``.  ``on_abort`` decides when the client leaves
    before any output: ``"charge_input"`` (default: leaving early does not make
    a request free) or ``"release"``.  ``fail_open`` forwards requests unpriced while the
    store is unreachable (default: refuse with 503).  ``auto_fit`` lowers an
    unaffordable output cap to the affordable one instead of answering 402.
    ``inject_usage`` asks a chat stream's upstream for usage when the client did
    not (and hides it from the client).  ``bound_margin``: a body whose byte
    upper bound fits the caller's available balance this many times over is
    held at that bound without being counted (it admits exactly what the count
    would; the charge still comes from the usage, or from the exact count where
    the response reports none); 1 holds the bound whenever it fits.  The
    balance is the one the account's previous hold left (a body of 8 KiB or
    more reads it from the store where there is none).  A bound hold is larger
    than the count's, so near the end of a balance, while such holds are in
    flight, a request the count would admit can be refused (its 402 says
    ``in_flight_holds``, with ``Retry-After``); ``None`` counts every request,
    for admission exact to the unit under any concurrency.
    ``large_bodies_at_once``: how many bodies of a mebibyte or more are parsed
    and counted at the same time (each costs memory in proportion to its
    size); the others wait for a turn.  ``offload_bytes``: bodies at least
    this large (default 4 MiB) are parsed, shaped and counted in worker
    processes (``offload.py``, one per ``large_bodies_at_once`` up to two,
    started on the first such body), so that the GIL stays with the event
    loop; None keeps them in a worker thread of this process.  The workers
    stop with the app's lifespan shutdown, ``aclose()``, or at exit.
    ``rejections``: a ``RejectionLog`` that keeps the 402s (for the admin API).

    Requests to routes that are not priced: ``unpriced="pass"`` (default) hands
    them to the app untouched, as a library wrapping an app wants (health
    checks, pages); ``"authenticate"`` requires a valid key for them too;
    ``"refuse"`` also refuses every one that is not a bodiless read (``GET``,
    ``HEAD``, ``OPTIONS``) of a path matching ``open_reads`` (glob patterns,
    ``*`` within a segment, ``**`` across; default: every path), as a gateway
    in front of a paid upstream wants: an unpriced ``POST
    /v1/images/generations`` would otherwise be paid by the gateway, and a
    ``GET /v1/files`` would show what other callers stored under its key.
    The policy holds for WebSocket connections too: under ``"authenticate"``
    one without a valid key is closed before the app sees it; under
    ``"refuse"`` every one is, unless its path matches ``open_paths``.
    Lifespan passes through.

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
        bound_margin: int | None = 10,
        large_bodies_at_once: int = 2,
        open_reads: tuple[str, ...] = ("/**",),
        deployments: Mapping[str, str] | None = None,
        offload_bytes: int | None = DEFAULT_OFFLOAD_BYTES,
        metrics: Metrics | None = None,
        rejections: RejectionLog | None = None,
    ) -> None:
        from .money import parse_amount

        self.app = app
        self.store = store
        self.prices = prices if prices is not None else PriceTable.default()
        self._lookup: AccountLookup = account_lookup(store, accounts)
        self.routes = dict(DEFAULT_ROUTES if routes is None else routes)
        self.deployments = dict(deployments or {})
        for name, model in self.deployments.items():
            try:
                self.prices.resolve(model)
            except ModelNotPriced as exc:
                raise ValueError(f"deployment {name!r}: {exc}") from None
        self.router = Router(self.routes, open_paths=open_paths, deployments=self.deployments, open_reads=open_reads)
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
        if bound_margin is not None and (
            isinstance(bound_margin, bool) or not isinstance(bound_margin, int) or bound_margin < 1
        ):
            raise ValueError("bound_margin must be a whole number of at least 1, or None")
        self.bound_margin = bound_margin
        # What each account's last hold left available: the bound's margin is
        # checked against it without a store read (see ``Exchange._quote``).
        self.seen_balances = SeenBalances()
        # Extends the holds of requests in flight (settlement.py), made on the
        # first priced request's event loop.
        self._sweeper: KeepAliveSweeper | None = None
        if unpriced not in ("pass", "authenticate", "refuse"):
            raise ValueError("unpriced must be 'pass', 'authenticate' or 'refuse'")
        self.unpriced = unpriced
        self.metrics = metrics or NullMetrics()
        if large_bodies_at_once < 1:
            raise ValueError("large_bodies_at_once must be at least 1")
        # Parsing and counting a large body costs memory in proportion to it:
        # at most this many at once, the rest wait their turn.
        self._large_limiter = anyio.CapacityLimiter(large_bodies_at_once)
        if offload_bytes is not None and (isinstance(offload_bytes, bool) or offload_bytes < 1):
            raise ValueError("offload_bytes must be a positive number of bytes, or None")
        self.offload_bytes = offload_bytes
        #: The worker processes that price bodies of ``offload_bytes`` or more.
        self.pricing = (
            None if offload_bytes is None else PricingPool(self.prices, processes=min(large_bodies_at_once, 2))
        )
        self.rejections = rejections
        self._warmed = False
        self._warming: anyio.Event | None = None  # set when the load in progress ends

    async def warm(self) -> None:
        """Load the tokenizer files now, in a worker thread (otherwise the first
        priced request does it, also off the event loop).  Requests that come
        meanwhile wait for that load: one worker thread, however many came."""
        while not self._warmed:
            warming = self._warming
            if warming is not None:
                await warming.wait()
                continue  # loaded, or the load was cancelled: look again
            warming = self._warming = anyio.Event()
            try:
                await anyio.to_thread.run_sync(tokens.warm)
                self._warmed = True
            finally:
                self._warming = None
                warming.set()

    async def aclose(self) -> None:
        """Stop the worker processes that price large bodies (a later large
        body starts them again)."""
        if self.pricing is not None:
            await self.pricing.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket" and self.unpriced != "pass":
                await Exchange(self, scope, "-").websocket(receive, send)
                return
            if scope["type"] == "lifespan" and self.pricing is not None:
                send = self._closing_on_shutdown(send)
            await self.app(scope, receive, send)
            return
        route = self.router.classify(scope)
        if route.refusal is not None:
            await Exchange(self, scope, "-").refuse(send, route.refusal)
            return
        if route.kind is None:
            if self.unpriced != "pass":
                await Exchange(self, scope, "-").unpriced(receive, send)
                return
            await self.app(scope, receive, send)
            return
        settlement = await Exchange(self, scope, route.kind, model=route.model).admit(receive, send)
        if settlement is not None:
            await settlement.run(receive, send)

    def _closing_on_shutdown(self, send: Send) -> Send:
        async def lifespan_send(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                # The app is done: no request needs the workers any more.
                await self.aclose()
            await send(message)

        return lifespan_send

    def limiter_for(self, size: int) -> anyio.CapacityLimiter | None:
        """The worker-thread limiter for a body of ``size`` bytes: bodies of a
        mebibyte or more share ``large_bodies_at_once`` threads, smaller ones
        anyio's default pool."""
        return self._large_limiter if size >= LARGE_BODY_BYTES else None

    # -- used by Exchange ---------------------------------------------------

    def resolve(self, ask: Ask) -> ModelPrice:
        return resolve_price(self.prices, ask)

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


def resolve_price(prices: PriceTable, ask: Ask) -> ModelPrice:
    """The price of ``ask``'s model.  Raises ``ModelNotPricedError`` for a model
    the table does not price, ``InvalidRequest`` for one of a kind that cannot
    serve the endpoint (an embedding model behind chat)."""
    try:
        price = prices.resolve(ask.model)
    except ModelNotPriced as exc:
        raise ModelNotPricedError(
            f"The model {ask.model!r} is not priced by this gateway ({exc.reason}).",
            param="model",
            alternatives=list(exc.alternatives),
        ) from None
    if ask.kind not in _SERVES.get(price.kind, {price.kind}):
        raise InvalidRequest(
            f"The model {ask.model!r} is a {price.kind} model; it cannot serve this endpoint.",
            param="model",
        )
    return price
