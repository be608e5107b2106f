"""The app, and the end of the hold: ``Settlement`` runs the app with the
request's worst case held, taps its response for usage (``usage.UsageTap``),
keeps the hold alive while the response streams, and ends the hold in
``finally``, shielded from cancellation: settled on the usage the response
reports (or that the guard counted), released when the app failed or the
upstream answered an error.
"""

from __future__ import annotations

import contextlib
import logging
import time
from decimal import Decimal
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from . import tokens
from ._asgi import Message, Receive, Scope, Send
from .errors import PricingUnavailable
from .prices import ModelPrice
from .quote import Quote, actual_cost
from .shapes import Ask
from .stores.base import Hold, StoreUnavailable
from .usage import Usage, UsageTap

if TYPE_CHECKING:
    from .admission import Exchange

__all__ = ["Settlement", "actual_cost"]

logger = logging.getLogger("credit_guard")

# Output text at least this long is counted in a worker thread.
_THREAD_COUNT_BYTES = 32 * 1024
# Pauses between attempts to end a hold while the store fails (None: give up).
_SETTLE_RETRIES: tuple[float | None, ...] = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, None)


class Settlement:
    """The second half of one priced request, from the app's first byte to the
    end of its hold."""

    def __init__(self, exchange: Exchange) -> None:
        self.guard = exchange.guard
        self.request_id = exchange.request_id
        self._strip_usage = exchange.strip_usage
        self._fit_header = exchange.fit_header
        # The quote's input is the byte upper bound, not the exact count.
        self._bounded = exchange.bounded
        self._size = exchange.size
        self._count_input = exchange.count_input

    async def run(self, scope: Scope, receive: Receive, send: Send, hold: Hold, quote: Quote, ask: Ask) -> None:
        """Run the app with the hold open, tap its response, and end the hold."""
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
                # The hold used the byte bound; the charge uses the exact count
                # (where the worker pricing the body fails, the bound stays).
                with contextlib.suppress(PricingUnavailable):
                    input_tokens = (await self._count_input(ask, price)).tokens
            usage = Usage(input_tokens=input_tokens, output_tokens=output)
        policy = guard.on_abort if aborted else guard.on_app_error
        charge: Decimal | None = None
        if usage is not None:
            charge = actual_cost(quote, usage)
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
