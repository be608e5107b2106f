"""Wrapping an existing FastAPI app with credit_guard.

The guard prices the chat endpoint per token before the handler runs.  The
report endpoint is flat-priced by the app itself: its handler holds the price
on the caller's balance and raises ``InsufficientCredits`` when it cannot,
which ``credit_error_handler`` answers as the same 402 envelope the guard
writes.  Both need the caller's key; ``/health`` needs none.

    python examples/fastapi_app.py               # http://127.0.0.1:8002 (--port or PORT to change)

It sets itself up on every start, idempotently: the account gets $0.05 when it
is new (never again: a restart does not refill it) and its key, in
``fastapi_example_credits.db`` in the current directory.  It prints the key to use and the requests to try.
"""

from __future__ import annotations

import argparse
import os
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from fastapi import Depends, FastAPI, Request

from credit_guard import (
    AuthenticationFailed,
    CreditGuard,
    CreditGuardError,
    Insufficient,
    InsufficientCredits,
    PriceTable,
    SQLiteStore,
    credit_error_handler,
)

ACCOUNT, KEY, BALANCE = "acct_1", "sk-example-fastapi-1", Decimal("0.05")
REPORT_PRICE = Decimal("0.10")
CENT = Decimal("0.0001")  # a balance shown to four places, rounded down: never more than there is
STORE_FILE = "fastapi_example_credits.db"

store = SQLiteStore(STORE_FILE)
api = FastAPI(title="An LLM service")
api.add_exception_handler(CreditGuardError, credit_error_handler)


async def caller(request: Request) -> str:
    """The caller's account, from the key the guard also reads (the guard
    passes unpriced routes through, so the handler checks the key itself)."""
    auth = request.headers.get("authorization", "")
    key = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
    account = await store.account_for_key(key) if key else None
    if account is None:
        raise AuthenticationFailed("A valid API key is required: 'Authorization: Bearer <key>'.")
    return account


@api.post("/v1/chat/completions")
async def chat(request: Request) -> dict[str, Any]:
    body = await request.json()
    # The guard has already held this request's worst case; the request id it
    # gave the request is there for logs.
    request_id = request.scope["state"]["credit_guard_request_id"]
    return {
        "id": request_id,
        "object": "chat.completion",
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 2},
    }


@api.post("/v1/report")
async def report(account: str = Depends(caller)) -> dict[str, str]:
    """A flat-priced endpoint: holds its price, makes the report, charges it."""
    hold = await store.reserve(account, REPORT_PRICE)
    if isinstance(hold, Insufficient):
        raise InsufficientCredits(
            f"A report costs ${REPORT_PRICE}; your available balance is ${hold.available.quantize(CENT, ROUND_FLOOR)}.",
            context={
                "current_credits": hold.available,
                "required_credits": REPORT_PRICE,
                "credit_deficit": REPORT_PRICE - hold.available,
            },
        )
    result = {"report": "All systems nominal.", "charged": str(REPORT_PRICE)}
    await store.settle(hold, REPORT_PRICE)
    return result


@api.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}  # not a priced route: the guard lets it through untouched


app = CreditGuard(api, prices=PriceTable.default(), store=store)


async def setup() -> None:
    """Give the example account its first credits and its key; running it
    again changes nothing."""
    if not await store.account_exists(ACCOUNT):
        await store.grant(ACCOUNT, BALANCE)
    if await store.account_for_key(KEY) != ACCOUNT:
        await store.add_key(KEY, ACCOUNT)


def banner(port: int) -> str:
    base = f"http://127.0.0.1:{port}"
    auth = f"-H 'Authorization: Bearer {KEY}'"
    return f"""
credit_guard FastAPI example on {base}

  API key   {KEY}   (account {ACCOUNT}, ${BALANCE} granted when new)
  store     {STORE_FILE}

A chat completion, priced per token by the guard:
  curl -s {base}/v1/chat/completions {auth} -H 'Content-Type: application/json' \\
    -d '{{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": "Hi"}}], "max_tokens": 20}}'

A report at ${REPORT_PRICE} flat: the app's own handler answers the 402:
  curl -s -X POST {base}/v1/report {auth}

More credits, then the report passes:
  credit-guard credits grant {ACCOUNT} 1.00 --store sqlite:///{STORE_FILE}

Stop with Ctrl-C.
"""


def main(argv: list[str] | None = None) -> None:
    import anyio
    import uvicorn

    parser = argparse.ArgumentParser(description="credit_guard in front of a FastAPI app")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8002")))
    args = parser.parse_args(argv)
    anyio.run(setup)
    print(banner(args.port), flush=True)
    uvicorn.run(app, host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
