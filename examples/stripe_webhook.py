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

    STRIPE_WEBHOOK_SECRET=whsec_... python examples/stripe_webhook.py   # :8005/webhooks/stripe (--port or PORT)

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


def sample_event(account: str, cents: int, secret: str, *, at: int | None = None) -> tuple[bytes, str]:
    """A paid checkout event for ``account`` and its ``Stripe-Signature``
    header, as the provider would send them (for trying the endpoint)."""
    at = int(time.time()) if at is None else at
    body = json.dumps(
        {
            "id": f"evt_example_{at}",
            "type": "checkout.session.completed",
            "data": {"object": {"client_reference_id": account, "amount_total": cents, "currency": "usd"}},
        }
    ).encode()
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return body, f"t={at},v1={digest}"


def banner(port: int, secret_source: str, body: bytes, signature: str) -> str:
    base = f"http://127.0.0.1:{port}"
    return f"""credit_guard: payments become credits at {base}/webhooks/stripe
  signing secret: {secret_source}; credits go to the store credit_guard.db (the demo's)

A signed event crediting acct_demo with $5.00 (valid for five minutes; sent twice, it grants once):
  curl -s {base}/webhooks/stripe -H 'Stripe-Signature: {signature}' \\
    -H 'Content-Type: application/json' -d '{body.decode()}'

Then: credit-guard credits balance acct_demo
Stop with Ctrl-C.
"""


def main(argv: list[str] | None = None) -> None:
    import argparse
    import secrets

    import uvicorn

    parser = argparse.ArgumentParser(description="a signed payment webhook that grants credits")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8005")))
    args = parser.parse_args(argv)
    secret = os.environ.get("STRIPE_WEBHOOK_SECRET")
    source = "$STRIPE_WEBHOOK_SECRET"
    if not secret:
        # No provider configured: a secret of this run's own, for trying it out.
        secret = "whsec_example_" + secrets.token_hex(16)
        source = f"{secret} (set STRIPE_WEBHOOK_SECRET for your provider's)"
    body, signature = sample_event("acct_demo", 500, secret)
    print(banner(args.port, source, body, signature), flush=True)
    uvicorn.run(create_webhook_app(SQLiteStore("credit_guard.db"), secret), host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
