"""examples/stripe_webhook.py: a signed payment event grants once, however
often it is delivered; a bad signature or an old timestamp grants nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from credit_guard.stores import SQLiteStore

from .servers import serve
from .test_examples import load

pytestmark = pytest.mark.anyio

SECRET = "whsec_" + uuid.uuid4().hex
HOOK = "/webhooks/stripe"


def event(account: str, cents: int, event_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": event_id or "evt_" + uuid.uuid4().hex,
            "object": "event",
            "type": "checkout.session.completed",
            "data": {"object": {"client_reference_id": account, "amount_total": cents, "currency": "usd"}},
        }
    ).encode()


def signed(payload: bytes, *, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    t = str(int(time.time()) if at is None else at)
    v1 = hmac.new(secret.encode(), t.encode() + b"." + payload, hashlib.sha256).hexdigest()
    # Stripe lists one signature per active secret; a rolled secret adds another.
    return {"Stripe-Signature": f"t={t},v1={'0' * 64},v1={v1}", "Content-Type": "application/json"}


@pytest.fixture
async def webhook(tmp_path: Path) -> Any:
    store = SQLiteStore(tmp_path / "credits.db")
    # The server's store lives on the server's event loop; the test reads the
    # same file through its own.
    reader = SQLiteStore(tmp_path / "credits.db")
    app = load("stripe_webhook").create_webhook_app(store, SECRET)
    with serve(app) as base:
        async with httpx.AsyncClient(base_url=base) as http:
            yield http, reader
    await reader.aclose()
    await store.aclose()


async def test_a_valid_event_grants_once_even_when_delivered_twice(webhook: Any) -> None:
    http, store = webhook
    payload = event("acct_pay", 1999)
    first = await http.post(HOOK, content=payload, headers=signed(payload))
    # A retry is signed again, with a newer timestamp, over the same body.
    second = await http.post(HOOK, content=payload, headers=signed(payload, at=int(time.time()) + 1))
    assert (first.status_code, second.status_code) == (200, 200)
    assert (first.json()["repeat"], second.json()["repeat"]) == (False, True)
    balance = await store.balance("acct_pay")
    assert balance.granted == Decimal("19.99")
    other = event("acct_pay", 1)
    assert (await http.post(HOOK, content=other, headers=signed(other))).json()["repeat"] is False
    assert (await store.balance("acct_pay")).granted == Decimal("20.00")
    history = await store.history("acct_pay")
    assert [line["kind"] for line in history] == ["grant", "grant"]


async def test_a_bad_signature_or_an_old_timestamp_grants_nothing(webhook: Any) -> None:
    http, store = webhook
    payload = event("acct_x", 5000)
    tampered = payload.replace(b"5000", b"9000")
    answers = [
        await http.post(HOOK, content=tampered, headers=signed(payload)),  # the body changed after signing
        await http.post(HOOK, content=payload, headers=signed(payload, secret="whsec_other")),
        await http.post(HOOK, content=payload, headers=signed(payload, at=int(time.time()) - 301)),
        await http.post(HOOK, content=payload, headers=signed(payload, at=int(time.time()) + 301)),
        await http.post(HOOK, content=payload, headers={"Stripe-Signature": "t=abc,v1=def"}),
        await http.post(HOOK, content=payload),
    ]
    assert [r.status_code for r in answers] == [400] * 6
    assert (await store.balance("acct_x")).granted == 0
    ok = await http.post(HOOK, content=payload, headers=signed(payload, at=int(time.time()) - 200))
    assert ok.status_code == 200 and (await store.balance("acct_x")).granted == Decimal("50")
