"""The app, and the end of the hold: ``Settlement`` runs the app with the
request's worst case held, extends the hold on a timer for as long as the app
works (silent or not), taps its response for usage (``usage.UsageTap``), and
ends the hold in ``finally``, whatever cancels the request: settled on the
usage the response reports (or that the guard counted), on the worst case
where the usage cannot be read, released when the app failed or the upstream
answered an error.  Ending a hold never raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from . import tokens
from ._asgi import Message, Receive, Scope, Send
from ._headers import last_value, lowered_names, needle
from .errors import PricingUnavailable
from .money import json_text
from .prices import ModelPrice
from .quote import Quote, actual_cost
from .records import TEXT_MAX, UsageRecord
from .shapes import Ask
from .stores.base import CreditStore, Hold, StoreUnavailable
from .stores.base import Settlement as StoreSettlement
from .usage import Usage, UsageTap

if TYPE_CHECKING:
    from .admission import Exchange

__all__ = ["Settlement", "actual_cost"]

logger = logging.getLogger("credit_guard")

# Pauses between attempts to end a hold while the store fails (None: give up).
_SETTLE_RETRIES: tuple[float | None, ...] = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, None)
_REQUEST_ID = needle(b"x-request-id")


class Settlement:
    """The second half of one priced request, from the app's first byte to the
    end of its hold.  It is also the app's ``receive`` (``__call__``)."""

    __slots__ = (
        "guard",
        "request_id",
        "_kind",
        "_size",
        "_offloaded",
        "_bounded",
        "_strip_usage",
        "_fit_header",
        "_key_label",
        "_started_at",
        "_scope",
        "_pieces",
        "_next",
        "_hold",
        "_quote",
        "_ask",
        "_client_left",
        "_usage",
        "_exact",
        "_charged",
        "_tap",
        "_send",
        "_receive",
        "_since",
        "_extending",
    )

    def __init__(
        self, exchange: Exchange, scope: Scope, raw: tuple[bytes, ...], hold: Hold, quote: Quote, ask: Ask
    ) -> None:
        self.guard = exchange.guard
        self.request_id = exchange.request_id
        # What the way to the app decided and settling reads, taken from the
        # exchange rather than the exchange itself: it ends before the app
        # starts, with all it refers to (every object alive across the app's
        # run is one more for the host's garbage collector to carry).
        self._kind = exchange.kind
        self._size = exchange.size
        self._offloaded = exchange.offloaded  # a body priced in a worker process, for a later count there
        self._bounded = exchange.bounded
        self._strip_usage = exchange.strip_usage
        self._fit_header = exchange.fit_header
        self._key_label = exchange.key_label
        self._started_at = exchange.started_at
        self._scope = scope
        # The body the app reads first, piece by piece (``__call__``).
        self._pieces: tuple[bytes, ...] | None = raw or (b"",)
        self._next = 0
        self._hold = hold
        self._quote = quote
        self._ask = ask
        self._client_left = False
        # The response's tap, made at its first message (``_tapped_send``).
        self._tap: UsageTap | None = None
        # The usage charged (reported, or counted by the guard), for the record.
        self._usage: Usage | None = None
        # The quote on the exact count, where the hold used the byte bound and
        # the charge needed the count.
        self._exact: Quote | None = None
        # The charge, once computed (``_end`` may run ``_finish`` twice).
        self._charged: tuple[Decimal | None] | None = None
        # On a ``KeepAliveSweeper``: since when, and the task extending the hold.
        self._since = 0.0
        self._extending: asyncio.Task[None] | None = None

    async def run(self, receive: Receive, send: Send) -> None:
        """Run the app with the hold open, tap its response, and end the hold."""
        guard = self.guard
        hold, quote, ask, scope = self._hold, self._quote, self._ask, self._scope
        self._send = send
        self._receive = receive
        # The settlement itself is the app's receive (``__call__``): one bound
        # method made per request, not two.
        tapped_send = self._tapped_send

        failed: BaseException | None = None
        try:
            # The hold lives as long as the request: extended on a timer while
            # the app (or its upstream) works, silent or not.
            loop = _asyncio_loop()
            if loop is not None:
                # One loop timer for all the guard's requests costs far less
                # than a task (or a timer) per request; the extending task
                # exists only once the request outlives a third of the TTL.
                sweeper = guard._sweeper
                if sweeper is None or sweeper.loop is not loop:
                    sweeper = guard._sweeper = KeepAliveSweeper(guard.hold_ttl, loop)
                sweeper.add(self)
                try:
                    await guard.app(scope, self, tapped_send)
                finally:
                    extending = sweeper.stop(self)
                    if extending is not None:
                        await _ended(extending)
            else:
                async with anyio.create_task_group() as keep_alive:
                    keep_alive.start_soon(self._keep_alive, hold)
                    try:
                        await guard.app(scope, self, tapped_send)
                    except BaseException as exc:
                        # Raised below, outside the task group, as it came.
                        failed = exc
                    finally:
                        keep_alive.cancel_scope.cancel()
                if failed is not None:
                    raise failed
        except BaseException as exc:
            failed = failed or exc
            raise
        finally:
            # A tap that saw nothing where the app sent nothing.
            tap = self._tap or UsageTap(ask.kind)
            await self._end(hold, quote, ask, tap, failed)

    async def _tapped_send(self, message: Message) -> None:
        """The app's ``send``: the response tapped for usage, its headers added."""
        tap = self._tap
        if tap is None:
            # Made at the response's first message rather than before the
            # app: not alive while the app works towards it.
            tap = self._tap = UsageTap(self._ask.kind, strip_usage=self._strip_usage)
        if message["type"] == "http.response.start":
            start = dict(message)
            # A list of its own, read by the tap and then added to: ASGI allows
            # any iterable, which a generator would be only once.
            headers = start["headers"] = list(start.get("headers", ()))
            names = lowered_names(headers)
            message = tap.start(start, names)
            message["headers"] = self._response_headers(message["headers"], names, self._hold)
        elif message["type"] == "http.response.body":
            body, more = message.get("body", b""), message.get("more_body", False)
            if tap.costly(len(body), more):
                chunk = await anyio.to_thread.run_sync(tap.body, body, more)
            else:
                chunk = tap.body(body, more)
            if chunk is not body:
                message = dict(message)
                message["body"] = chunk
        await self._send(message)

    async def __call__(self) -> Message:
        """The app's ``receive``: the body first, in the pieces it came in (the
        last with ``more_body`` false), then the client's own messages, noting
        a client that left before the end of the response."""
        pieces = self._pieces
        if pieces is not None:
            index = self._next = self._next + 1
            more = index < len(pieces)
            if not more:
                self._pieces = None  # all handed over: dropped
            return {"type": "http.request", "body": pieces[index - 1], "more_body": more}
        message = await self._receive()
        if message["type"] == "http.disconnect" and (self._tap is None or not self._tap.finished):
            # An app may end quietly when its client leaves (Starlette's
            # StreamingResponse does): the usage record says so.
            self._client_left = True
        return message

    async def _end(self, hold: Hold, quote: Quote, ask: Ask, tap: UsageTap, failed: BaseException | None) -> None:
        """``_finish``, whatever cancels the request meanwhile.  It runs first
        without a shield (a cancel scope costs more than a memory store's whole
        settle), since an end that does not wait cannot be cancelled; where a
        cancellation does reach a wait, it runs again, shielded: its steps are
        idempotent (the charge is kept once computed; settle and release by
        hold id answer a repeat with the first result)."""
        try:
            await self._finish(hold, quote, ask, tap, failed)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await self._finish(hold, quote, ask, tap, failed)
            raise

    async def _keep_alive(self, hold: Hold, *, wait_first: bool = True) -> None:
        """Extend the hold every third of its TTL until cancelled: two extends
        in a row can fail before the hold lapses."""
        guard = self.guard
        while True:
            if wait_first:
                await anyio.sleep(guard.hold_ttl / 3)
            wait_first = True
            try:
                await guard.store.extend(hold, guard.hold_ttl)
            except StoreUnavailable:
                guard.metrics.store_error("extend")
            except Exception:
                # A store bug must not end the request; the hold's TTL bounds it.
                logger.exception("credit_guard.extend_failed request_id=%s hold=%s", self.request_id, hold.id)

    def _response_headers(
        self, headers: list[tuple[bytes, bytes]], names: bytes | None, hold: Hold
    ) -> list[tuple[bytes, bytes]]:
        """``headers`` with the guard's added; ``names`` is the app's headers'
        ``lowered_names`` (the tap may have dropped some since, never this one)."""
        guard = self.guard
        if last_value(headers, names, _REQUEST_ID) is None:
            headers.append((b"x-request-id", self.request_id.encode("latin-1")))
        if hold.available is not None:
            headers.append((b"x-credits-remaining", json_text(hold.available).encode()))
            if guard.low_balance_threshold is not None and hold.available < guard.low_balance_threshold:
                headers.append((b"x-credits-low", b"true"))
        fit_header = self._fit_header
        if fit_header is not None:
            headers.append((b"x-credit-guard-adjusted", fit_header))
        return headers

    async def _finish(self, hold: Hold, quote: Quote, ask: Ask, tap: UsageTap, failed: BaseException | None) -> None:
        """End the hold (the rule: docs/deploying.md, "How a hold ends").  Never raises."""
        guard = self.guard
        if self._charged is None:
            try:
                cost = await self._cost(hold, quote, ask, tap, failed)
            except Exception:
                # What cannot be priced costs the hold.
                logger.exception("credit_guard.pricing_error request_id=%s hold=%s", self.request_id, hold.id)
                self._unreadable(quote, "pricing_error")
                cost = hold.amount
            self._charged = (cost,)
        charge = self._charged[0]
        aborted = failed is not None and _is_cancellation(failed)
        record = self._usage_record(hold, self._exact or quote, self._usage or tap.usage, charge, aborted)
        settlement = None
        # Settle and release are idempotent, so a store that failed for a moment
        # (a Redis restart, a locked SQLite file) is simply asked again.
        for delay in _SETTLE_RETRIES:
            try:
                settlement = await end_hold(guard.store, hold, charge, record)
                break
            except StoreUnavailable:
                guard.metrics.store_error("settle")
                if delay is None:
                    break
                await anyio.sleep(delay)
            except Exception:
                # Not the store's availability: a charge it refuses.  The hold
                # is charged instead, once; the request never ends in a raise.
                logger.exception("credit_guard.settle_error request_id=%s hold=%s", self.request_id, hold.id)
                if charge == hold.amount:
                    break
                charge = hold.amount
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

    async def _cost(
        self, hold: Hold, quote: Quote, ask: Ask, tap: UsageTap, failed: BaseException | None
    ) -> Decimal | None:
        """What the request costs (None: release the hold)."""
        guard = self.guard
        price = quote.price
        aborted = failed is not None and _is_cancellation(failed)
        answered = 0 < tap.status < 400
        usage = tap.usage
        if answered and tap.unreadable is not None:
            # Usage the guard cannot read is never free (nor below usage it did read).
            self._unreadable(quote, tap.unreadable)
            worst = await self._worst(hold, quote, ask)
            return worst if usage is None else max(worst, actual_cost(quote, usage))
        cut_short = aborted or (answered and not tap.finished)
        if usage is None and cut_short and price.reasoning and tap.status < 400:
            # The provider bills reasoning the client never saw, up to the
            # moment it learnt the client had gone.
            self._unreadable(quote, "hidden_reasoning")
            return await self._worst(hold, quote, ask)
        if usage is None and answered and price.reasoning:
            # A reasoning model bills reasoning it does not show: the visible
            # text is not what it billed, and no usage says what it did.
            self._unreadable(quote, "hidden_reasoning")
            return await self._worst(hold, quote, ask)
        produced = bool(tap.texts)
        if usage is None and answered and (failed is None or produced):
            # No usage reported: the input as counted, and the output as seen.
            output = await _count_output(tap.texts, price)
            usage = Usage(input_tokens=(await self._counted(quote, ask)).input_tokens, output_tokens=output)
        if usage is not None:
            self._usage = usage
            return actual_cost(quote, usage)
        policy = guard.on_abort if aborted else guard.on_app_error
        if (failed is not None or tap.status >= 400) and policy == "charge_input":
            return (await self._counted(quote, ask)).input_cost
        return None

    async def _counted(self, quote: Quote, ask: Ask) -> Quote:
        """``quote`` on the exact count of the input: where the hold used the
        byte bound, the input is counted now (the bound stays where the worker
        pricing the body fails)."""
        if not self._bounded:
            return quote
        if self._exact is None:
            from .admission import exact_quote  # admission.py imports this module

            with contextlib.suppress(PricingUnavailable):
                self._exact = await exact_quote(self.guard, self._kind, ask, quote.price, self._size, self._offloaded)
        return self._exact or quote

    async def _worst(self, hold: Hold, quote: Quote, ask: Ask) -> Decimal:
        """What a request whose usage cannot be known costs: its hold, or where
        the hold is the byte bound's, the worst case on the exact count (what
        the hold would have been, had the input been counted)."""
        if not self._bounded:
            return hold.amount
        return min(hold.amount, (await self._counted(quote, ask)).max_cost)

    def _unreadable(self, quote: Quote, reason: str) -> None:
        logger.warning(
            "credit_guard.usage_unreadable request_id=%s model=%s reason=%s: the hold is charged",
            self.request_id,
            quote.model,
            reason,
        )
        self.guard.metrics.usage_unreadable(quote.model, reason)

    def _usage_record(
        self, hold: Hold, quote: Quote, usage: Usage | None, charge: Decimal | None, aborted: bool
    ) -> UsageRecord:
        """What the store keeps about this request (it adds the amounts)."""
        if aborted or self._client_left:
            outcome = "client_left"
        elif charge is None:
            outcome = "released"
        elif charge > hold.amount:
            outcome = "overrun"
        else:
            outcome = "settled"
        if usage is None:
            # Charged for its input by policy, released, or charged the hold
            # for usage it could not read: no usage was reported.
            usage = Usage(input_tokens=quote.input_tokens if charge is not None else 0, output_tokens=0)
        path = self._scope.get("path", "-")
        # Positionally (a call with keywords costs twice as much): request_id,
        # key, model, route (text cut to TEXT_MAX characters: a slice of a
        # shorter string is the string), tokens in, out and cached, outcome,
        # started_at.
        return UsageRecord(
            self.request_id,
            self._key_label[:TEXT_MAX],
            quote.model[:TEXT_MAX],
            (path if type(path) is str else str(path))[:TEXT_MAX],
            usage.input_tokens,
            usage.output_tokens,
            usage.cached_tokens,
            outcome,
            self._started_at,
        )


async def end_hold(store: CreditStore, hold: Hold, charge: Decimal | None, record: UsageRecord) -> StoreSettlement:
    """Settle (``charge``) or release (None) a hold, with its usage record where
    the store keeps records (``keeps_usage``); stores of the older contract are
    called without one."""
    if not getattr(store, "keeps_usage", False):
        return await (store.settle(hold, charge) if charge is not None else store.release(hold))
    keeper: Any = store
    if charge is not None:
        return await keeper.settle(hold, charge, record=record)  # type: ignore[no-any-return]
    return await keeper.release(hold, record=record)  # type: ignore[no-any-return]


class KeepAliveSweeper:
    """``Settlement._keep_alive`` for every request in flight on one asyncio
    loop, from one loop timer: it fires every sixth of the TTL while requests
    are in flight, and starts a request's extending task once the request has
    outlived a third of the TTL (so the first extend comes by half the TTL,
    then one every third).  Most requests end first and cost a set insertion.
    ``stop`` ends the request's extending task, if any, before its hold is
    finished, so no extend lands after the settle."""

    def __init__(self, ttl: float, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._due = ttl / 3
        self._period = ttl / 6
        self._alive: set[Settlement] = set()
        self._handle: asyncio.TimerHandle | None = None

    def add(self, settlement: Settlement) -> None:
        settlement._since = self.loop.time()
        self._alive.add(settlement)
        if self._handle is None:
            self._handle = self.loop.call_later(self._period, self._sweep)

    def _sweep(self) -> None:
        self._handle = None
        if not self._alive:
            return
        now = self.loop.time()
        for alive in self._alive:
            if alive._extending is None and now - alive._since >= self._due:
                alive._extending = self.loop.create_task(alive._keep_alive(alive._hold, wait_first=False))
        self._handle = self.loop.call_later(self._period, self._sweep)

    def stop(self, settlement: Settlement) -> asyncio.Task[None] | None:
        """Take ``settlement`` off the sweep; its extending task, cancelled,
        where it has one (the caller awaits its end with ``_ended``)."""
        self._alive.discard(settlement)
        task = settlement._extending
        if task is not None:
            task.cancel()
        return task


async def _ended(task: asyncio.Task[None]) -> None:
    """Wait for a cancelled task's end, whatever cancels the caller meanwhile."""
    with anyio.CancelScope(shield=True):
        await asyncio.wait((task,))


def _asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop; None under another event loop (trio)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _count_output(texts: Sequence[str], price: ModelPrice) -> int:
    """Output tokens in generated text the response did not count for us."""
    if not texts:
        return 0
    if sum(len(t) for t in texts) >= tokens.THREAD_COUNT_BYTES:
        return await anyio.to_thread.run_sync(tokens.count_output, texts, price)
    return tokens.count_output(texts, price)


def _is_cancellation(exc: BaseException) -> bool:
    return isinstance(exc, anyio.get_cancelled_exc_class()) or type(exc).__name__ in (
        "ClientDisconnect",
        "ClientDisconnected",
    )
