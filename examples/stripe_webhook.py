"""Credits from payments: a payment provider's signed webhook becomes a grant.

The provider (here Stripe's format; no Stripe package needed) POSTs an event
when a checkout is paid, signed with a secret both sides know:

    Stripe-Signature: t=1732590000,v1=<hex HMAC-SHA256(secret, f"{t}.{raw body}")>

The handler checks the signature over the raw bytes (``hmac.compare_digest``,
any of the ``v1`` entries), refuses a timestamp more than five minutes away (a
replayed old delivery), and grants the amount paid with the event id as the
idempotency key: the provider retries a delivery until it gets a 2xx, and a
retry, or the same event delivered twice, grants once (``grant_once`` records the
key in the grant's own transaction).

    STRIPE_WEBHOOK_SECRET=whsec_... python examples/stripe_webhook.py   # http://127.0.0.1:8000/webhooks/stripe

Events used: ``checkout.session.completed`` with ``client_reference_id`` (the
account) and ``amount_total`` in cents of ``currency`` "usd".  Other events are
acknowledged and ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from credit_guard.stores import SQLiteStore

#: Seconds a delivery's timestamp may be away from now.
TOLERANCE = 300


class BadSignature(Exception):
    pass


def verify(payload: bytes, header: str | None, secret: str, *, now: float | None = None) -> None:
    """Raise ``BadSignature`` unless ``header`` signs ``payload`` with
    ``secret`` within ``TOLERANCE`` seconds of ``now``."""
    if not header:
        raise BadSignature("no Stripe-Signature header")
    timestamp = None
    signatures = []
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            timestamp = value
        elif name == "v1":
            signatures.append(value)
    if timestamp is None or not timestamp.isdigit() or not signatures:
        raise BadSignature("malformed Stripe-Signature header")
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + payload, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise BadSignature("signature mismatch")
    if abs((time.time() if now is None else now) - int(timestamp)) > TOLERANCE:
        raise BadSignature("timestamp outside the tolerance")


def create_webhook_app(store: Any, secret: str) -> Starlette:
    """The webhook endpoint, granting on ``store`` (any store with ``grant_once``)."""

    async def webhook(request: Request) -> JSONResponse:
        payload = await request.body()
        try:
            verify(payload, request.headers.get("stripe-signature"), secret)
        except BadSignature as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        # Numbers parsed as Decimal: an amount never passes through a float.
        event = json.loads(payload, parse_float=Decimal)
        if event.get("type") != "checkout.session.completed":
            return JSONResponse({"received": True, "ignored": event.get("type")})
        session = event["data"]["object"]
        account = session.get("client_reference_id")
        cents = session.get("amount_total")
        if not account or not isinstance(cents, int) or cents <= 0 or session.get("currency") != "usd":
            return JSONResponse({"error": "not a payment this endpoint can credit"}, status_code=400)
        amount = Decimal(cents) / 100
        result = await store.grant_once(account, amount, event["id"], note=f"payment {event['id']}")
        return JSONResponse(
            {"received": True, "account": account, "granted": str(amount), "repeat": result.repeat},
        )

    return Starlette(routes=[Route("/webhooks/stripe", webhook, methods=["POST"])])


if __name__ == "__main__":  # pragma: no cover - a manual run
    import uvicorn

    app = create_webhook_app(SQLiteStore("credit_guard.db"), os.environ["STRIPE_WEBHOOK_SECRET"])
    uvicorn.run(app, host="127.0.0.1", port=8000)
